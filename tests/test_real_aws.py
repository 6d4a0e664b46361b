"""Deterministic real-AWS behaviour moto does not show (issue 12): each test makes mock AWS
answer as AWS does (an answer injected through botocore's hooks, or a state AWS can be in)
and checks what the user would see."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from provisioner import waiting
from tests.census import census
from tests.conftest import REGION, run_cli, write_config
from tests.faults import SimulatedCrash, install_session_hooks
from tests.sweep import limit_to

DEPLOYMENT = "acme-test"
DOMAIN = "langsmith.example.com"
SSO_PATH = "/aws-reserved/sso.amazonaws.com/us-east-1/"
SSO_ROLE = "AWSReservedSSO_AdministratorAccess_0123456789abcdef"
TOKEN_PARAMS = {"CreateNatGateway": "ClientToken", "CreateVpcEndpoint": "ClientToken", "RunInstances": "ClientToken",
                "RequestCertificate": "IdempotencyToken", "CreateHostedZone": "CallerReference",
                "CreateCluster": "clientRequestToken", "CreateNodegroup": "clientRequestToken",
                "CreateAddon": "clientRequestToken"}


def client(service):
    return boto3.client(service, region_name=REGION)


def answer(code: str, message: str, status: int = 400):
    """What botocore makes of an AWS error answer."""
    return AWSResponse("https://aws", status, {}, None), {
        "Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


class FirstAnswers:
    """AWS's answer to the first call of each given operation; later calls reach mock AWS."""

    def __init__(self, answers: dict):
        self.answers, self.answered = dict(answers), []

    def __call__(self, model, **_):
        if model.name in self.answers:
            self.answered.append(model.name)
            return answer(*self.answers.pop(model.name))
        return None


class Tokens:
    """The idempotency token each create call carries, in call order."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def __call__(self, params, model, **_):
        if model.name in TOKEN_PARAMS:
            self.sent.append((model.name, params.get(TOKEN_PARAMS[model.name])))


def zones_with_a_refused_one(model, **_):
    """An account where us-east-1a is use1-az3, a zone EKS refuses (names map to IDs per account)."""
    if model.name != "DescribeAvailabilityZones":
        return None
    ids = {"a": "use1-az3", "b": "use1-az1", "c": "use1-az2", "d": "use1-az4"}
    return AWSResponse("https://ec2", 200, {}, None), {"AvailabilityZones": [
        {"ZoneName": f"us-east-1{letter}", "ZoneId": zone_id, "State": "available",
         "OptInStatus": "opt-in-not-required"} for letter, zone_id in ids.items()]}


def state():
    return json.loads(open(f"state/{DEPLOYMENT}.json").read())


@pytest.fixture
def sso_operator(aws, monkeypatch):
    return sign_in_through_identity_center(monkeypatch)


def sign_in_through_identity_center(monkeypatch) -> str:
    """The operator signs in through IAM Identity Center: an assumed role whose role has a path."""
    iam = client("iam")
    role = iam.create_role(RoleName=SSO_ROLE, Path=SSO_PATH, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                                                "Action": "sts:AssumeRole"}]}))["Role"]
    credentials = client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="jane@example.com")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    return role["Arn"]


def test_a_teammate_who_did_not_create_the_cluster_gets_an_entry_of_their_own(aws, tmp_path, monkeypatch):
    """EKS gives only the cluster's creator access; a teammate signing in through IAM Identity
    Center who applies later needs an entry for their role, named with its path."""
    monkeypatch.setattr(waiting, "TIME_SCALE", 0.01)
    limit_to(monkeypatch, {"vpc", "eks"})
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    creator = client("sts").get_caller_identity()["Arn"]
    teammate = sign_in_through_identity_center(monkeypatch)
    assert run_cli("apply", config, "--yes").code == 0
    eks = boto3.session.Session(region_name=REGION).client("eks")
    assert sorted(eks.list_access_entries(clusterName=f"{DEPLOYMENT}-eks")["accessEntries"]) == sorted(
        [creator, teammate])
    policies = eks.list_associated_access_policies(clusterName=f"{DEPLOYMENT}-eks", principalArn=teammate)
    assert [(p["policyArn"].rsplit("/", 1)[1], p["accessScope"]["type"])
            for p in policies["associatedAccessPolicies"]] == [("AmazonEKSClusterAdminPolicy", "cluster")]


def test_apply_destroy_apply_as_real_aws_answers(sso_operator, tmp_path, monkeypatch, kube_server):
    """SSO operator, a refused zone, DNS, a bastion; a destroy where AWS answers the way it does
    right after detaches and deletes; then an apply again in the same account."""
    monkeypatch.setattr(waiting, "TIME_SCALE", 0.01)
    operator_only = census()  # the SSO operator's own role, made by the fixture
    tokens = Tokens()
    faults = FirstAnswers({})
    install_session_hooks(monkeypatch, **{"before-call.ec2.DescribeAvailabilityZones": zones_with_a_refused_one,
                                          "before-call": faults, "provide-client-params": tokens})
    config = write_config(tmp_path / "config.yaml", langsmith_domain=DOMAIN, create_bastion=True)
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result

    # B1: the access entry names the role with its path, as EKS requires
    operator = boto3.session.Session(region_name=REGION).client("sts")  # the default session cached other keys
    assert operator.get_caller_identity()["Arn"].startswith(f"arn:aws:sts::123456789012:assumed-role/{SSO_ROLE}/")
    entries = client("eks").list_access_entries(clusterName=f"{DEPLOYMENT}-eks")["accessEntries"]
    assert sso_operator in entries and sso_operator == f"arn:aws:iam::123456789012:role{SSO_PATH}{SSO_ROLE}"
    # B8: no subnet in the zone EKS refuses
    subnets = client("ec2").describe_subnets(Filters=[{"Name": "tag:provisioner:deployment",
                                                        "Values": [DEPLOYMENT]}])["Subnets"]
    assert {s["AvailabilityZone"] for s in subnets} == {"us-east-1b", "us-east-1c", "us-east-1d"}
    # the hosted zone carries our tags
    route53 = client("route53")
    zone_id = state()["steps"]["dns"]["physical_ids"]["hosted_zone"]
    tags = {t["Key"]: t["Value"] for t in route53.list_tags_for_resource(
        ResourceType="hostedzone", ResourceId=zone_id)["ResourceTagSet"]["Tags"]}
    assert tags["provisioner:deployment"] == DEPLOYMENT and tags["Name"] == f"{DEPLOYMENT}-zone"
    # B15: every create carried a random token, dropped from the state once the create was confirmed
    first = dict(tokens.sent)
    assert set(first) == set(TOKEN_PARAMS) and all(len(token) == 32 for token in first.values())
    assert all(not step.get("client_tokens") for step in state()["steps"].values())
    # the control-plane log group EKS made
    log_group = f"/aws/eks/{DEPLOYMENT}-eks/cluster"
    assert client("logs").describe_log_groups(logGroupNamePrefix=log_group)["logGroups"]

    # a certificate of ours that failed validation in an earlier attempt (ACM keeps it)
    acm = client("acm")
    failed = acm.request_certificate(DomainName=DOMAIN, ValidationMethod="DNS", Tags=[
        {"Key": "provisioner:deployment", "Value": DEPLOYMENT}])["CertificateArn"]
    from moto.acm.models import acm_backends
    acm_backends["123456789012"][REGION]._certificates[failed].status = "FAILED"
    # ClickHouse's volume: released by the EBS CSI driver a moment after its namespace is gone
    pv_kind = kube_server.cluster_kind("persistentvolumes")
    with kube_server.cluster.lock:
        kube_server.cluster.create(pv_kind, "", {"metadata": {"name": "pvc-clickhouse"}, "spec": {
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-0123456789abcdef0"},
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": "langsmith", "name": "data-langsmith-clickhouse-0"}}})

    def csi_driver():
        while kube_server.cluster.find("", "namespaces", "", "langsmith"):
            time.sleep(0.05)
        time.sleep(3)
        with kube_server.cluster.lock:
            kube_server.cluster.delete(pv_kind, "", "pvc-clickhouse")
    threading.Thread(target=csi_driver, daemon=True).start()
    volume_at_addon_delete = []

    def addon_delete(model, **_):
        volume_at_addon_delete.append(kube_server.cluster.find("", "persistentvolumes", "", "pvc-clickhouse"))
    def ghost_nodegroup(parsed, **_):  # a node group deleted by someone else between list and describe
        parsed.setdefault("nodegroups", []).append("deleted-meanwhile")
    install_session_hooks(monkeypatch, **{"before-call.eks.DeleteAddon": addon_delete,
                                          "after-call.eks.ListNodegroups": ghost_nodegroup})

    faults.answers.update({  # each as AWS answers it right after the change before
        "DetachInternetGateway": ("DependencyViolation", "Network vpc-0a1b has some mapped public address(es). "
                                  "Please unmap those public address(es) before detaching the gateway."),
        "DeleteRole": ("DeleteConflict", "Cannot delete entity, must detach all policies first.", 409),
        "DeleteInstanceProfile": ("DeleteConflict", "Cannot delete entity, must remove roles from instance "
                                  "profile first.", 409),
        "ModifyDBInstance": ("InvalidDBInstanceState", "Database instance is not in available state."),
        "DeleteDBInstance": ("InvalidParameterCombination", "Cannot delete protected DB Instance, please disable "
                             "deletion protection and try again."),
    })
    result = run_cli("destroy", config, "--yes")
    assert result.code == 0, result
    assert sorted(faults.answered) == sorted(["DetachInternetGateway", "DeleteRole", "DeleteInstanceProfile",
                                              "ModifyDBInstance", "DeleteDBInstance"])
    assert census() == operator_only
    assert client("rds").describe_db_snapshots()["DBSnapshots"]  # the final snapshot still kept
    assert client("logs").describe_log_groups(logGroupNamePrefix=log_group)["logGroups"] == []
    assert [arn for arn in (c["CertificateArn"] for c in acm.list_certificates(CertificateStatuses=[
        "FAILED", "ISSUED", "PENDING_VALIDATION"])["CertificateSummaryList"])] == []
    assert volume_at_addon_delete == [None]  # the driver outlived its volumes

    # Route 53 never takes a CallerReference twice: the apply after a destroy needs new tokens
    tokens.sent.clear()
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    second = dict(tokens.sent)
    assert set(second) == set(TOKEN_PARAMS) and not set(second.values()) & set(first.values())


def test_a_create_resent_after_a_crash_carries_the_token_written_before_it(aws, tmp_path, monkeypatch):
    """The process dies while CreateNatGateway is in flight: the state already holds its token,
    and the resumed run sends the same one (AWS then answers with the NAT the first call made)."""
    tokens = Tokens()
    install_session_hooks(monkeypatch, **{"provide-client-params": tokens})
    config = write_config(tmp_path / "config.yaml")

    def die_sending_the_nat(model, **_):
        raise SimulatedCrash("killed while CreateNatGateway was in flight")
    with monkeypatch.context() as patch:
        install_session_hooks(patch, **{"before-call.ec2.CreateNatGateway": die_sending_the_nat})
        with pytest.raises(SimulatedCrash):
            run_cli("apply", config, "--yes", "--parallelism", "1")
    written = state()["steps"]["vpc"]["client_tokens"]["nat_gateway"]
    assert ("CreateNatGateway", written) in tokens.sent
    assert run_cli("apply", config, "--yes").code == 0
    assert [token for op, token in tokens.sent if op == "CreateNatGateway"] == [written, written]
    assert "nat_gateway" not in state()["steps"]["vpc"].get("client_tokens", {})
    assert [kind for kind, _ in census().elements() if kind == "nat-gateway"] == ["nat-gateway"]


def test_bring_your_own_vpc_keeps_its_s3_endpoint(aws, tmp_path):
    """A route table holds one route per prefix list (a second S3 endpoint on it fails with
    RouteAlreadyExists): the VPC's own endpoint serves the bucket, and the policy names it."""
    ec2 = client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.50.{i}.0/24", AvailabilityZone=f"{REGION}{az}")[
        "Subnet"]["SubnetId"] for i, az in enumerate("abab")]
    tables = [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]]
    theirs = ec2.create_vpc_endpoint(VpcEndpointType="Gateway", VpcId=vpc_id, ServiceName=f"com.amazonaws.{REGION}.s3",
                                     RouteTableIds=tables)["VpcEndpoint"]["VpcEndpointId"]
    config = write_config(tmp_path / "config.yaml", create_vpc=False, vpc_id=vpc_id,
                          private_subnets=subnets[:2], public_subnets=subnets[2:])
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    assert [e["VpcEndpointId"] for e in endpoints] == [theirs]
    bucket = state()["steps"]["storage"]["outputs"]["bucket_name"]
    policy = json.loads(client("s3").get_bucket_policy(Bucket=bucket)["Policy"])
    assert {json.dumps(s["Condition"]) for s in policy["Statement"] if "aws:SourceVpce" in json.dumps(s)} == {
        json.dumps({"StringEquals": {"aws:SourceVpce": theirs}}),
        json.dumps({"StringNotEquals": {"aws:SourceVpce": theirs}})}
    assert run_cli("verify", config).code == 0
    assert run_cli("destroy", config, "--yes").code == 0
    assert [e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints(VpcEndpointIds=[theirs])["VpcEndpoints"]
            if e["State"].lower() == "available"] == [theirs]


def test_preflight_checks_the_vcpu_quota_and_skips_refused_zones(aws, tmp_path, monkeypatch):
    """A new account's On-Demand vCPU quota below 3 x m5.4xlarge (48 vCPUs)."""
    def quota(model, params, **_):
        if json.loads(params["body"]).get("QuotaCode") == "L-1216C47A":
            return AWSResponse("https://servicequotas", 200, {}, None), {"Quota": {"Value": 32.0}}
        return None
    install_session_hooks(monkeypatch, **{"before-call.service-quotas.GetServiceQuota": quota,
                                          "before-call.ec2.DescribeAvailabilityZones": zones_with_a_refused_one})
    result = run_cli("preflight", write_config(tmp_path / "config.yaml"))
    assert result.code == 1, result
    assert "0 of 32 vCPUs in use and apply needs 48 (3 x m5.4xlarge)" in result.out
    assert "Service Quotas ec2 L-1216C47A" in result.out
    assert "us-east-1b, us-east-1c, us-east-1d (skipped, EKS refuses them: us-east-1a (use1-az3))" in result.out
    smaller = run_cli("preflight", write_config(tmp_path / "config.yaml", node_instance_type="m5.xlarge"))
    assert smaller.code == 0 and "0 of 32 vCPUs in use, apply needs 12" in smaller.out


def test_log_delivery_accounts_cover_every_region_and_partition():
    """The ELB accounts of terraform-provider-aws internal/service/elb/service_account_data_source.go."""
    from steps.alb_access_logs import ELB_ACCOUNTS, bucket_policy
    for region, account in {"af-south-1": "098369216593", "ap-east-1": "754344448648",
                            "ap-northeast-3": "383597477331", "ap-southeast-3": "589379963580",
                            "eu-south-1": "635631232127", "me-south-1": "076674570225"}.items():
        assert ELB_ACCOUNTS[region] == account
        assert bucket_policy("b", "111122223333", region)["Statement"][1]["Principal"] == {
            "AWS": f"arn:aws:iam::{account}:root"}
    gov = bucket_policy("b", "111122223333", "us-gov-west-1")["Statement"]
    assert gov[1]["Principal"] == {"AWS": "arn:aws-us-gov:iam::048591011584:root"}
    assert gov[0]["Resource"] == "arn:aws-us-gov:s3:::b/alb/AWSLogs/111122223333/*"
    china = bucket_policy("b", "111122223333", "cn-north-1")["Statement"]
    assert china[1]["Principal"] == {"AWS": "arn:aws-cn:iam::638102146993:root"}
    assert len(bucket_policy("b", "111122223333", "ap-southeast-5")["Statement"]) == 1  # service principal only


def test_refused_endpoint_deletes_fail_at_once_naming_aws_answer(aws, monkeypatch):
    """DeleteVpcEndpoints answers per endpoint in Unsuccessful rather than raising; read it,
    instead of waiting ten minutes for an endpoint AWS said it would not delete."""
    from provisioner.errors import StepError
    from provisioner.reaping import delete_endpoints_by_id
    ec2 = client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    endpoint = ec2.create_vpc_endpoint(VpcEndpointType="Gateway", VpcId=vpc_id,
                                       ServiceName=f"com.amazonaws.{REGION}.s3")["VpcEndpoint"]["VpcEndpointId"]

    def refused(model, **_):
        return AWSResponse("https://ec2", 200, {}, None), {"Unsuccessful": [{"ResourceId": endpoint, "Error": {
            "Code": "OperationNotPermitted", "Message": "The endpoint is managed by another service."}}]}
    ec2.meta.events.register("before-call.ec2.DeleteVpcEndpoints", refused)
    started = time.monotonic()
    with pytest.raises(StepError, match=f"{endpoint}: OperationNotPermitted The endpoint is managed"):
        delete_endpoints_by_id(ec2, [endpoint], lambda _: None)
    assert time.monotonic() - started < 5


def test_route53_and_waf_absent_answers_count_as_absent():
    """Their codes carry no NotFound (botocore route53 and wafv2 models)."""
    import botocore.session
    from botocore.exceptions import ClientError

    from provisioner.aws import not_found
    session = botocore.session.get_session()
    assert any(s.name == "NoSuchHostedZone" for s in session.get_service_model("route53").error_shapes)
    assert any(s.name == "WAFNonexistentItemException" for s in session.get_service_model("wafv2").error_shapes)
    for code in ("NoSuchHostedZone", "WAFNonexistentItemException"):
        assert not_found(ClientError({"Error": {"Code": code, "Message": "gone"}}, "Get"))
