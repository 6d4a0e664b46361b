"""EKS version changes, which moto 5.2.5 does not implement (UpdateClusterVersion,
UpdateNodegroupVersion, UpdateAddon, DescribeAddonVersions: HTTP 404 there).

This double follows the rules AWS documents for them (botocore's EKS model docs and the
EKS user guide, "Update existing cluster to new Kubernetes version"):
- a cluster goes up one minor version per update, never down ("Unsupported Kubernetes
  minor version update from A to B" otherwise);
- "all of your node groups' Kubernetes versions must match the cluster's Kubernetes
  version in order to update the cluster to a new Kubernetes version";
- a node group is never newer than its cluster; without a version it takes the cluster's
  (also at create time: moto gives new node groups a fixed default version instead);
- an update is asynchronous: the cluster, node group or add-on reports UPDATING (for at
  least one describe, longer with simulated latency) and then ACTIVE with the new version;
  a second update while one runs is refused with ResourceInUseException;
- an add-on created without a version gets the default version for the cluster's
  Kubernetes version, and DescribeAddonVersions lists which versions fit which cluster
  versions. The version table below is illustrative (AWS's own changes monthly); its
  format is AWS's.
Error codes are AWS's; the message wording where AWS's is not documented is ours.
"""

from __future__ import annotations

import json
import time
import uuid

from moto.eks import exceptions as eks_exceptions
from moto.eks import responses as eks_responses
from moto.eks import urls as eks_urls
from moto.eks.models import EKSBackend

# add-on -> [(version, cluster versions it supports)], newest last; the newest that fits is the default
ADDON_VERSIONS = {
    "aws-ebs-csi-driver": [("v1.35.0-eksbuild.1", ("1.29", "1.30", "1.31", "1.32")),
                           ("v1.41.0-eksbuild.1", ("1.30", "1.31", "1.32", "1.33")),
                           ("v1.48.0-eksbuild.2", ("1.33", "1.34", "1.35"))],
}
UPDATE_SECONDS = {"cluster": 1800, "nodegroup": 900, "addon": 60}
LATENCY_SCALE = 0.0  # set by simulate_latency: updates then last scale x UPDATE_SECONDS


def minor(version: str) -> int:
    return int(version.split(".")[1])


def default_addon_version(addon: str, cluster_version: str) -> str:
    fitting = [v for v, clusters in ADDON_VERSIONS.get(addon, []) if cluster_version in clusters]
    return fitting[-1] if fitting else "v1.0.0-eksbuild.1"


def _error(cls, message: str, **names):
    fields = {"clusterName": None, "nodegroupName": None, "addonName": None, **names}
    if cls is eks_exceptions.ResourceNotFoundException:
        fields["fargateProfileName"] = None
    return cls(message=message, **fields)


class _Pending:
    """An update in flight on one resource: UPDATING until its time is up and it has been
    seen updating once, then applied."""

    def __init__(self, kind: str, apply):
        self.ready_at = time.monotonic() + UPDATE_SECONDS[kind] * LATENCY_SCALE
        self.apply, self.seen = apply, False
        self.update = {"id": str(uuid.uuid4()), "status": "InProgress", "createdAt": time.time(), "errors": []}

    def settle(self) -> bool:
        if self.seen and time.monotonic() >= self.ready_at:
            self.apply()
            return True
        self.seen = True
        return False


def history(backend) -> list[tuple]:
    """What changed, in order, as AWS would show in the cluster's update history:
    (kind, name, from, to) for version updates, ("create"/"delete", node group) for groups."""
    if not hasattr(backend, "simulated_history"):
        backend.simulated_history = []
    return backend.simulated_history


def _pending(backend) -> dict:
    if not hasattr(backend, "simulated_updates"):
        backend.simulated_updates = {}
    return backend.simulated_updates


def settle(backend) -> None:
    """Finish the updates whose time is up (called on every describe)."""
    for key, pending in list(_pending(backend).items()):
        if pending.settle():
            del _pending(backend)[key]


def _cluster(response, name: str):
    cluster = response.eks_backend.clusters.get(name)
    if cluster is None:
        raise _error(eks_exceptions.ResourceNotFoundException, f"No cluster found for name: {name}.",
                     clusterName=name)
    return cluster


def _path(response) -> list[str]:
    return response.path.split("?")[0].strip("/").split("/")


def _busy(response, key: tuple, what: str, **names) -> None:
    settle(response.eks_backend)
    if key in _pending(response.eks_backend):
        raise _error(eks_exceptions.ResourceInUseException, f"{what} is currently being updated", **names)


def _update_cluster_version(self):
    name = _path(self)[1]
    cluster = _cluster(self, name)
    _busy(self, ("cluster", name), f"Cluster {name}", clusterName=name)
    wanted = json.loads(self.body or "{}").get("version", "")
    if minor(wanted) != minor(cluster.version) + 1:
        raise _error(eks_exceptions.InvalidParameterException,
                     f"Unsupported Kubernetes minor version update from {cluster.version} to {wanted}",
                     clusterName=name)
    for group in cluster.nodegroups.values():
        if group.version != cluster.version:
            raise _error(eks_exceptions.InvalidParameterException,
                         f"Nodegroup {group.nodegroup_name} must be updated to match cluster version "
                         f"{cluster.version} before updating cluster version", clusterName=name)

    def apply():
        history(self.eks_backend).append(("cluster", name, cluster.version, wanted))
        cluster.version, cluster.status = wanted, "ACTIVE"
    cluster.status = "UPDATING"
    pending = _pending(self.eks_backend)[("cluster", name)] = _Pending("cluster", apply)
    return json.dumps({"update": {**pending.update, "type": "VersionUpdate",
                                  "params": [{"type": "Version", "value": wanted}]}})


def _update_nodegroup_version(self):
    parts = _path(self)  # clusters/<name>/node-groups/<group>/update-version
    cluster = _cluster(self, parts[1])
    group = cluster.nodegroups.get(parts[3])
    if group is None:
        raise _error(eks_exceptions.ResourceNotFoundException, f"No node group found for name: {parts[3]}.",
                     clusterName=parts[1], nodegroupName=parts[3])
    _busy(self, ("nodegroup", parts[1], parts[3]), f"Nodegroup {parts[3]}", clusterName=parts[1],
          nodegroupName=parts[3])
    wanted = json.loads(self.body or "{}").get("version") or cluster.version
    if minor(wanted) > minor(cluster.version):
        raise _error(eks_exceptions.InvalidParameterException,
                     f"Requested Nodegroup Kubernetes version {wanted} is newer than the cluster's "
                     f"{cluster.version}", clusterName=parts[1], nodegroupName=parts[3])
    if minor(wanted) < minor(group.version):
        raise _error(eks_exceptions.InvalidParameterException,
                     f"Cannot roll back node group {parts[3]} from {group.version} to {wanted}",
                     clusterName=parts[1], nodegroupName=parts[3])

    def apply():
        history(self.eks_backend).append(("nodegroup", parts[3], group.version, wanted))
        group.version, group.status = wanted, "ACTIVE"
    group.status = "UPDATING"
    pending = _pending(self.eks_backend)[("nodegroup", parts[1], parts[3])] = _Pending("nodegroup", apply)
    return json.dumps({"update": {**pending.update, "type": "VersionUpdate",
                                  "params": [{"type": "Version", "value": wanted}]}})


def _update_addon(self):
    parts = _path(self)  # clusters/<name>/addons/<addon>/update
    cluster = _cluster(self, parts[1])
    addon = getattr(self.eks_backend, "simulated_addons", {}).get((parts[1], parts[3]))
    if addon is None:
        raise _error(eks_exceptions.ResourceNotFoundException,
                     f"No addon: {parts[3]} found in cluster: {parts[1]}", clusterName=parts[1],
                     addonName=parts[3])
    _busy(self, ("addon", parts[1], parts[3]), f"Addon {parts[3]}", clusterName=parts[1], addonName=parts[3])
    body = json.loads(self.body or "{}")
    version = body.get("addonVersion") or addon["addonVersion"]
    if version not in [v for v, clusters in ADDON_VERSIONS.get(parts[3], []) if cluster.version in clusters]:
        raise _error(eks_exceptions.InvalidParameterException,
                     f"Addon version {version} is not supported for Kubernetes {cluster.version}",
                     clusterName=parts[1], addonName=parts[3])

    def apply():
        history(self.eks_backend).append(("addon", parts[3], addon["addonVersion"], version))
        addon.update(status="ACTIVE", addonVersion=version,
                     serviceAccountRoleArn=body.get("serviceAccountRoleArn") or addon.get("serviceAccountRoleArn"))
    addon["status"] = "UPDATING"
    pending = _pending(self.eks_backend)[("addon", parts[1], parts[3])] = _Pending("addon", apply)
    return json.dumps({"update": {**pending.update, "type": "AddonUpdate",
                                  "params": [{"type": "AddonVersion", "value": version}]}})


def _describe_addon_versions(self):
    name, kubernetes = self._get_param("addonName"), self._get_param("kubernetesVersion")
    addons = [{"addonName": addon, "type": "storage", "owner": "aws", "publisher": "eks",
               "addonVersions": [
                   {"addonVersion": version, "architecture": ["amd64", "arm64"],
                    "compatibilities": [{"clusterVersion": c, "platformVersions": ["*"],
                                         "defaultVersion": version == default_addon_version(addon, c)}
                                        for c in clusters if not kubernetes or c == kubernetes]}
                   for version, clusters in reversed(versions) if not kubernetes or kubernetes in clusters]}
              for addon, versions in ADDON_VERSIONS.items() if not name or addon == name]
    return json.dumps({"addons": addons})


_original_create_nodegroup = EKSBackend.create_nodegroup
_original_delete_nodegroup = EKSBackend.delete_nodegroup
_original_describe_cluster = EKSBackend.describe_cluster
_original_describe_nodegroup = EKSBackend.describe_nodegroup


def _create_nodegroup(self, cluster_name, *args, **kwargs):
    if not kwargs.get("version") and cluster_name in self.clusters:
        kwargs["version"] = self.clusters[cluster_name].version
    group = _original_create_nodegroup(self, cluster_name, *args, **kwargs)
    history(self).append(("create", group.nodegroup_name))
    return group


def _delete_nodegroup(self, cluster_name, nodegroup_name):
    group = _original_delete_nodegroup(self, cluster_name, nodegroup_name)
    history(self).append(("delete", nodegroup_name))
    return group


def _describe_cluster(self, name):
    settle(self)
    return _original_describe_cluster(self, name)


def _describe_nodegroup(self, cluster_name, nodegroup_name):
    settle(self)
    return _original_describe_nodegroup(self, cluster_name, nodegroup_name)


def install() -> None:
    eks_urls.url_paths.update({
        "{0}/clusters/(?P<name>[^/]+)/updates$": eks_urls.response.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/node-groups/(?P<nodegroupName>[^/]+)/update-version$":
            eks_urls.response.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/addons/(?P<addonName>[^/]+)/update$": eks_urls.response.dispatch,
        "{0}/addons/supported-versions$": eks_urls.response.dispatch,
    })
    eks_responses.EKSResponse.update_cluster_version = _update_cluster_version
    eks_responses.EKSResponse.update_nodegroup_version = _update_nodegroup_version
    eks_responses.EKSResponse.update_addon = _update_addon
    eks_responses.EKSResponse.describe_addon_versions = _describe_addon_versions
    EKSBackend.create_nodegroup = _create_nodegroup
    EKSBackend.delete_nodegroup = _delete_nodegroup
    EKSBackend.describe_cluster = _describe_cluster
    EKSBackend.describe_nodegroup = _describe_nodegroup
