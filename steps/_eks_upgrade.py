"""Day two for EKS: Kubernetes upgrades walked one minor version at a time, node groups
replaced when the config asks for what AWS cannot change in place, and add-ons moved to
versions that fit the cluster.

AWS's rules (botocore's EKS model docs; EKS user guide, "Update existing cluster to new
Kubernetes version"): the control plane goes up one minor version per update and never
down; "all of your node groups' Kubernetes versions must match the cluster's Kubernetes
version in order to update the cluster to a new Kubernetes version"; a node group is
never newer than its cluster; a node group's instance types cannot be updated (there is
no such field in UpdateNodegroupConfig or UpdateNodegroupVersion). So each hop is:
control plane +1, then every node group to match, and the add-ons once at the end.
Every hop is read back from AWS before the next, so a crash mid-upgrade resumes at the
hop it stopped in.
"""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.errors import StepError
from provisioner.tags import DEPLOYMENT_TAG

CLUSTER_UPGRADE_SECONDS = 1800
NODEGROUP_UPGRADE_SECONDS = 900


def minor(version: str) -> int:
    return int(str(version).split(".")[1])


def version_plan(current: str, wanted: str) -> list[str]:
    """The control-plane versions to pass through, in order (empty when there already)."""
    if minor(wanted) < minor(current):
        raise StepError(f"eks_cluster_version {wanted} is below the cluster's {current}: EKS cannot downgrade a "
                        f"cluster; set eks_cluster_version: \"{current}\" (or higher)")
    major = current.split(".")[0]
    return [f"{major}.{m}" for m in range(minor(current) + 1, minor(wanted) + 1)]


def nodegroups(eks, cluster: str) -> dict[str, dict]:
    """The cluster's node groups, described."""
    found = {}
    for name in eks.list_nodegroups(clusterName=cluster)["nodegroups"]:
        described = if_exists(eks.describe_nodegroup, clusterName=cluster, nodegroupName=name)
        if described:
            found[name] = described["nodegroup"]
    return found


def ours(group: dict, deployment: str) -> bool:
    return group.get("tags", {}).get(DEPLOYMENT_TAG) == deployment


def upgrade_cluster(ctx, described: dict, wait_active) -> dict:
    """Walk the control plane and this deployment's node groups up to the config's version."""
    eks, cluster, wanted = ctx.client("eks"), described["name"], ctx.config["eks_cluster_version"]
    hops = version_plan(described["version"], wanted)
    while True:
        for name, group in nodegroups(eks, cluster).items():
            if ours(group, ctx.config.deployment) and group.get("version") != described["version"]:
                wait_active(lambda n=name: _describe_nodegroup(eks, cluster, n), f"node group {name}",
                            NODEGROUP_UPGRADE_SECONDS)  # an update may still be running from a crashed run
                ctx.progress(f"upgrading node group {name} to Kubernetes {described['version']}")
                eks.update_nodegroup_version(clusterName=cluster, nodegroupName=name, version=described["version"])
                wait_active(lambda n=name: _at_version(eks, cluster, n, described["version"]),
                            f"node group {name} upgrade to {described['version']}", NODEGROUP_UPGRADE_SECONDS)
        if not hops:
            return described
        target = hops.pop(0)
        ctx.progress(f"upgrading the control plane {described['version']} -> {target}"
                     + (f" (then {', '.join(hops)})" if hops else ""))
        eks.update_cluster_version(name=cluster, version=target)
        described = wait_active(lambda: _cluster_at(eks, cluster, target), f"control plane upgrade to {target}",
                                CLUSTER_UPGRADE_SECONDS)


def _describe_nodegroup(eks, cluster: str, name: str) -> dict | None:
    found = if_exists(eks.describe_nodegroup, clusterName=cluster, nodegroupName=name)
    return found["nodegroup"] if found else None


def _at_version(eks, cluster: str, name: str, version: str) -> dict | None:
    """The node group once ACTIVE at `version` (UPDATING reads as still busy)."""
    group = _describe_nodegroup(eks, cluster, name)
    if group is not None and group["status"] == "ACTIVE" and group.get("version") != version:
        return {**group, "status": "UPDATING"}
    return group


def _cluster_at(eks, cluster: str, version: str) -> dict | None:
    found = if_exists(eks.describe_cluster, name=cluster)
    described = found["cluster"] if found else None
    if described is not None and described["status"] == "ACTIVE" and described["version"] != version:
        return {**described, "status": "UPDATING"}  # the update is eventually consistent: not started yet
    return described


def converge_addon_version(ctx, cluster: dict, addon: dict, wait_active, expected_seconds: float) -> None:
    """An add-on whose version does not fit the cluster's Kubernetes version moves to the
    default version AWS lists for it."""
    eks = ctx.client("eks")
    offered = eks.describe_addon_versions(addonName=addon["addonName"], kubernetesVersion=cluster["version"])
    versions = [v for a in offered["addons"] for v in a["addonVersions"]]
    fitting = {v["addonVersion"] for v in versions}
    if addon["addonVersion"] in fitting or not versions:
        return
    default = next((v["addonVersion"] for v in versions
                    if any(c.get("defaultVersion") for c in v["compatibilities"])), versions[0]["addonVersion"])
    ctx.progress(f"updating add-on {addon['addonName']} {addon['addonVersion']} -> {default} "
                 f"for Kubernetes {cluster['version']}")
    eks.update_addon(clusterName=cluster["name"], addonName=addon["addonName"], addonVersion=default,
                     resolveConflicts="OVERWRITE")
    wait_active(lambda: _addon_at(eks, cluster["name"], addon["addonName"], default),
                f"add-on {addon['addonName']} update", expected_seconds)


def _addon_at(eks, cluster: str, name: str, version: str) -> dict | None:
    found = if_exists(eks.describe_addon, clusterName=cluster, addonName=name)
    addon = found["addon"] if found else None
    if addon is not None and addon["status"] == "ACTIVE" and addon["addonVersion"] != version:
        return {**addon, "status": "UPDATING"}
    return addon


def nodegroup_name(ctx, instance_type: str, existing: dict[str, dict]) -> str:
    """The first group is `<deployment>-default`; a replacement is named for its instance type."""
    default = ctx.name("default")
    if default not in existing:
        return default
    return ctx.name(instance_type.replace(".", "-"))


def matching_nodegroup(ctx, existing: dict[str, dict]) -> str | None:
    """This deployment's group that runs the configured instance type, if any."""
    for name, group in sorted(existing.items()):
        if ours(group, ctx.config.deployment) and group.get("instanceTypes") == [ctx.config["node_instance_type"]] \
                and group["status"] not in ("DELETING", "DELETE_FAILED"):
            return name
    return None


def retire_other_nodegroups(ctx, cluster: str, keep: str, existing: dict[str, dict], wait_gone) -> None:
    """Once the replacement is ACTIVE: delete this deployment's other groups (EKS drains
    their nodes first) and wait until they are gone, so the cluster never runs without nodes."""
    eks = ctx.client("eks")
    for name, group in existing.items():
        if name == keep or not ours(group, ctx.config.deployment):
            continue
        ctx.progress(f"retiring node group {name} ({', '.join(group.get('instanceTypes') or [])}); "
                     f"EKS drains its nodes onto {keep}")
        if group["status"] != "DELETING":
            eks.delete_nodegroup(clusterName=cluster, nodegroupName=name)
        wait_gone(lambda n=name: _describe_nodegroup(eks, cluster, n) is None, f"node group {name} to be deleted")
