"""What a step sees while it runs: config, AWS clients, tags, state and progress."""

from __future__ import annotations

import threading
import uuid

from .aws import Aws
from .config import Config
from .events import Events
from .state import StateStore
from .tags import Tagger


class StepContext:
    def __init__(self, step: str, config: Config, aws: Aws, state: StateStore, events: Events):
        self.step = step
        self.config = config
        self.aws = aws
        self.state = state
        self.events = events
        self.tags = Tagger(config.deployment, step, config["tags"])
        self._cluster = None
        self.cluster_changes = 0
        self.facts: list[str] = []
        self._mutex = threading.Lock()

    def client(self, service: str):
        return self.aws.client(service)

    def name(self, resource: str) -> str:
        return self.tags.name(resource)

    def record(self, key: str, physical_id: str | None) -> None:
        """Persist a physical ID at once, so a crash right after a create loses nothing."""
        before = self.state.step(self.step).get("physical_ids", {}).get(key)
        self.state.record_physical_id(self.step, key, physical_id)
        if physical_id:
            self.aws.remember(physical_id)
        else:
            self.aws.forget(before)
        if physical_id and before != physical_id:
            self.events.emit("resource", self.step, f"{key}: {physical_id}", key=key, id=physical_id)
        if physical_id:
            self._forget_token(key)

    def client_token(self, key: str) -> str:
        """The idempotency token for creating `key`: random, and written to the state before
        the create call is sent. A create re-sent after a crash reuses it (AWS answers with
        what the first call made); once the create is confirmed (its ID recorded) it is
        dropped, so a create after a destroy never gets back the deleted resource (ACM keeps
        a token an hour, EC2 and Route 53 longer)."""
        tokens = self.state.step(self.step).get("client_tokens", {})
        if key not in tokens:
            tokens[key] = uuid.uuid4().hex
            self.state.update_step(self.step, client_tokens=tokens)
        return tokens[key]

    def _forget_token(self, key: str) -> None:
        tokens = self.state.step(self.step).get("client_tokens", {})
        if tokens.pop(key, None) is not None:
            self.state.update_step(self.step, client_tokens=tokens)

    def forget_all(self) -> None:
        """After a destroy: the step owns nothing any more."""
        for key in list(self.state.step(self.step).get("physical_ids", {})):
            self.record(key, None)
        self.state.update_step(self.step, client_tokens={})

    def ensure(self, key: str, find, create) -> str:
        """Adopt what already exists (found by name or ownership tags), else create it;
        either way the physical ID is in the state before the step goes on."""
        physical_id = find()
        if physical_id is None:
            physical_id = create()
        self.record(key, physical_id)
        return physical_id

    def cluster(self):
        """The Kubernetes API of the deployment's cluster, and helm pointed at the same one."""
        if self._cluster is None:
            from .helm import Helm
            from .kube import Kube, connect
            connection = connect(self.config, self.aws, self.config.cluster_name)
            self._cluster = (Kube(connection.api, self._count_cluster_change),
                             Helm(connection.kubeconfig, connection.context, on_change=self._count_cluster_change))
        return self._cluster

    def _count_cluster_change(self) -> None:
        with self._mutex:
            self.cluster_changes += 1

    def upstream(self, step: str) -> dict:
        """Outputs of a step this one requires (the runner guarantees it finished)."""
        return self.state.outputs(step)

    def fact(self, text: str) -> None:
        """A line of verify's report: something checked live and found as it should be."""
        self.facts.append(text)

    def progress(self, message: str) -> None:
        self.events.emit("progress", self.step, message)

    def secret_value(self, leaf: str) -> str:
        """Read one generated secret from SSM for immediate use; never store or print it."""
        response = self.client("ssm").get_parameter(Name=self.config.ssm_prefix + leaf, WithDecryption=True)
        return response["Parameter"]["Value"]
