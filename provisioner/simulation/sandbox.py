"""The sandbox: the whole stack against an embedded AWS simulator and a simulated cluster,
for trying the tool without an AWS account. SIMULATION ONLY.

The simulator (moto in server mode with our doubles, the fake Kubernetes API server,
its toy controllers) runs as a background process tied to the deployment: its pid,
addresses and kubeconfig live in `<state file>.sandbox/` beside the state, so apply,
status, verify, plan, outputs and destroy can run as separate commands against the same
simulated world. It starts on demand, stops when destroy completes or on
`sandbox stop`, and a start that fails or times out kills what it spawned.

The real path never comes here: the CLI enters only for `sandbox: true` or --sandbox,
and then points the unchanged product at the simulator through the standard AWS
environment variables and a kubeconfig.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..charts import DEFAULT_CHARTS, MIRROR_ENVIRONMENT, mirrored
from ..errors import SandboxError
from .fakekube import FakeKubeServer

PREFIX = "[sandbox] "
START_TIMEOUT_SECONDS = 60
NEEDS_SIMULATOR = {"apply", "destroy", "plan", "verify", "preflight"}
INFO_FILE = "sandbox.json"


@dataclass
class Sandbox:
    directory: Path
    pid: int
    aws_endpoint: str
    kube_url: str
    latency: float

    @property
    def kubeconfig(self) -> str:
        return str(self.directory / "kubeconfig")


class Prefixed:
    """A text stream that marks every line it writes as coming from the simulation."""

    def __init__(self, stream):
        self.stream, self.at_line_start = stream, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                self.stream.write(PREFIX)
            self.stream.write(piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def directory_for(state_path: str) -> Path:
    return Path(f"{state_path}.sandbox").resolve()


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited (tests run in-process)
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/sandbox-health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def _is_simulator(pid: int) -> bool:
    """Guard against a recycled pid before signalling it (where /proc tells)."""
    try:
        return b"provisioner.simulation.sandbox" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc").is_dir()


def running(directory: Path) -> Sandbox | None:
    """The deployment's simulator if its process lives and answers; a stale record is removed."""
    try:
        info = json.loads((directory / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    sandbox = Sandbox(directory, info["pid"], info["aws_endpoint"], info["kube_url"], info["latency"])
    if _alive(sandbox.pid) and _answers(sandbox.aws_endpoint):
        return sandbox
    if _alive(sandbox.pid) and _is_simulator(sandbox.pid):
        _kill(sandbox.pid)  # alive but deaf: never leave it behind
    (directory / INFO_FILE).unlink(missing_ok=True)
    return None


def start(directory: Path, region: str, latency: float) -> Sandbox:
    """Spawn the simulator in its own session and wait until it has written its addresses;
    on any failure kill the whole process group, so nothing is left running."""
    if importlib.util.find_spec("moto") is None:
        raise SandboxError("the sandbox needs its simulator: pip install -e '.[sandbox]' and run it again")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / INFO_FILE).unlink(missing_ok=True)
    with open(directory / "sandbox.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "provisioner.simulation.sandbox", str(directory), region, str(latency)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        found = running(directory) if (directory / INFO_FILE).exists() else None
        if found is not None and found.pid == process.pid:
            return found
        if process.poll() is not None:
            raise SandboxError(f"the sandbox simulator exited (code {process.returncode}) before it was ready; "
                               f"see {directory / 'sandbox.log'}")
        time.sleep(0.1)
    _kill(process.pid)
    raise SandboxError(f"the sandbox simulator was not ready within {START_TIMEOUT_SECONDS}s and was stopped; "
                       f"see {directory / 'sandbox.log'}")


def _kill(pid: int) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if not _alive(pid):
            return


def stop(directory: Path) -> bool:
    """Stop the deployment's simulator; True if one was running."""
    found = running(directory)
    if found is not None:
        _kill(found.pid)
    (directory / INFO_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (directory / "kubeconfig").unlink()
    return found is not None


@contextlib.contextmanager
def pointed_at(sandbox: Sandbox, region: str):
    """The standard AWS environment aimed at the simulator (dummy credentials), helm on
    PATH, waits shrunk to the simulated durations; put back afterwards."""
    from .. import waiting
    from .helm_download import fetch
    saved, scale = dict(os.environ), waiting.TIME_SCALE
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(AWS_ENDPOINT_URL=sandbox.aws_endpoint, AWS_ACCESS_KEY_ID="sandbox",
                      AWS_SECRET_ACCESS_KEY="sandbox", AWS_REGION=region,
                      PATH=f"{fetch().parent}{os.pathsep}{os.environ.get('PATH', '')}")
    os.environ.setdefault("LANGSMITH_LICENSE_KEY", "sandbox-license-not-real")
    waiting.set_time_scale(sandbox.latency or 0.05)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        waiting.set_time_scale(scale)


def sandboxed(config, sandbox: Sandbox, say):
    """The config with the cluster reached through the simulator's kubeconfig, and each
    chart from the chart mirror (chart_mirror or PROVISIONER_CHART_MIRROR) when it holds
    it, else from its upstream repository; only a release neither can give falls back to
    the SIMULATION stand-in chart (named as such: standin-0.1.0), and that is said."""
    copy = type(config)(config)
    copy["kubernetes"] = {"kubeconfig": sandbox.kubeconfig}
    copy["charts"] = dict(config["charts"])
    standins = [release for release in DEFAULT_CHARTS if release not in copy["charts"]
                and mirrored(config["chart_mirror"], release) is None and not _reachable(DEFAULT_CHARTS[release])]
    copy["charts"].update(FakeKubeServer.standin_charts(standins))
    if standins:
        mirror = config["chart_mirror"] or f"none given: set chart_mirror or {MIRROR_ENVIRONMENT}"
        say(f"stand-in charts (SIMULATION) for {', '.join(standins)}: not in the chart mirror ({mirror}) and "
            "their upstream repositories cannot be reached\n")
    return copy


@functools.lru_cache(maxsize=None)
def _host_answers(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _reachable(source) -> bool:
    """Whether helm could pull the chart from its upstream repository (its host answers)."""
    url = source.repo or "https://" + source.chart.removeprefix("oci://")
    return _host_answers(urllib.parse.urlparse(url).hostname or "")


def banner(sandbox: Sandbox | None, config_path: str) -> str:
    if sandbox is None:
        return ("SIMULATION: no sandbox simulator is running for this deployment (apply starts one).\n")
    latency = f", latency x{sandbox.latency}" if sandbox.latency else ""
    return (f"SIMULATION: no AWS account is used and nothing costs money.\n"
            f"AWS simulator (moto) at {sandbox.aws_endpoint}, simulated EKS API at {sandbox.kube_url} "
            f"(pid {sandbox.pid}{latency}); real helm.\n"
            f"Stop it with: python -m provisioner sandbox stop {config_path}\n")


def serve(directory: Path, region: str, latency: float) -> None:
    """The background process: simulator up, addresses written, then wait for SIGTERM."""
    import logging
    os.environ.setdefault("MOTO_ACM_VALIDATION_WAIT", str(max(1, round(300 * latency))))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from . import aws as simulator
    if latency:
        simulator.simulate_latency(latency)
    server, endpoint = simulator.start_server()
    cluster = simulator.start_cluster(endpoint, region)
    cluster.kubeconfig(directory / "kubeconfig", context="sandbox")
    info = {"pid": os.getpid(), "aws_endpoint": endpoint, "kube_url": cluster.url, "latency": latency,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    partial = directory / f"{INFO_FILE}.partial"
    partial.write_text(json.dumps(info))
    os.replace(partial, directory / INFO_FILE)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    finally:
        cluster.stop()
        server.stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
