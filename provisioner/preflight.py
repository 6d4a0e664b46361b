"""Read-only checks that fail before anything is created, each saying how to fix it.

Credentials and account; at least two usable AZs; service quotas where the Service
Quotas API reports them; resources carrying this deployment's tags that the state
does not know (adopted by apply, or named for clean-up); a brought certificate that
cannot serve the domain.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

import steps
from steps import bastion
from steps.eks import describe_cluster
from steps.vpc import usable_zones

from .aws import Aws
from .config import Config
from .state import StateStore
from .tags import DEPLOYMENT_TAG, STEP_TAG

PASS, WARN, FAIL = "ok", "warning", "FAIL"


@dataclass
class Check:
    name: str
    outcome: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Quota:
    service: str
    code: str
    title: str


VPC_QUOTA = Quota("vpc", "L-F678F1CE", "VPCs per Region")
EIP_QUOTA = Quota("ec2", "L-0263D0A3", "EC2-VPC Elastic IPs")
NAT_QUOTA = Quota("vpc", "L-FE5A380F", "NAT gateways per Availability Zone")
VCPU_QUOTA = Quota("ec2", "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances (vCPUs)")
# Families under their own quotas although their letter is A, C, D, H, I, M, R, T or Z.
OTHER_VCPU_QUOTAS = ("inf", "trn", "mac", "hpc", "dl")


def run(config: Config, aws: Aws, state: StateStore) -> list[Check]:
    identity = _identity(aws)
    if identity.outcome == FAIL:
        return [identity]  # nothing else can be read without credentials
    checks = [identity, _zones(config, aws)]
    if config["create_vpc"] and not _our_vpc_exists(config, aws):
        checks += _quotas(aws)
    if describe_cluster(aws.client("eks"), config.cluster_name) is None:
        checks.append(_vcpu_quota(config, aws))
    checks += _leftovers(config, aws, state)
    if config["acm_certificate_arn"]:
        checks.append(_certificate(config, aws))
    return checks


def _identity(aws: Aws) -> Check:
    try:
        who = aws.client("sts").get_caller_identity()
    except (ClientError, BotoCoreError) as exc:
        return Check("credentials", FAIL, f"cannot identify the caller: {exc}",
                     "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; `aws sts get-caller-identity` "
                     "must work")
    return Check("credentials", PASS, f"account {who['Account']} as {who['Arn']} in {aws.region}")


def _zones(config: Config, aws: Aws) -> Check:
    names, refused = usable_zones(aws.client("ec2"))
    skipped = f" (skipped, EKS refuses them: {', '.join(refused)})" if refused else ""
    if len(names) < 2:
        return Check("availability zones", FAIL, f"{len(names)} usable zone(s) in {config['region']}{skipped}",
                     "EKS, RDS and ElastiCache need two; choose another region")
    return Check("availability zones", PASS, ", ".join(names) + skipped)


def _our_vpc_exists(config: Config, aws: Aws) -> bool:
    filters = [{"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [config.deployment]}]
    return bool(aws.client("ec2").describe_vpcs(Filters=filters)["Vpcs"])


def _quota_value(aws: Aws, quota: Quota) -> float | None:
    try:
        return aws.client("service-quotas").get_service_quota(
            ServiceCode=quota.service, QuotaCode=quota.code)["Quota"]["Value"]
    except (ClientError, BotoCoreError):
        return None  # not reported for this service or account


def _quotas(aws: Aws) -> list[Check]:
    ec2 = aws.client("ec2")
    nat_per_zone: dict[str, int] = {}
    subnets = {s["SubnetId"]: s["AvailabilityZone"] for s in ec2.describe_subnets()["Subnets"]}
    for nat in ec2.describe_nat_gateways(Filter=[{"Name": "state", "Values": ["pending", "available"]}])[
            "NatGateways"]:
        zone = subnets.get(nat["SubnetId"], "?")
        nat_per_zone[zone] = nat_per_zone.get(zone, 0) + 1
    usage = {VPC_QUOTA: len(ec2.describe_vpcs()["Vpcs"]), EIP_QUOTA: len(ec2.describe_addresses()["Addresses"]),
             NAT_QUOTA: max(nat_per_zone.values(), default=0)}
    checks = []
    for quota, used in usage.items():
        limit = _quota_value(aws, quota)
        name = f"quota {quota.title}"
        if limit is None:
            checks.append(Check(name, PASS, f"{used} in use; the limit is not reported for this account"))
        elif used + 1 > limit:
            checks.append(Check(name, FAIL, f"{used} of {limit:.0f} in use and apply needs 1 more",
                                f"request an increase (Service Quotas {quota.service} {quota.code}) or free one"))
        else:
            checks.append(Check(name, PASS, f"{used} of {limit:.0f} in use, apply needs 1"))
    return checks


def _standard(instance_type: str) -> bool:
    return instance_type[0] in "acdhimrtz" and not instance_type.startswith(OTHER_VCPU_QUOTAS)


def _vcpu_quota(config: Config, aws: Aws) -> Check:
    """The node group's first nodes (and the bastion) against the On-Demand vCPU quota: over
    it, the node group goes CREATE_FAILED (AsgInstanceLaunchFailures) a quarter of an hour in."""
    ec2, node_type = aws.client("ec2"), config["node_instance_type"]
    name = f"quota {VCPU_QUOTA.title}"
    if not _standard(node_type):
        return Check(name, PASS, f"{node_type} counts against another quota; not checked")
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    running = [instance["InstanceType"] for page in pages for reservation in page["Reservations"]
               for instance in reservation["Instances"] if _standard(instance["InstanceType"])]
    wanted = [node_type] * config["node_min_size"] + ([bastion.INSTANCE_TYPE] if config["create_bastion"] else [])
    vcpus = {t["InstanceType"]: t["VCpuInfo"]["DefaultVCpus"]
             for t in ec2.describe_instance_types(InstanceTypes=sorted(set(running + wanted)))["InstanceTypes"]}
    used, needed = sum(vcpus[t] for t in running), sum(vcpus[t] for t in wanted)
    limit = _quota_value(aws, VCPU_QUOTA)
    if limit is None:
        return Check(name, PASS, f"{used} in use, apply needs {needed}; the limit is not reported for this account")
    if used + needed > limit:
        return Check(name, FAIL, f"{used} of {limit:.0f} vCPUs in use and apply needs {needed} "
                     f"({config['node_min_size']} x {node_type})",
                     f"request an increase (Service Quotas {VCPU_QUOTA.service} {VCPU_QUOTA.code}), or lower "
                     "node_min_size or node_instance_type")
    return Check(name, PASS, f"{used} of {limit:.0f} vCPUs in use, apply needs {needed}")


def _leftovers(config: Config, aws: Aws, state: StateStore) -> list[Check]:
    known = {value for record in state.all_steps().values()
             for value in record.get("physical_ids", {}).values()}
    found = []
    paginator = aws.client("resourcegroupstaggingapi").get_paginator("get_resources")
    for page in paginator.paginate(TagFilters=[{"Key": DEPLOYMENT_TAG, "Values": [config.deployment]}]):
        for resource in page["ResourceTagMappingList"]:
            tags = {t["Key"]: t["Value"] for t in resource.get("Tags", [])}
            if not any(identifier in known for identifier in _identifiers(resource["ResourceARN"])):
                found.append((tags.get(STEP_TAG, "?"), resource["ResourceARN"]))
    if not found:
        return [Check("leftovers", PASS, "nothing tagged with this deployment is unknown to the state")]
    enabled = {name for name, cls in steps.REGISTRY.items() if cls.enabled(config)}
    adopt = sorted(arn for step, arn in found if step in enabled)
    orphan = sorted(f"{arn} (step {step})" for step, arn in found if step not in enabled)
    checks = []
    if adopt:
        checks.append(Check("leftovers", WARN, f"{len(adopt)} resource(s) from an earlier run are not in the state; "
                            "apply adopts them: " + ", ".join(adopt)))
    if orphan:
        checks.append(Check("leftovers", WARN, f"{len(orphan)} resource(s) belong to steps this config does not "
                            "enable: " + ", ".join(orphan), "run `destroy` (it removes them too) or delete them"))
    return checks


def _identifiers(arn: str) -> set[str]:
    """The IDs an ARN may be recorded under: vpc-123, a DB name, a bucket, a parameter name."""
    resource = arn.split(":", 5)[-1]
    ids = {arn, resource, resource.split("/")[-1], resource.split(":")[-1]}
    if resource.startswith("parameter/"):
        ids.add(resource[len("parameter"):])
    return ids


def _certificate(config: Config, aws: Aws) -> Check:
    arn = config["acm_certificate_arn"]
    region = arn.split(":")[3]
    if region != config["region"]:
        return Check("certificate", FAIL, f"{arn} is in {region}; the ALB is in {config['region']}",
                     f"request or import the certificate in {config['region']}")
    try:
        cert = aws.client("acm").describe_certificate(CertificateArn=arn)["Certificate"]
    except ClientError as exc:
        return Check("certificate", FAIL, f"{arn}: {exc.response['Error']['Code']}",
                     "check acm_certificate_arn (account and id)")
    if cert["Status"] != "ISSUED":
        return Check("certificate", FAIL, f"{arn} is {cert['Status']}",
                     "finish its DNS validation, or leave acm_certificate_arn empty to have one requested")
    names = set(cert.get("SubjectAlternativeNames", [])) | {cert["DomainName"]}
    domain = config["langsmith_domain"]
    if domain and not _covers(names, domain):
        return Check("certificate", FAIL, f"{arn} covers {', '.join(sorted(names))}, not {domain}",
                     "use a certificate for the domain, or change langsmith_domain")
    return Check("certificate", PASS, f"{arn} ISSUED for {', '.join(sorted(names))}")


def _covers(names: set[str], domain: str) -> bool:
    parent = domain.split(".", 1)[-1]
    return domain in names or f"*.{parent}" in names
