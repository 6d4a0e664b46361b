"""Helm releases as the cluster steps install and remove them, the same way everywhere:
installed or upgraded only when the chart or values changed, recorded at once, and
uninstalled in a given order, skipping what is not there."""

from __future__ import annotations

from provisioner.charts import chart_source
from provisioner.helm import remembered

KEEP_ANNOTATION = "helm.sh/resource-policy"


def install_release(ctx, helm, release: str, values: dict, listed: dict | None = None) -> dict:
    """What the step's outputs keep of the release: namespace, chart, revision, values digest."""
    source = chart_source(ctx.config, release)
    done = helm.ensure(release, source, values, ctx.progress, listed, remembered(ctx.state.outputs(ctx.step), release))
    ctx.record(f"release/{release}", f"{source.namespace}/{release}")
    return {"namespace": source.namespace, "chart": f"{source.chart_name}-{source.pinned_version}", **done}


def uninstall_releases(ctx, kube, helm, order) -> None:
    installed = {r["name"]: r["namespace"] for r in helm.releases()}
    for release in order:
        if release in installed:
            uninstall_release(ctx, kube, helm, release, installed[release])


def uninstall_release(ctx, kube, helm, release: str, namespace: str) -> None:
    """The release's hook objects first: helm uninstall leaves them (helm docs, Chart Hooks:
    "hook resources are not managed with corresponding releases"), e.g. LangSmith's migration
    and auth-bootstrap Jobs (hook-delete-policy before-hook-creation). Deleted while helm
    still lists them, so a destroy cut short finds them again; `resource-policy: keep` is kept."""
    for hook in helm.hooks(release, namespace):
        metadata = hook.get("metadata", {})
        if metadata.get("annotations", {}).get(KEEP_ANNOTATION) != "keep":
            kube.delete(hook["apiVersion"], hook["kind"], metadata["name"], metadata.get("namespace", namespace))
    if helm.uninstall(release, namespace, ctx.progress):
        ctx.progress(f"helm uninstall {release}")
