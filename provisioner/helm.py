"""Helm releases through the `helm` binary on PATH: install or upgrade only when the
chart version or values differ, recover releases stuck in a pending state first, and
uninstall with a bounded wait.

Values go to helm in a private temporary file; they never hold secrets (credentials
reach the charts through Kubernetes secrets), so nothing sensitive touches the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import yaml

from . import waiting
from .charts import ChartSource
from .errors import StepError

PENDING = ("pending-install", "pending-upgrade", "pending-rollback")
# How long helm may wait for a release (--timeout); PROVISIONER_HELM_TIMEOUT shortens it (the tests do).
TIMEOUT_ENVIRONMENT = "PROVISIONER_HELM_TIMEOUT"


# What helm (client-go, Go's net/http) prints when it lost the API server for a moment: an
# EKS endpoint drops connections while its control plane scales or updates, and a busy one
# answers 503 "the server is currently unable to handle the request" (apimachinery
# StatusReasonServiceUnavailable). The operation is run again, from the release's state.
TRANSIENT = ("connection reset by peer", '": EOF', "i/o timeout", "TLS handshake timeout", "unexpected EOF",
             "http2: client connection lost", "the server is currently unable to handle the request",
             "etcdserver: request timed out", "connection refused")
ATTEMPTS, PAUSE_SECONDS = 3, 5.0


class HelmError(StepError):
    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class Helm:
    def __init__(self, kubeconfig: str, context: str | None, timeout_seconds: int | None = None,
                 on_change=lambda: None):
        self.kubeconfig, self.context = kubeconfig, context
        self.timeout = timeout_seconds or int(os.environ.get(TIMEOUT_ENVIRONMENT, "600"))
        self.on_change = on_change

    @staticmethod
    def binary() -> str:
        found = shutil.which("helm")
        if found is None:
            raise HelmError("helm not found on PATH; install helm 3 (https://helm.sh/docs/intro/install/) and apply "
                            "again")
        return found

    def _run(self, *args: str, timeout: int | None = None) -> str:
        command = [self.binary(), *args, "--kubeconfig", self.kubeconfig]
        if self.context:
            command += ["--kube-context", self.context]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=(timeout or self.timeout) + 60)
        except subprocess.TimeoutExpired:
            raise HelmError(f"helm {args[0]} {args[1]} did not finish in time; run apply again to recover the release")
        if done.returncode != 0:
            raise HelmError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()[-800:]}",
                            transient=any(text in done.stderr for text in TRANSIENT))
        return done.stdout

    @staticmethod
    def _again_if_transient(operation, what: str, progress):
        """operation() again (it starts from the release's state) when helm lost the API server."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return operation(attempt)
            except HelmError as error:
                if not error.transient or attempt == ATTEMPTS:
                    raise
                progress(f"{what}: the API server dropped helm's connection; trying again")
                time.sleep(PAUSE_SECONDS * waiting.TIME_SCALE)

    def release(self, name: str, namespace: str) -> dict | None:
        """The release as `helm list` reports it (status, chart, revision), in any state."""
        listed = json.loads(self._run("list", "--namespace", namespace, "--all", "--filter", f"^{name}$",
                                      "--output", "json") or "[]")
        return listed[0] if listed else None

    def deployed_values(self, name: str, namespace: str) -> dict:
        return json.loads(self._run("get", "values", name, "--namespace", namespace, "--output", "json")) or {}

    def recover(self, name: str, namespace: str, release: dict | None, progress) -> dict | None:
        """A release left pending by an interrupted helm blocks every later upgrade: a
        pending install is uninstalled, a pending upgrade or rollback rolled back. An install
        that failed before any revision deployed is uninstalled too (helm cannot upgrade it)."""
        if release is None:
            return None
        status = release["status"]
        if status == "pending-install" or (status == "failed" and str(release["revision"]) == "1"):
            progress(f"release {name} is {status}: uninstalling it before installing again")
            self.uninstall(name, namespace)
            return None
        if status in PENDING:
            progress(f"release {name} is {status}: rolling back to the last good revision")
            self._run("rollback", name, "--namespace", namespace, "--wait", "--timeout", f"{self.timeout}s")
            self.on_change()
            return self.release(name, namespace)
        return release

    def ensure(self, name: str, source: ChartSource, values: dict, progress, listed: dict | None = None,
               previous: dict | None = None) -> dict:
        """Install or upgrade when needed. Returns the release's revision and values digest,
        to pass back as `previous` next time: when helm still reports that revision, deployed
        at the wanted chart, and the values have the same digest, nothing is run at all.
        `listed` is the output of all_releases(), to save one helm call per release."""
        return self._again_if_transient(
            lambda attempt: self._ensure(name, source, values, progress, listed if attempt == 1 else None, previous),
            f"release {name}", progress)

    def _ensure(self, name: str, source: ChartSource, values: dict, progress, listed: dict | None,
                previous: dict | None) -> dict:
        namespace = source.namespace
        found = listed.get((namespace, name)) if listed is not None else self.release(name, namespace)
        release = self.recover(name, namespace, found, progress)
        wanted_chart = f"{source.chart_name}-{source.pinned_version}"
        digest = values_digest(values)
        if release and release["status"] == "deployed" and release["chart"] == wanted_chart:
            revision = int(release["revision"])
            if previous == {"revision": revision, "values_digest": digest} or \
                    self.deployed_values(name, namespace) == values:
                return {"revision": revision, "values_digest": digest}
        progress(f"helm upgrade --install {name} ({wanted_chart}) in {namespace}")
        workdir = tempfile.mkdtemp(prefix="provisioner-helm-")
        try:
            values_path = os.path.join(workdir, "values.yaml")
            with open(os.open(values_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
                yaml.safe_dump(values, handle)
            done = json.loads(self._run("upgrade", "--install", name, *source.install_args(), "--namespace", namespace,
                                        "--create-namespace", "--values", values_path, "--wait", "--wait-for-jobs",
                                        "--timeout", f"{self.timeout}s", "--output", "json"))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.on_change()
        return {"revision": int(done["version"]), "values_digest": digest}

    def uninstall(self, name: str, namespace: str, progress=lambda message: None) -> bool:
        return self._again_if_transient(lambda attempt: self._uninstall(name, namespace),
                                        f"uninstalling {name}", progress)

    def _uninstall(self, name: str, namespace: str) -> bool:
        if self.release(name, namespace) is None:
            return False
        try:
            self._run("uninstall", name, "--namespace", namespace, "--wait", "--timeout", f"{self.timeout}s")
        except HelmError as error:
            if "not found" not in str(error):
                raise
            return False  # gone between our look and the uninstall (another helm finished it)
        self.on_change()
        return True

    def hooks(self, name: str, namespace: str) -> list[dict]:
        """The release's hook objects as rendered (`helm get hooks`); [] when no such release."""
        try:
            manifest = self._run("get", "hooks", name, "--namespace", namespace)
        except HelmError as error:
            if "not found" in str(error):
                return []
            raise
        return [hook for hook in yaml.safe_load_all(manifest) if hook]

    def releases(self) -> list[dict]:
        return json.loads(self._run("list", "--all-namespaces", "--all", "--output", "json") or "[]")

    def all_releases(self) -> dict[tuple[str, str], dict]:
        """Every release, by (namespace, name), from one helm call."""
        return {(r["namespace"], r["name"]): r for r in self.releases()}


def remembered(outputs: dict, release: str) -> dict | None:
    """What ensure() returned for this release last time, from a step's recorded outputs."""
    entry = (outputs.get("releases") or {}).get(release) or {}
    return {key: entry[key] for key in ("revision", "values_digest") if key in entry} or None


def values_digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
