"""Preflight: read-only, fails before anything is created, and says how to fix each problem."""

from __future__ import annotations

import json

import boto3
from botocore.awsrequest import AWSResponse

from tests.census import census
from tests.conftest import REGION, run_cli, write_config
from tests.faults import AwsCalls, install_session_hooks

DEPLOYMENT = "acme-test"


def test_preflight_on_a_clean_account_passes_and_changes_nothing(aws, tmp_path, monkeypatch):
    config = write_config(tmp_path / "config.yaml")
    with AwsCalls() as seen:
        result = run_cli("preflight", config)
    assert result.code == 0, result
    assert "account 123456789012" in result.out and "us-east-1a, us-east-1b" in result.out
    assert "quota VPCs per Region: 1 of 5 in use, apply needs 1" in result.out
    assert "Preflight passed." in result.out
    assert seen.calls and seen.mutating == []


def test_quota_exhausted_stops_apply_before_anything_is_created(aws, tmp_path):
    ec2 = boto3.client("ec2", region_name=REGION)
    for number in range(4):  # with the default VPC, 5 of the 5 allowed
        ec2.create_vpc(CidrBlock=f"10.{100 + number}.0.0/16")
    made_by_the_test = census()
    config = write_config(tmp_path / "config.yaml")
    preflight = run_cli("preflight", config)
    assert preflight.code == 1
    assert "FAIL    quota VPCs per Region: 5 of 5 in use and apply needs 1" in preflight.out
    assert "request an increase (Service Quotas vpc L-F678F1CE)" in preflight.out
    apply = run_cli("apply", config, "--yes")
    assert apply.code == 1 and "stopped by preflight" in apply.out
    assert census() == made_by_the_test


def test_leftovers_are_offered_for_adoption_or_named_for_clean_up(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    assert "nothing tagged with this deployment is unknown" in run_cli("preflight", config).out
    (tmp_path / "state" / f"{DEPLOYMENT}.json").unlink()
    adopt = run_cli("preflight", config)
    assert adopt.code == 0 and "apply adopts them" in adopt.out and ":vpc/vpc-" in adopt.out
    in_cluster = write_config(tmp_path / "in-cluster.yaml", redis_source="in-cluster")
    named = run_cli("preflight", in_cluster)
    assert "replicationgroup:acme-test-redis (step redis)" in named.out and "run `destroy`" in named.out


def test_missing_credentials_fail_with_the_fix(aws, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    result = run_cli("preflight", write_config(tmp_path / "config.yaml"))
    assert result.code == 1 and "FAIL    credentials" in result.out and "AWS_PROFILE" in result.out


def test_a_region_with_one_zone_is_refused(aws, tmp_path, monkeypatch):
    def one_zone(model, **_):
        if model.name == "DescribeAvailabilityZones":
            return AWSResponse("https://ec2", 200, {}, None), {
                "AvailabilityZones": [{"ZoneName": "us-east-1a", "State": "available"}]}
        return None
    install_session_hooks(monkeypatch, **{"before-call.ec2.DescribeAvailabilityZones": one_zone})
    result = run_cli("preflight", write_config(tmp_path / "config.yaml"))
    assert result.code == 1 and "1 usable zone(s)" in result.out and "choose another region" in result.out


def test_a_brought_certificate_must_be_issued_in_region_and_cover_the_domain(aws, tmp_path, monkeypatch):
    from moto import settings  # the simulated AWS runs in this process: keep this certificate pending
    monkeypatch.setattr(settings, "ACM_VALIDATION_WAIT", 3600)
    acm = boto3.client("acm", region_name=REGION)
    pending = acm.request_certificate(DomainName="ls.example.com", ValidationMethod="DNS")["CertificateArn"]
    config = write_config(tmp_path / "config.yaml", tls_certificate_source="acm", langsmith_domain="ls.example.com",
                          acm_certificate_arn=pending)
    result = run_cli("preflight", config)
    assert result.code == 1 and "PENDING_VALIDATION" in result.out and "finish its DNS validation" in result.out
    elsewhere = pending.replace(REGION, "eu-west-1")
    config = write_config(tmp_path / "config.yaml", tls_certificate_source="acm", langsmith_domain="ls.example.com",
                          acm_certificate_arn=elsewhere)
    assert "the ALB is in us-east-1" in run_cli("preflight", config).out


def test_preflight_json_reports_each_check(aws, tmp_path):
    result = run_cli("preflight", write_config(tmp_path / "config.yaml"), "--json")
    checks = [json.loads(line) for line in result.out.splitlines()]
    assert {c["check"] for c in checks} >= {"credentials", "availability zones", "leftovers"}
    assert all(c["outcome"] == "ok" for c in checks)
