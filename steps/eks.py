"""EKS: the cluster with its IAM role, the OIDC provider for IRSA, and the managed node group.

The cluster uses API authentication with the creator as admin, so the identity that
runs the provisioner can reach it; control-plane logs go to CloudWatch. Node groups
sit in the private subnets.
"""

from __future__ import annotations

import json

from provisioner.aws import if_exists
from provisioner.errors import StepError
from provisioner.reaping import delete_with_retry
from provisioner.tags import DEPLOYMENT_TAG, idempotency_token, tag_dict
from provisioner.waiting import wait_until

from .base import Finding, Step, register
from .vpc import cluster_name

LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
CLUSTER_POLICIES = ["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"]
NODE_POLICIES = ["arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy", "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
                 "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly"]
CLUSTER_EXPECTED_SECONDS = 600
NODEGROUP_EXPECTED_SECONDS = 240


def trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def ensure_role(ctx, resource: str, trust_policy: str, managed_policies: list[str], description: str) -> str:
    """A role named <deployment>-<resource> with exactly these managed policies attached."""
    iam, name = ctx.client("iam"), ctx.name(resource)
    found = if_exists(iam.get_role, RoleName=name)
    if found is None:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_policy, Description=description,
                              Tags=ctx.tags.as_list(resource))["Role"]["Arn"]
    else:
        arn = found["Role"]["Arn"]
        if _policy_doc(found["Role"]["AssumeRolePolicyDocument"]) != json.loads(trust_policy):
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust_policy)
    ctx.record(f"role/{resource}", arn)
    attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
    for policy in managed_policies:
        if policy not in attached:
            iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    return arn


def delete_role(ctx, resource: str) -> None:
    iam, name = ctx.client("iam"), ctx.name(resource)
    role = if_exists(iam.get_role, RoleName=name)
    if role is None or tag_dict(iam.list_role_tags(RoleName=name)["Tags"]).get(DEPLOYMENT_TAG) != ctx.config.deployment:
        return  # absent, or not ours
    for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
    for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
    iam.delete_role(RoleName=name)
    ctx.record(f"role/{resource}", None)


def _policy_doc(document) -> dict:
    return json.loads(document) if isinstance(document, str) else document



def describe_cluster(eks, name: str) -> dict | None:
    found = if_exists(eks.describe_cluster, name=name)
    return found["cluster"] if found else None


def describe_nodegroup(eks, cluster: str, name: str) -> dict | None:
    found = if_exists(eks.describe_nodegroup, clusterName=cluster, nodegroupName=name)
    return found["nodegroup"] if found else None


@register
class Eks(Step):
    name = "eks"
    requires = ("vpc",)

    def create(self, ctx) -> dict:
        eks, cfg, vpc = ctx.client("eks"), ctx.config, ctx.upstream("vpc")
        cluster = cluster_name(cfg)
        cluster_role = ensure_role(ctx, "eks-cluster", trust("eks.amazonaws.com"), CLUSTER_POLICIES,
                                   "EKS control plane")
        node_role = ensure_role(ctx, "eks-node", trust("ec2.amazonaws.com"), NODE_POLICIES, "EKS worker nodes")
        ctx.ensure("cluster", lambda: cluster if describe_cluster(eks, cluster) else None,
                   lambda: eks.create_cluster(
                       name=cluster, version=cfg["eks_cluster_version"], roleArn=cluster_role,
                       resourcesVpcConfig={"subnetIds": vpc["private_subnet_ids"] + vpc["public_subnet_ids"],
                                           "endpointPublicAccess": True, "endpointPrivateAccess": True},
                       logging={"clusterLogging": [{"types": LOG_TYPES, "enabled": True}]},
                       accessConfig={"authenticationMode": "API_AND_CONFIG_MAP",
                                     "bootstrapClusterCreatorAdminPermissions": True},
                       clientRequestToken=idempotency_token(cluster, cluster_role), tags=ctx.tags.tags("eks"))["cluster"]["name"])
        described = self._wait(ctx, lambda: describe_cluster(eks, cluster), f"EKS cluster {cluster}",
                               CLUSTER_EXPECTED_SECONDS)
        oidc_arn = ctx.ensure("oidc_provider", lambda: self._find_oidc(ctx, described),
                              lambda: ctx.client("iam").create_open_id_connect_provider(
                                  Url=described["identity"]["oidc"]["issuer"], ClientIDList=["sts.amazonaws.com"],
                                  Tags=ctx.tags.as_list("eks-oidc"))["OpenIDConnectProviderArn"])
        nodegroup = ctx.name("default")
        scaling = {"minSize": cfg["node_min_size"], "maxSize": cfg["node_max_size"],
                   "desiredSize": cfg["node_min_size"]}
        ctx.ensure("nodegroup", lambda: nodegroup if describe_nodegroup(eks, cluster, nodegroup) else None,
                   lambda: eks.create_nodegroup(
                       clusterName=cluster, nodegroupName=nodegroup, scalingConfig=scaling,
                       subnets=vpc["private_subnet_ids"], instanceTypes=[cfg["node_instance_type"]],
                       amiType="AL2023_x86_64_STANDARD", nodeRole=node_role, capacityType="ON_DEMAND",
                       clientRequestToken=idempotency_token(cluster, nodegroup, node_role),
                       tags=ctx.tags.tags("default"))["nodegroup"]["nodegroupName"])
        group = self._wait(ctx, lambda: describe_nodegroup(eks, cluster, nodegroup), f"node group {nodegroup}",
                           NODEGROUP_EXPECTED_SECONDS)
        current = group["scalingConfig"]
        if (current["minSize"], current["maxSize"]) != (scaling["minSize"], scaling["maxSize"]):
            desired = min(max(current["desiredSize"], scaling["minSize"]), scaling["maxSize"])
            eks.update_nodegroup_config(clusterName=cluster, nodegroupName=nodegroup,
                                        scalingConfig={**scaling, "desiredSize": desired})
        return {"cluster_name": cluster, "cluster_arn": described["arn"], "endpoint": described["endpoint"],
                "oidc_issuer": described["identity"]["oidc"]["issuer"], "oidc_provider_arn": oidc_arn,
                "cluster_role_arn": cluster_role, "node_role_arn": node_role, "nodegroup": nodegroup,
                "cluster_security_group_id": described["resourcesVpcConfig"].get("clusterSecurityGroupId")}

    @staticmethod
    def _wait(ctx, describe, what: str, expected: float) -> dict:
        def active():
            found = describe()
            if found is None or found["status"] in ("FAILED", "CREATE_FAILED", "DELETING", "DEGRADED"):
                state = "gone" if found is None else found["status"]
                raise StepError(f"{what} is {state}; see its health in the EKS console, fix, and apply again")
            return found if found["status"] == "ACTIVE" else None
        return wait_until(active, what=what, expected_seconds=expected, timeout_seconds=3 * expected + 600,
                          progress=ctx.progress)

    @staticmethod
    def _find_oidc(ctx, cluster: dict) -> str | None:
        issuer = cluster["identity"]["oidc"]["issuer"].removeprefix("https://")
        for provider in ctx.client("iam").list_open_id_connect_providers()["OpenIDConnectProviderList"]:
            if provider["Arn"].endswith(f":oidc-provider/{issuer}"):
                return provider["Arn"]
        return None

    def verify(self, ctx) -> list[Finding]:
        eks, cfg = ctx.client("eks"), ctx.config
        cluster = cluster_name(cfg)
        described = describe_cluster(eks, cluster)
        if described is None:
            return [Finding(f"EKS cluster {cluster}", "missing", missing=True)]
        findings = []
        if described["status"] != "ACTIVE":
            findings.append(Finding(f"EKS cluster {cluster}", f"status is {described['status']}"))
        if described["version"] != cfg["eks_cluster_version"]:
            findings.append(Finding(f"EKS cluster {cluster}", f"version {described['version']}, config wants "
                                    f"{cfg['eks_cluster_version']} (upgrade one minor version at a time)"))
        if self._find_oidc(ctx, described) is None:
            findings.append(Finding("OIDC provider", "missing", missing=True))
        group = describe_nodegroup(eks, cluster, ctx.name("default"))
        if group is None:
            findings.append(Finding(f"node group {ctx.name('default')}", "missing", missing=True))
        else:
            scaling = group["scalingConfig"]
            if (scaling["minSize"], scaling["maxSize"]) != (cfg["node_min_size"], cfg["node_max_size"]):
                findings.append(Finding(f"node group {ctx.name('default')}",
                                        f"size {scaling['minSize']}-{scaling['maxSize']}, config wants "
                                        f"{cfg['node_min_size']}-{cfg['node_max_size']}"))
            if scaling["desiredSize"] < cfg["node_min_size"] or group["status"] != "ACTIVE":
                findings.append(Finding(f"node group {ctx.name('default')}",
                                        f"{group['status']} with {scaling['desiredSize']} desired nodes"))
        return findings

    def destroy(self, ctx) -> None:
        eks, cfg = ctx.client("eks"), ctx.config
        cluster = cluster_name(cfg)
        described = describe_cluster(eks, cluster)
        if described is not None:
            for nodegroup in eks.list_nodegroups(clusterName=cluster)["nodegroups"]:
                if describe_nodegroup(eks, cluster, nodegroup)["status"] != "DELETING":
                    eks.delete_nodegroup(clusterName=cluster, nodegroupName=nodegroup)
                wait_until(lambda n=nodegroup: describe_nodegroup(eks, cluster, n) is None,
                           what=f"node group {nodegroup} to be deleted", expected_seconds=300,
                           timeout_seconds=1800, progress=ctx.progress)
            ctx.record("nodegroup", None)
            if described["status"] != "DELETING":
                delete_with_retry(lambda: eks.delete_cluster(name=cluster), f"EKS cluster {cluster}",
                                  lambda: "", ctx.progress)
            wait_until(lambda: describe_cluster(eks, cluster) is None, what=f"EKS cluster {cluster} to be deleted",
                       expected_seconds=300, timeout_seconds=1800, progress=ctx.progress)
        ctx.record("cluster", None)
        iam = ctx.client("iam")
        for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
            tags = iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=provider["Arn"])["Tags"]
            if tag_dict(tags).get(DEPLOYMENT_TAG) == cfg.deployment:
                iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=provider["Arn"])
        ctx.record("oidc_provider", None)
        for resource in ("eks-node", "eks-cluster"):
            delete_role(ctx, resource)
