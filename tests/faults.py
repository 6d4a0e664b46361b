"""Fault injection through botocore's event hooks on the product's own session."""

from __future__ import annotations

import threading

import boto3

from provisioner import aws as aws_module


class SimulatedCrash(BaseException):
    """Like SIGKILL: not an Exception, so no product code catches it and nothing is recorded."""


def is_mutating(operation: str) -> bool:
    return aws_module.is_mutating(operation)


class CallRecorder:
    """Counts the calls that reach AWS, per operation, from every session the product makes."""

    def __init__(self):
        self.calls: list[str] = []
        self._mutex = threading.Lock()

    def __call__(self, model, **_):
        with self._mutex:
            self.calls.append(model.name)

    @property
    def mutating(self) -> list[str]:
        return [c for c in self.calls if is_mutating(c)]


class CrashAfter:
    """Let the Nth successful mutating call reach AWS, then 'kill' the process: that call's
    response never reaches the product, and no later call is sent."""

    def __init__(self, n: int):
        self.n = n
        self.seen = 0
        self.crashed = False
        self._mutex = threading.Lock()

    def arm(self, n: int) -> None:
        self.n, self.seen, self.crashed = n, 0, False

    def disarm(self) -> None:
        self.n, self.crashed = 0, False

    def after_call(self, model, http_response, **_):
        with self._mutex:
            if self.crashed:
                raise SimulatedCrash()
            if is_mutating(model.name) and http_response.status_code < 300:
                self.seen += 1
                if self.seen == self.n:
                    self.crashed = True
                    raise SimulatedCrash(f"after mutating call {self.n}: {model.name}")

    def before_call(self, **_):
        if self.crashed:
            raise SimulatedCrash()


class SharedClients:
    """Reuse boto3 clients across in-process runs (creating them costs ~0.2 s each),
    re-pointing the current run's call ledger and the given hooks at them.

    Only the sweeps use this, to stay cheap; every other test lets the product make
    its own clients.
    """

    def __init__(self, monkeypatch, **handlers):
        self.handlers = handlers
        self.cache: dict[str, object] = {}
        self.session = boto3.session.Session()
        monkeypatch.setattr(aws_module.Aws, "client", lambda aws, service: self._client(aws, service))

    def _client(self, aws, service):
        client = self.cache.get(service)
        if client is None:
            client = self.cache[service] = self.session.client(service, region_name=aws.region,
                                                              config=aws_module.RETRY_CONFIG)
        events = client.meta.events
        for event, handler in [("before-call", aws._count), ("needs-retry", aws.not_yet), *self.handlers.items()]:
            key = f"test-{event}-{getattr(handler, '__name__', 'h')}"
            events.unregister(event, unique_id=key)
            events.register(event, handler, unique_id=key)
        return client


def install_session_hooks(monkeypatch, **handlers) -> None:
    """Register handlers (event name -> callable) on every session the product creates."""
    original = aws_module.make_session

    def make_session(region):
        session = original(region)
        for event, handler in handlers.items():
            session.events.register(event, handler)
        return session

    monkeypatch.setattr(aws_module, "make_session", make_session)


def stop_cluster_calls_after(patch, crash: CrashAfter) -> None:
    """A dead process makes no more cluster calls either: after the crash, every Kubernetes
    request or helm run from the crashed run's other threads dies too."""
    from provisioner.helm import Helm
    from provisioner.kube import Kube
    for cls, method in ((Kube, "_request"), (Helm, "_run")):
        original = getattr(cls, method)

        def guarded(self, *args, _original=original, **kwargs):
            crash.before_call()
            return _original(self, *args, **kwargs)
        patch.setattr(cls, method, guarded)


def run_until_crash(monkeypatch, n: int, *argv: str) -> None:
    """Run the CLI in-process and 'kill' it right after its Nth mutating AWS call."""
    import pytest

    from tests.conftest import run_cli
    crash = CrashAfter(n)
    with monkeypatch.context() as patch:
        install_session_hooks(patch, **{"after-call": crash.after_call, "before-call": crash.before_call})
        stop_cluster_calls_after(patch, crash)
        with pytest.raises(SimulatedCrash):
            run_cli(*argv)


class ClusterCrashAfter:
    """Let the Nth change to the cluster (an API write, or a helm upgrade, rollback or
    uninstall) complete, then 'kill' the process: nothing after it runs or is recorded."""

    HELM_CHANGES = ("upgrade", "rollback", "uninstall")

    def __init__(self, monkeypatch):
        from provisioner.helm import Helm
        from provisioner.kube import Kube
        self.n, self.seen, self.crashed, self.changes, self.owners = 0, 0, False, [], []
        self._mutex = threading.Lock()
        original_request, original_run = Kube._request, Helm._run

        def request(kube, method, path, *args, **kwargs):
            self._before()
            result = original_request(kube, method, path, *args, **kwargs)
            if method != "GET":
                self._after(f"{method} {path}")
            return result

        def run(helm, *args, **kwargs):
            self._before()
            out = original_run(helm, *args, **kwargs)
            if args[0] in self.HELM_CHANGES:
                self._after(f"helm {' '.join(args[:3])}")
            return out

        monkeypatch.setattr(Kube, "_request", request)
        monkeypatch.setattr(Helm, "_run", run)

    def arm(self, n: int) -> None:
        self.n, self.seen, self.crashed, self.changes, self.owners = n, 0, False, [], []

    def _before(self) -> None:
        if self.crashed:
            raise SimulatedCrash()

    def _after(self, change: str) -> None:
        with self._mutex:
            self.seen += 1
            self.changes.append(change)
            self.owners.append(getattr(aws_module._current_step, "name", "-"))
            if self.seen == self.n:
                self.crashed = True
                raise SimulatedCrash(f"after cluster change {self.n}: {change}")
