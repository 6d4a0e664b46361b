"""Helm releases as the cluster steps install and remove them, the same way everywhere:
installed or upgraded only when the chart or values changed, recorded at once, and
uninstalled in a given order, skipping what is not there."""

from __future__ import annotations

from provisioner.charts import chart_source
from provisioner.helm import remembered


def install_release(ctx, helm, release: str, values: dict, listed: dict | None = None) -> dict:
    """What the step's outputs keep of the release: namespace, chart, revision, values digest."""
    source = chart_source(ctx.config, release)
    done = helm.ensure(release, source, values, ctx.progress, listed, remembered(ctx.state.outputs(ctx.step), release))
    ctx.record(f"release/{release}", f"{source.namespace}/{release}")
    return {"namespace": source.namespace, "chart": f"{source.chart_name}-{source.pinned_version}", **done}


def uninstall_releases(ctx, helm, order) -> None:
    installed = {r["name"]: r["namespace"] for r in helm.releases()}
    for release in order:
        if release in installed:
            ctx.progress(f"helm uninstall {release}")
            helm.uninstall(release, installed[release])
