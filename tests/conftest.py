"""Shared fixtures: one moto server over real HTTP for the session, reset per test.

The product reaches it only through AWS_ENDPOINT_URL, as it would reach AWS. Every helm
release installs from the real upstream chart in the mirror `<repo>/../shared/charts`
(CI copies shared/ beside the clone), through the real helm, into the fake cluster.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
import requests

os.environ.setdefault("MOTO_ACM_VALIDATION_WAIT", "1")  # moto issues requested certificates after this many seconds
# helm gives up on a hung wait after this long (the product's default is 10 minutes); subprocesses inherit it
os.environ.setdefault("PROVISIONER_HELM_TIMEOUT", "120")
# helm is most of the suite's CPU; without Go's garbage collector an install takes ~17% less
# CPU for ~0.3 GB more memory per short-lived process (measured on cert-manager's install)
os.environ.setdefault("GOGC", "off")
from provisioner.simulation import aws as simulator  # noqa: E402 (moto reads the setting at import)
from provisioner.simulation.helm_download import fetch as fetch_helm
from tests.census import remember_fresh_account
from tests.faults import PRODUCT_CALLER

CHART_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "charts"

# moto's server logs every request through werkzeug; captured per test, that costs ~7% of the suite
logging.getLogger("werkzeug").setLevel(logging.WARNING)

REGION = "us-east-1"
LICENSE = "lic-TEST-0000-very-secret-license"


@pytest.fixture(scope="session")
def moto_server():
    server, url = simulator.start_server()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def kube_server(moto_server):
    """The fake Kubernetes API server (the EKS cluster's stand-in) and a real helm 3 on PATH."""
    os.environ["PATH"] = f"{fetch_helm().parent}{os.pathsep}{os.environ['PATH']}"
    server = simulator.start_cluster(moto_server, REGION)
    yield server
    server.stop()


def fresh_account(moto_server, kube_server, monkeypatch, workdir) -> None:
    """A clean AWS account behind AWS_ENDPOINT_URL, a fresh fake cluster reached through
    ./kubeconfig, and workdir as the working directory."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=30)
    kube_server.reset()
    kube_server.kubeconfig(workdir / "kubeconfig")
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", PRODUCT_CALLER)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("LANGSMITH_LICENSE_KEY", LICENSE)
    monkeypatch.chdir(workdir)
    remember_fresh_account(kube_server.cluster)


@pytest.fixture
def aws(moto_server, kube_server, monkeypatch, tmp_path):
    fresh_account(moto_server, kube_server, monkeypatch, tmp_path)
    return moto_server


@pytest.fixture(scope="module")
def shared_deployment(moto_server, kube_server, tmp_path_factory):
    """One full apply shared by a module's read-only tests (an apply takes seconds). Such
    tests come first in their module: a later test's `aws` fixture resets the account."""
    with pytest.MonkeyPatch.context() as patch:
        workdir = tmp_path_factory.mktemp("shared")
        fresh_account(moto_server, kube_server, patch, workdir)
        config = write_config(workdir / "config.yaml", tags={"team": "platform"})
        result = run_cli("apply", config, "--yes")
        assert result.code == 0, result
        yield config, result


def installed_charts(kubeconfig: str = "kubeconfig") -> dict[str, str]:
    """release -> chart (`<name>-<version>`) as the real helm lists them."""
    import json
    import subprocess
    listed = subprocess.run(["helm", "list", "--all-namespaces", "--output", "json", "--kubeconfig", kubeconfig],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    return {release["name"]: release["chart"] for release in json.loads(listed)}


def mirrored_chart(release: str) -> str:
    """The `<name>-<version>` of the release's pinned chart in the mirror (its file name)."""
    from provisioner.charts import mirrored
    return mirrored(str(CHART_MIRROR), release).name.removesuffix(".tgz")


class Run:
    """The result of one CLI invocation made in-process."""

    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"Run(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


def run_cli(*argv: str, stdin_text: str | None = None) -> Run:
    from provisioner.cli import main
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(stdin_text or "")
    code = main(list(argv), stdin=stdin, stdout=out, stderr=err)
    if code:  # pytest shows a failed test's captured output: the failing lines, whole
        print(f"{' '.join(argv[:1])} exited {code}:", *[line for line in out.getvalue().splitlines()
                                                       if "failed" in line.lower()], err.getvalue(), sep="\n")
    return Run(code, out.getvalue(), err.getvalue())


def write_config(path, **overrides) -> str:
    """A config reaching the fake cluster through ./kubeconfig, installing the real charts
    from the mirror."""
    import yaml
    config = {"name_prefix": "acme", "environment": "test", "region": REGION,
              "kubernetes": {"kubeconfig": "kubeconfig"}, "chart_mirror": str(CHART_MIRROR),
              **overrides}
    path.write_text(yaml.safe_dump(config))
    return str(path)
