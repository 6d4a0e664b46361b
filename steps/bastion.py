"""Bastion (create_bastion): a small EC2 instance reached through SSM Session Manager (no
SSH unless bastion_ssh_cidrs is set), IMDSv2 only, encrypted root volume, and an EKS
access entry for its role so kubectl works from it (the reference makes none)."""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.reaping import delete_with_retry
from provisioner.retry import INSTANCE_PROFILE_NOT_KNOWN_YET, until_accepted
from provisioner.waiting import wait_until

from ._iam import delete_role, ensure_role, trust
from ._network import delete_security_group, ensure_security_group, security_group_findings
from .base import Finding, Step, register
from .eks import CLUSTER_ADMIN_POLICY, ensure_access_entry

ROLE = "bastion"
SSM_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
INSTANCE_TYPE = "t3.micro"


def find_instance(ctx) -> dict | None:
    ec2 = ctx.client("ec2")
    filters = ctx.tags.ec2_filters("bastion") + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    found = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
    return found[0] if found else None


@register
class Bastion(Step):
    name = "bastion"
    requires = ("vpc", "eks")

    @staticmethod
    def enabled(config) -> bool:
        return config["create_bastion"]

    def create(self, ctx) -> dict:
        iam, cfg, vpc = ctx.client("iam"), ctx.config, ctx.upstream("vpc")
        account = ctx.aws.account_id()
        role = ensure_role(ctx, ROLE, trust("ec2.amazonaws.com"), [SSM_POLICY], "LangSmith bastion (SSM, kubectl)", {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "eks:DescribeCluster",
                                                    "Resource": f"arn:aws:eks:{cfg['region']}:{account}:cluster/"
                                                                f"{cfg.cluster_name}"}]})
        profile = ctx.name(ROLE)
        found = if_exists(iam.get_instance_profile, InstanceProfileName=profile)
        if found is None:
            found = iam.create_instance_profile(InstanceProfileName=profile, Tags=ctx.tags.as_list(ROLE))
        if not found["InstanceProfile"]["Roles"]:
            iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=ctx.name(ROLE))
        ctx.record("instance_profile", profile)
        ssh = [(22, cidr) for cidr in cfg["bastion_ssh_cidrs"]]
        group = ensure_security_group(ctx, "bastion-sg", "LangSmith bastion: SSM out, SSH only if configured",
                                      vpc["vpc_id"], ssh, "0.0.0.0/0")
        subnet = (vpc["public_subnet_ids"] if ssh else vpc["private_subnet_ids"])[0]
        instance_id = ctx.ensure("instance", lambda: (find_instance(ctx) or {}).get("InstanceId"),
                                 lambda: self._launch(ctx, profile, group, subnet, bool(ssh)))
        ensure_access_entry(ctx, cfg.cluster_name, role, CLUSTER_ADMIN_POLICY, "access_entry/bastion")
        return {"instance_id": instance_id, "role_arn": role, "security_group_id": group,
                "ssm_start_session_command": f"aws ssm start-session --target {instance_id} --region {cfg['region']}"}

    @staticmethod
    def _launch(ctx, profile: str, group: str, subnet: str, public: bool) -> str:
        ec2 = ctx.client("ec2")
        image = ctx.client("ssm").get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
        request = dict(
            ImageId=image, InstanceType=INSTANCE_TYPE, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": profile},
            NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet, "Groups": [group],
                                "AssociatePublicIpAddress": public}],
            MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20, "VolumeType": "gp3",
                                                                      "Encrypted": True, "DeleteOnTermination": True}}],
            ClientToken=ctx.client_token("instance"),
            TagSpecifications=ctx.tags.ec2_spec("instance", "bastion"))
        # A new instance profile takes a few seconds to reach EC2.
        launched = until_accepted(lambda: ec2.run_instances(**request), not_yet=INSTANCE_PROFILE_NOT_KNOWN_YET,
                                  what="bastion launch", propagation="iam", progress=ctx.progress)
        return launched["Instances"][0]["InstanceId"]

    def verify(self, ctx) -> list[Finding]:
        instance = find_instance(ctx)
        if instance is None:
            return [Finding("bastion instance", "missing", missing=True)]
        findings = security_group_findings(ctx, "bastion-sg", [(22, c) for c in ctx.config["bastion_ssh_cidrs"]],
                                           "0.0.0.0/0")
        if instance.get("MetadataOptions", {}).get("HttpTokens") != "required":
            findings.append(Finding("bastion instance", "IMDSv1 allowed (HttpTokens is not required)"))
        ctx.fact(f"bastion {instance['InstanceId']} {instance['State']['Name']}: aws ssm start-session "
                 f"--target {instance['InstanceId']}")
        return findings

    def destroy(self, ctx) -> None:
        ec2, iam = ctx.client("ec2"), ctx.client("iam")
        instance = find_instance(ctx)
        if instance is not None:
            ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
            wait_until(lambda: find_instance(ctx) is None, what="bastion to terminate", expected_seconds=60,
                       timeout_seconds=900, progress=ctx.progress)
        ctx.record("instance", None)
        eks, cluster = ctx.client("eks"), ctx.config.cluster_name
        role = f"arn:aws:iam::{ctx.aws.account_id()}:role/{ctx.name(ROLE)}"
        if if_exists(eks.describe_cluster, name=cluster):
            if_exists(eks.delete_access_entry, clusterName=cluster, principalArn=role)
        ctx.record("access_entry/bastion", None)
        delete_security_group(ctx, "bastion-sg")
        profile = if_exists(iam.get_instance_profile, InstanceProfileName=ctx.name(ROLE))
        if profile is not None:
            for attached in profile["InstanceProfile"]["Roles"]:
                iam.remove_role_from_instance_profile(InstanceProfileName=ctx.name(ROLE), RoleName=attached["RoleName"])
            delete_with_retry(lambda: iam.delete_instance_profile(InstanceProfileName=ctx.name(ROLE)),
                              f"instance profile {ctx.name(ROLE)}", lambda: "", ctx.progress)
        ctx.record("instance_profile", None)
        delete_role(ctx, ROLE)
