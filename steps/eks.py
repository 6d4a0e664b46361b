"""EKS: the cluster with its IAM role, the OIDC provider for IRSA, and the managed node group.

The cluster uses API authentication with the creator as admin, so the identity that
runs the provisioner can reach it; control-plane logs go to CloudWatch. Node groups
sit in the private subnets.
"""

from __future__ import annotations


from provisioner.aws import if_exists
from provisioner.errors import StepError
from provisioner.reaping import delete_with_retry
from provisioner.retry import PRINCIPAL_NOT_KNOWN_YET, ROLE_NOT_ASSUMABLE_YET, until_accepted
from provisioner.tags import DEPLOYMENT_TAG, tag_dict

from . import _eks_upgrade as upgrade
from . import _policies as policies
from ._iam import delete_role, ensure_role, irsa_trust, trust
from provisioner.waiting import wait_until

from .base import Finding, Step, register

LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
CLUSTER_POLICIES = ["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"]
NODE_POLICIES = ["arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy", "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
                 "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly"]
EBS_CSI_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
IRSA_ROLES = ("irsa-ebs-csi", "irsa-load-balancer-controller", "irsa-cluster-autoscaler", "irsa-external-secrets",
              "irsa-cert-manager")
EBS_CSI_ADDON = "aws-ebs-csi-driver"
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
ADDON_EXPECTED_SECONDS = 90
CLUSTER_EXPECTED_SECONDS = 600
NODEGROUP_EXPECTED_SECONDS = 240


def control_plane_log_group(cluster: str) -> str:
    """Where EKS sends control-plane logs (EKS user guide, "Send control plane logs to CloudWatch Logs")."""
    return f"/aws/eks/{cluster}/cluster"


def describe_cluster(eks, name: str) -> dict | None:
    found = if_exists(eks.describe_cluster, name=name)
    return found["cluster"] if found else None


def describe_addon(eks, cluster: str, name: str) -> dict | None:
    found = if_exists(eks.describe_addon, clusterName=cluster, addonName=name)
    return found["addon"] if found else None


def principal_arn(iam, caller_arn: str) -> str:
    """The IAM principal behind an STS caller ARN: an assumed-role session maps to its role
    (access entries take the role, not the session). The session ARN drops the role's path
    (IAM Identity Center roles live under /aws-reserved/sso.amazonaws.com/<region>/), and
    EKS refuses the pathless ARN: InvalidParameterException "The specified principalArn is
    invalid: invalid principal" (terraform-aws-modules/terraform-aws-eks #2969). So the
    role's real ARN is read from IAM, which takes the bare name."""
    if ":assumed-role/" not in caller_arn:
        return caller_arn
    role_name = caller_arn.split(":assumed-role/", 1)[1].split("/")[0]
    return iam.get_role(RoleName=role_name)["Role"]["Arn"]


def ensure_access_entry(ctx, cluster: str, principal: str, policy: str, key: str) -> None:
    """An access entry with a cluster-wide policy, so this principal can use kubectl and helm.
    (AWS makes one for the cluster's creator; anyone else running apply needs their own.)"""
    eks = ctx.client("eks")
    if principal not in eks.list_access_entries(clusterName=cluster)["accessEntries"]:
        try:  # a role made moments ago is an "invalid principal" until IAM propagates
            until_accepted(lambda: eks.create_access_entry(clusterName=cluster, principalArn=principal, type="STANDARD",
                                                           tags=ctx.tags.tags("access")),
                           not_yet=PRINCIPAL_NOT_KNOWN_YET, what=f"access entry for {principal}", propagation="iam",
                           progress=ctx.progress)
        except eks.exceptions.ResourceInUseException:
            pass  # made between our look and our create (the creator's own entry)
    ctx.record(key, principal)  # before the next call: a crash from here on must not lose it
    associated = eks.list_associated_access_policies(clusterName=cluster, principalArn=principal)
    if policy not in {p["policyArn"] for p in associated["associatedAccessPolicies"]}:
        eks.associate_access_policy(clusterName=cluster, principalArn=principal, policyArn=policy,
                                    accessScope={"type": "cluster"})


def describe_nodegroup(eks, cluster: str, name: str) -> dict | None:
    found = if_exists(eks.describe_nodegroup, clusterName=cluster, nodegroupName=name)
    return found["nodegroup"] if found else None


@register
class Eks(Step):
    name = "eks"
    requires = ("vpc",)

    def create(self, ctx) -> dict:
        eks, cfg, vpc = ctx.client("eks"), ctx.config, ctx.upstream("vpc")
        cluster = cfg.cluster_name
        cluster_role = ensure_role(ctx, "eks-cluster", trust("eks.amazonaws.com"), CLUSTER_POLICIES,
                                   "EKS control plane")
        node_role = ensure_role(ctx, "eks-node", trust("ec2.amazonaws.com"), NODE_POLICIES, "EKS worker nodes")
        operator = principal_arn(ctx.client("iam"), ctx.aws.identity()["Arn"])

        def created(name: str) -> str:
            # bootstrapClusterCreatorAdminPermissions: EKS gives the creator an access entry with
            # the cluster, so it exists from now on, and the state says so before the next call.
            ctx.record("access_entry/operator", operator)
            return name
        ctx.ensure("cluster", lambda: cluster if describe_cluster(eks, cluster) else None,
                   lambda: created(self._create(ctx, f"EKS cluster {cluster}", lambda: eks.create_cluster(
                       name=cluster, version=cfg["eks_cluster_version"], roleArn=cluster_role,
                       resourcesVpcConfig={"subnetIds": vpc["private_subnet_ids"] + vpc["public_subnet_ids"],
                                           "endpointPublicAccess": True, "endpointPrivateAccess": True},
                       logging={"clusterLogging": [{"types": LOG_TYPES, "enabled": True}]},
                       accessConfig={"authenticationMode": "API_AND_CONFIG_MAP",
                                     "bootstrapClusterCreatorAdminPermissions": True},
                       clientRequestToken=ctx.client_token("cluster"), tags=ctx.tags.tags("eks")))[
                       "cluster"]["name"]))
        described = self._wait(ctx, lambda: describe_cluster(eks, cluster), f"EKS cluster {cluster}",
                               CLUSTER_EXPECTED_SECONDS)
        described = upgrade.upgrade_cluster(ctx, described, self._waiter(ctx))
        oidc_arn = ctx.ensure("oidc_provider", lambda: self._find_oidc(ctx, described),
                              lambda: ctx.client("iam").create_open_id_connect_provider(
                                  Url=described["identity"]["oidc"]["issuer"], ClientIDList=["sts.amazonaws.com"],
                                  Tags=ctx.tags.as_list("eks-oidc"))["OpenIDConnectProviderArn"])
        ensure_access_entry(ctx, cluster, operator, CLUSTER_ADMIN_POLICY, "access_entry/operator")
        scaling = {"minSize": cfg["node_min_size"], "maxSize": cfg["node_max_size"],
                   "desiredSize": cfg["node_min_size"]}
        existing = upgrade.nodegroups(eks, cluster)
        nodegroup = ctx.ensure("nodegroup", lambda: upgrade.matching_nodegroup(ctx, existing),
                               lambda: self._create_nodegroup(ctx, existing, scaling, node_role))
        group = self._wait(ctx, lambda: describe_nodegroup(eks, cluster, nodegroup), f"node group {nodegroup}",
                           NODEGROUP_EXPECTED_SECONDS)
        upgrade.retire_other_nodegroups(ctx, cluster, nodegroup, existing, self._gone_waiter(ctx))
        current = group["scalingConfig"]
        if (current["minSize"], current["maxSize"]) != (scaling["minSize"], scaling["maxSize"]):
            desired = min(max(current["desiredSize"], scaling["minSize"]), scaling["maxSize"])
            eks.update_nodegroup_config(clusterName=cluster, nodegroupName=nodegroup,
                                        scalingConfig={**scaling, "desiredSize": desired})
        outputs = {"cluster_name": cluster, "cluster_arn": described["arn"], "endpoint": described["endpoint"],
                   "kubernetes_version": described["version"],
                   "oidc_issuer": described["identity"]["oidc"]["issuer"], "oidc_provider_arn": oidc_arn,
                   "cluster_role_arn": cluster_role, "admin_principal": operator, "node_role_arn": node_role, "nodegroup": nodegroup,
                   "cluster_security_group_id": described["resourcesVpcConfig"].get("clusterSecurityGroupId")}
        outputs["irsa_roles"] = {
            name: ensure_role(ctx, f"irsa-{name}", irsa_trust(outputs, namespace, [account]), managed,
                              f"IRSA for {namespace}/{account}", inline)
            for name, (namespace, account, managed, inline) in self._irsa_roles(ctx).items()}
        self._ensure_ebs_csi_addon(ctx, described, outputs["irsa_roles"]["ebs-csi"])
        outputs["addons"] = [EBS_CSI_ADDON]
        return outputs

    def _create_nodegroup(self, ctx, existing: dict, scaling: dict, node_role: str) -> str:
        """A new group: the first one, or the replacement for a group whose instance type
        the config changed (AWS cannot change it in place). It starts at the size the
        retiring group runs, so the workloads fit while that group drains."""
        eks, cfg, cluster = ctx.client("eks"), ctx.config, ctx.config.cluster_name
        name = upgrade.nodegroup_name(ctx, cfg["node_instance_type"], existing)
        retiring = {n: g for n, g in existing.items() if upgrade.ours(g, cfg.deployment)}
        desired = min(max([scaling["desiredSize"], *(g["scalingConfig"]["desiredSize"] for g in retiring.values())]),
                      scaling["maxSize"])
        if retiring:
            ctx.progress(f"node group {name} ({cfg['node_instance_type']}) replaces "
                         f"{', '.join(sorted(retiring))}: AWS cannot change a group's instance type in place")
        return self._create(ctx, f"node group {name}", lambda: eks.create_nodegroup(
            clusterName=cluster, nodegroupName=name, scalingConfig={**scaling, "desiredSize": desired},
            subnets=ctx.upstream("vpc")["private_subnet_ids"], instanceTypes=[cfg["node_instance_type"]],
            amiType="AL2023_x86_64_STANDARD", nodeRole=node_role, capacityType="ON_DEMAND",
            clientRequestToken=ctx.client_token("nodegroup"),
            tags=ctx.tags.tags(name.removeprefix(f"{cfg.deployment}-"))))["nodegroup"]["nodegroupName"]

    def _waiter(self, ctx):
        return lambda describe, what, expected: self._wait(ctx, describe, what, expected)

    @staticmethod
    def _gone_waiter(ctx):
        return lambda gone, what: wait_until(gone, what=what, expected_seconds=300, timeout_seconds=1800,
                                             progress=ctx.progress)

    def _ensure_ebs_csi_addon(self, ctx, described: dict, role_arn: str) -> None:
        """The EBS CSI driver (ClickHouse's volumes), running under its own IRSA role, at a
        version that fits the cluster's Kubernetes version."""
        eks, cluster = ctx.client("eks"), described["name"]
        addon = describe_addon(eks, cluster, EBS_CSI_ADDON)
        if addon is None:
            self._create(ctx, f"add-on {EBS_CSI_ADDON}", lambda: eks.create_addon(
                clusterName=cluster, addonName=EBS_CSI_ADDON, serviceAccountRoleArn=role_arn,
                resolveConflicts="OVERWRITE", tags=ctx.tags.tags("ebs-csi"),
                clientRequestToken=ctx.client_token(f"addon/{EBS_CSI_ADDON}")))
        elif addon.get("serviceAccountRoleArn") != role_arn:
            eks.update_addon(clusterName=cluster, addonName=EBS_CSI_ADDON, serviceAccountRoleArn=role_arn,
                             resolveConflicts="OVERWRITE")
        ctx.record(f"addon/{EBS_CSI_ADDON}", EBS_CSI_ADDON)
        # DEGRADED is still pending: the add-on's pods fail STS until its new IRSA role propagates
        # (TF internal/service/eks/addon.go waitAddonCreated: Pending CREATING, DEGRADED).
        addon = self._wait(ctx, lambda: describe_addon(eks, cluster, EBS_CSI_ADDON), f"add-on {EBS_CSI_ADDON}",
                           ADDON_EXPECTED_SECONDS, pending=("DEGRADED",))
        upgrade.converge_addon_version(ctx, described, addon, self._waiter(ctx), ADDON_EXPECTED_SECONDS)

    @staticmethod
    def _create(ctx, what: str, create):
        """EKS refuses a role created or changed moments ago until IAM propagates (TF
        internal/service/eks/cluster.go and addon.go retry for propagationTimeout)."""
        return until_accepted(create, not_yet=ROLE_NOT_ASSUMABLE_YET, what=f"create {what}", propagation="iam",
                              progress=ctx.progress)

    @staticmethod
    def _irsa_roles(ctx) -> dict:
        """Controller roles: name -> (namespace, service account, managed policies, inline policy)."""
        cfg = ctx.config
        roles = {
            "ebs-csi": ("kube-system", "ebs-csi-controller-sa", [EBS_CSI_POLICY], None),
            "load-balancer-controller": ("kube-system", "aws-load-balancer-controller", [],
                                         policies.load_balancer_controller()),
            "cluster-autoscaler": ("kube-system", "cluster-autoscaler", [],
                                   policies.cluster_autoscaler(cfg.cluster_name)),
            "external-secrets": ("external-secrets", "external-secrets", [],
                                 policies.external_secrets(cfg["region"], ctx.aws.account_id(), cfg.ssm_prefix)),
        }
        if cfg["tls_certificate_source"] == "letsencrypt":
            roles["cert-manager"] = ("cert-manager", "cert-manager", [], policies.cert_manager_route53())
        return roles

    @staticmethod
    def _wait(ctx, describe, what: str, expected: float, pending: tuple[str, ...] = ()) -> dict:
        failed = {"FAILED", "CREATE_FAILED", "DELETING", "DEGRADED"} - set(pending)

        def active():
            found = describe()
            if found is None or found["status"] in failed:
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
        cluster = cfg.cluster_name
        described = describe_cluster(eks, cluster)
        if described is None:
            return [Finding(f"EKS cluster {cluster}", "missing", missing=True)]
        findings = []
        ctx.fact(f"cluster {cluster} {described['status']}, Kubernetes {described['version']}")
        if described["status"] != "ACTIVE":
            findings.append(Finding(f"EKS cluster {cluster}", f"status is {described['status']}"))
        if described["version"] != cfg["eks_cluster_version"]:
            hops = upgrade.version_plan(described["version"], cfg["eks_cluster_version"])
            findings.append(Finding(f"EKS cluster {cluster}", f"Kubernetes {described['version']} -> "
                                    f"{cfg['eks_cluster_version']}: control plane to {', then '.join(hops)}, each "
                                    "followed by the node groups, then the add-ons", change="upgrade"))
        if self._find_oidc(ctx, described) is None:
            findings.append(Finding("OIDC provider", "missing", missing=True))
        addon = describe_addon(eks, cluster, EBS_CSI_ADDON)
        if addon is None or addon["status"] != "ACTIVE":
            findings.append(Finding(f"add-on {EBS_CSI_ADDON}", "missing" if addon is None else addon["status"],
                                    missing=addon is None))
        existing = upgrade.nodegroups(eks, cluster)
        name = upgrade.matching_nodegroup(ctx, existing)
        if name is None:
            running = {n: g.get("instanceTypes") for n, g in existing.items() if upgrade.ours(g, cfg.deployment)}
            findings.append(Finding(
                "node group", f"runs {running}, config wants {cfg['node_instance_type']}: a new group replaces it "
                "(AWS cannot change instance types in place), then the old one drains" if running else "missing",
                missing=not running, change="replace" if running else ""))
            return findings
        group = existing[name]
        scaling = group["scalingConfig"]
        ctx.fact(f"node group {name} {group['status']}: {scaling['desiredSize']} nodes "
                 f"({scaling['minSize']}-{scaling['maxSize']}), Kubernetes {group.get('version')}")
        if (scaling["minSize"], scaling["maxSize"]) != (cfg["node_min_size"], cfg["node_max_size"]):
            findings.append(Finding(f"node group {name}", f"size {scaling['minSize']}-{scaling['maxSize']}, "
                                    f"config wants {cfg['node_min_size']}-{cfg['node_max_size']}"))
        if scaling["desiredSize"] < cfg["node_min_size"] or group["status"] != "ACTIVE":
            findings.append(Finding(f"node group {name}", f"{group['status']} with {scaling['desiredSize']} "
                                    "desired nodes"))
        findings += [Finding(f"node group {other}", "retired once the replacement is ready", change="replace")
                     for other, g in existing.items() if other != name and upgrade.ours(g, cfg.deployment)]
        return findings

    def destroy(self, ctx) -> None:
        eks, cfg = ctx.client("eks"), ctx.config
        cluster = cfg.cluster_name
        described = describe_cluster(eks, cluster)
        if described is not None:
            for addon in eks.list_addons(clusterName=cluster)["addons"]:
                if if_exists(eks.delete_addon, clusterName=cluster, addonName=addon) is not None:
                    wait_until(lambda a=addon: describe_addon(eks, cluster, a) is None,
                               what=f"add-on {addon} to be deleted", expected_seconds=60, timeout_seconds=900,
                               progress=ctx.progress)
                ctx.record(f"addon/{addon}", None)
            for nodegroup in eks.list_nodegroups(clusterName=cluster)["nodegroups"]:
                group = describe_nodegroup(eks, cluster, nodegroup)  # None: gone since the list
                if group is not None and group["status"] != "DELETING":
                    if_exists(eks.delete_nodegroup, clusterName=cluster, nodegroupName=nodegroup)
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
        # EKS makes the control-plane log group itself and leaves it when the cluster goes.
        logs, log_group = ctx.client("logs"), control_plane_log_group(cluster)
        if any(g["logGroupName"] == log_group
               for g in logs.describe_log_groups(logGroupNamePrefix=log_group)["logGroups"]):
            if_exists(logs.delete_log_group, logGroupName=log_group)
        iam = ctx.client("iam")
        for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
            tags = iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=provider["Arn"])["Tags"]
            if tag_dict(tags).get(DEPLOYMENT_TAG) == cfg.deployment:
                iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=provider["Arn"])
        ctx.record("oidc_provider", None)
        for resource in ("eks-node", "eks-cluster", *IRSA_ROLES):
            delete_role(ctx, resource)
