"""Each eventual-consistency defect of the real-AWS review, with the simulator answering as
AWS does right after a create or change (provisioner/simulation/realistic.py; the first
two calls using each new thing are refused, whatever the timing, and no throttling here): one apply and one destroy of everything, then what
AWS answered and what exists. Without the handling, the apply or destroy fails."""

from __future__ import annotations

from collections import Counter

import boto3
import pytest

from provisioner import waiting
from provisioner.simulation import aws as simulator, realistic
from tests.census import CALLER, census
from tests.conftest import REGION, fresh_account, run_cli, write_config

DEPLOYMENT = "acme-test"
EVERYTHING = dict(tls_certificate_source="acm", langsmith_domain="ls.example.com", create_waf=True,
                  create_cloudtrail=True, alb_access_logs_enabled=True, create_bastion=True, create_firewall=True)


@pytest.fixture(scope="module")
def world(moto_server, kube_server, tmp_path_factory):
    """Apply then destroy everything with the layer on; what AWS answered in each."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(waiting, "TIME_SCALE", 0.05)
        workdir = tmp_path_factory.mktemp("eventual")
        fresh_account(moto_server, kube_server, patch, workdir)
        realistic.configure(window_seconds=10, not_yet_answers=2, observers=(CALLER,))
        simulator.simulate_latency(0.0005)
        try:
            config = write_config(workdir / "config.yaml", **EVERYTHING)
            applied = run_cli("apply", config, "--yes")
            answered_in_apply = Counter(realistic.ANSWERED)
            facts = _facts() if applied.code == 0 else {}
            counts = census()
            realistic.ANSWERED.clear()
            destroyed = run_cli("destroy", config, "--yes")
            yield {"apply": applied, "apply_answers": answered_in_apply, "facts": facts, "census": counts,
                   "destroy": destroyed, "destroy_answers": Counter(realistic.ANSWERED), "left": census()}
        finally:
            realistic.configure()
            simulator.simulate_latency(0.0)


def _facts() -> dict:
    """What exists after the apply, read from AWS."""
    eks, wafv2, elbv2 = (boto3.client(s, region_name=REGION) for s in ("eks", "wafv2", "elbv2"))
    [lb] = elbv2.describe_load_balancers(Names=[f"{DEPLOYMENT}-alb"])["LoadBalancers"]
    attributes = {a["Key"]: a["Value"] for a in
                  elbv2.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    return {"cluster": eks.describe_cluster(name=f"{DEPLOYMENT}-eks")["cluster"]["status"],
            "addon": eks.describe_addon(clusterName=f"{DEPLOYMENT}-eks", addonName="aws-ebs-csi-driver")["addon"][
                "status"],
            "entries": eks.list_access_entries(clusterName=f"{DEPLOYMENT}-eks")["accessEntries"],
            "waf": wafv2.get_web_acl_for_resource(ResourceArn=lb["LoadBalancerArn"]).get("WebACL", {}).get("Name"),
            "lb_state": lb["State"]["Code"], "access_logs": attributes.get("access_logs.s3.enabled"),
            "trail": boto3.client("cloudtrail", region_name=REGION).get_trail_status(Name=f"{DEPLOYMENT}-trail")[
                "IsLogging"]}


def answered(world, phase: str, service: str, operation: str, code: str) -> bool:
    return world[f"{phase}_answers"][(service, operation, code)] > 0


def test_apply_rides_out_every_not_yet_and_makes_no_duplicate(world):
    assert world["apply"].code == 0, world["apply"]
    assert max(world["census"].values()) == 1  # "not yet" never meant "create another"


def test_eks_cluster_node_group_and_add_on_wait_for_their_new_roles(world):
    """Review B #2 and #4: InvalidParameterException 'could not be assumed' is retried."""
    assert answered(world, "apply", "eks", "CreateCluster", "InvalidParameterException")
    assert answered(world, "apply", "eks", "CreateAddon", "InvalidParameterException")
    assert world["facts"]["cluster"] == "ACTIVE"


def test_a_degraded_add_on_is_still_pending(world):
    """Review B #4: DEGRADED while its IRSA role propagates is waited out, not a failure."""
    assert answered(world, "apply", "eks", "DescribeAddon", "DEGRADED")
    assert world["facts"]["addon"] == "ACTIVE"


def test_traces_bucket_policy_waits_for_the_role_it_names(world):
    """Review B #3: MalformedPolicy 'Invalid principal in policy' is retried."""
    assert answered(world, "apply", "s3", "PutBucketPolicy", "MalformedPolicy")


def test_ec2_reads_and_follow_up_calls_after_a_create_wait(world):
    """Review B #7: Invalid*.NotFound / NatGatewayNotFound for an id just made means not yet."""
    codes = {code for (service, _, code) in world["apply_answers"] if service == "ec2"}
    assert {"InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "NatGatewayNotFound"} <= codes


def test_waf_association_waits_for_the_new_load_balancer(world):
    """Review B #9: the alb step waits for active; WAF not seeing the ALB yet is retried."""
    assert answered(world, "apply", "wafv2", "AssociateWebACL", "WAFUnavailableEntityException")
    assert world["facts"]["lb_state"] == "active" and world["facts"]["waf"] == f"{DEPLOYMENT}-waf"


def test_cloudtrail_waits_for_the_bucket_policy(world):
    """Review B #20: CloudTrail does not see the policy just put (the ALB's log bucket policy is
    put long before its load balancer exists, so log delivery is not refused here)."""
    assert answered(world, "apply", "cloudtrail", "CreateTrail", "InsufficientS3BucketPolicyException")
    assert world["facts"]["trail"] is True and world["facts"]["access_logs"] == "true"


def test_bastion_waits_for_its_instance_profile_and_access_entry_principal(world):
    """RunInstances 'Invalid IAM Instance Profile name' and CreateAccessEntry 'invalid principal'."""
    assert answered(world, "apply", "ec2", "RunInstances", "InvalidParameterValue")
    assert answered(world, "apply", "eks", "CreateAccessEntry", "InvalidParameterException")
    assert any(entry.endswith(f":role/{DEPLOYMENT}-bastion") for entry in world["facts"]["entries"])


def test_destroy_rides_out_in_use_answers_and_leaves_nothing(world):
    """Review B #6 (a deleted bucket policy still denying), #10 (Network Firewall objects still
    in use), #11 (web ACL still associated): destroy waits them out."""
    assert world["destroy"].code == 0, [l for l in world["destroy"].out.splitlines() if " vpc " in l][-6:]
    assert answered(world, "destroy", "s3", "GetBucketPolicy", "stale read")
    assert answered(world, "destroy", "wafv2", "DeleteWebACL", "WAFAssociatedItemException")
    assert answered(world, "destroy", "network-firewall", "DeleteFirewallPolicy", "InvalidOperationException")
    assert world["left"] == {}


def test_a_throttled_call_reads_as_throttling_to_botocore_for_every_protocol(aws):
    """The layer's throttling answer in each protocol must parse to a code botocore's
    standard retry mode retries; one that does not (Route 53 answered in JSON once) fails
    the run instead of being retried."""
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from botocore.retries.standard import ThrottledRetryableChecker
    calls = {"ec2": ("describe_vpcs", {}), "iam": ("list_roles", {}), "s3": ("list_buckets", {}),
             "route53": ("list_hosted_zones", {}), "eks": ("list_clusters", {}), "ssm": ("describe_parameters", {}),
             "elbv2": ("describe_load_balancers", {})}
    realistic.configure(throttle_rate=1.0)
    try:
        for service, (operation, params) in calls.items():
            client = boto3.client(service, region_name=REGION, config=Config(retries={"max_attempts": 1}))
            try:
                getattr(client, operation)(**params)
                raise AssertionError(f"{service} was not throttled")
            except ClientError as error:
                code = error.response["Error"].get("Code")  # what standard retry mode retries: throttling or 5xx
                assert code in ThrottledRetryableChecker._THROTTLED_ERROR_CODES or \
                    error.response["ResponseMetadata"]["HTTPStatusCode"] in (500, 502, 503, 504), (service, error.response)
    finally:
        realistic.configure()
