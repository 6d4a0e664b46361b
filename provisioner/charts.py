"""Where each Helm release comes from: the pinned chart versions, a chart mirror, and the
config's overrides.

Versions follow the Terraform reference where it pins one; where it does not (the load
balancer controller, metrics-server) they are the current stable releases. A chart
mirror (config `chart_mirror` or PROVISIONER_CHART_MIRROR) is a directory of
`<chart>-<version>.tgz`, as `helm pull` saves them; a release whose pinned chart is
there installs from it, any other from its upstream repository. A `charts.<release>`
entry in the config wins over both: it replaces repo, chart or version, so a private
repository, an oci:// reference, a local chart directory or a .tgz can stand in.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import yaml

MIRROR_ENVIRONMENT = "PROVISIONER_CHART_MIRROR"


@dataclass(frozen=True)
class ChartSource:
    namespace: str
    repo: str | None
    chart: str
    version: str

    @property
    def is_local(self) -> bool:
        return not self.repo and not self.chart.startswith("oci://")

    @property
    def chart_name(self) -> str:
        """The name helm reports for the chart (the `<name>-<version>` of `helm list`)."""
        if self.is_local:
            return self._local_metadata()["name"]
        return self.chart.rstrip("/").rsplit("/", 1)[-1]

    @property
    def pinned_version(self) -> str:
        if self.is_local and not self.version:
            return str(self._local_metadata()["version"])
        return self.version

    def _local_metadata(self) -> dict:
        return local_chart_metadata(Path(self.chart).expanduser())

    def install_args(self) -> list[str]:
        args = [str(Path(self.chart).expanduser()) if self.is_local else self.chart]
        if self.repo:
            args += ["--repo", self.repo]
        if self.version and not self.is_local:
            args += ["--version", self.version]
        return args


# Istio's three charts move together. 1.23's gateway chart fails its own values schema under helm >= 3.18.5
# ("additional properties 'defaults' not allowed"), even with no values; 1.28.10's renders.
ISTIO_REPO, ISTIO_VERSION = "https://istio-release.storage.googleapis.com/charts", "1.28.10"
DEFAULT_CHARTS: dict[str, ChartSource] = {
    "aws-load-balancer-controller": ChartSource("kube-system", "https://aws.github.io/eks-charts",
                                                "aws-load-balancer-controller", "1.14.0"),
    "cluster-autoscaler": ChartSource("kube-system", "https://kubernetes.github.io/autoscaler", "cluster-autoscaler",
                                      "9.56.0"),
    "metrics-server": ChartSource("kube-system", "https://kubernetes-sigs.github.io/metrics-server/", "metrics-server",
                                  "3.13.0"),
    "keda": ChartSource("keda", "https://kedacore.github.io/charts", "keda", "2.19.0"),
    "external-secrets": ChartSource("external-secrets", "https://charts.external-secrets.io", "external-secrets",
                                    "2.1.0"),
    "cert-manager": ChartSource("cert-manager", "https://charts.jetstack.io", "cert-manager", "v1.20.0"),
    "envoy-gateway": ChartSource("envoy-gateway-system", None, "oci://docker.io/envoyproxy/gateway-helm", "v1.3.0"),
    "istio-base": ChartSource("istio-system", ISTIO_REPO, "base", ISTIO_VERSION),
    "istiod": ChartSource("istio-system", ISTIO_REPO, "istiod", ISTIO_VERSION),
    "istio-ingressgateway": ChartSource("istio-system", ISTIO_REPO, "gateway", ISTIO_VERSION),
    "ingress-nginx": ChartSource("ingress-nginx", "https://kubernetes.github.io/ingress-nginx", "ingress-nginx",
                                 "4.10.1"),
    "langsmith": ChartSource("langsmith", "https://langchain-ai.github.io/helm/", "langsmith", "0.16.0"),
}
HELM_RELEASES = tuple(DEFAULT_CHARTS)


def local_chart_metadata(path: Path) -> dict:
    """Chart.yaml of a chart directory or of a packaged chart (<name>/Chart.yaml inside the .tgz)."""
    if path.is_dir():
        return yaml.safe_load((path / "Chart.yaml").read_text())
    with tarfile.open(path) as packaged:
        member = next(m for m in packaged.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml"))
        return yaml.safe_load(packaged.extractfile(member).read())


def mirrored(mirror: str | None, release: str) -> Path | None:
    """The release's pinned chart in the mirror directory, if it is there."""
    if not mirror:
        return None
    default = DEFAULT_CHARTS[release]
    packaged = Path(mirror).expanduser() / f"{default.chart.rstrip('/').rsplit('/', 1)[-1]}-{default.version}.tgz"
    return packaged if packaged.is_file() else None


def chart_source(config, release: str) -> ChartSource:
    """The default source with the config's override laid over it, or the mirror's copy of
    the pinned chart when there is no override. A local chart or an oci:// reference drops
    the default repo; a local chart without a version uses its own."""
    default, override = DEFAULT_CHARTS[release], config["charts"].get(release, {})
    packaged = None if override else mirrored(config.get("chart_mirror"), release)
    if packaged is not None:
        return ChartSource(default.namespace, None, str(packaged), "")
    chart = override.get("chart", default.chart)
    repo = override.get("repo", default.repo if "chart" not in override else None)
    version = override.get("version", default.version if "chart" not in override else "")
    return ChartSource(default.namespace, repo, chart, version)
