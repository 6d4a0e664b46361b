"""Day two: changing a running deployment's config and applying again with the same state
converges AWS and the cluster: steps switched off are torn down, data is never deleted
without being told so, and a no-op re-apply afterwards still changes nothing."""

from __future__ import annotations

import io
import json

import boto3

from provisioner.cli import main

from tests.census import census
from tests.conftest import REGION, run_cli, write_config
from tests.faults import CallRecorder, install_session_hooks
from tests.test_cli import Terminal

DEPLOYMENT = "acme-test"
DOMAIN = "langsmith.example.com"


def client(service):
    return boto3.client(service, region_name=REGION)


def reapply_changes_nothing(config, kube_server, monkeypatch) -> None:
    recorder = CallRecorder()
    kube_server.cluster.requests.clear()
    with monkeypatch.context() as patch:
        install_session_hooks(patch, **{"before-call": recorder})
        again = run_cli("apply", config, "--yes")
    assert again.code == 0, again
    assert recorder.mutating == [] and kube_server.cluster.mutations == []


def test_switching_add_ons_off_removes_them_in_reverse_order(aws, tmp_path, kube_server, monkeypatch):
    extra = {"tls_certificate_source": "acm", "langsmith_domain": DOMAIN}
    config = write_config(tmp_path / "config.yaml", create_waf=True, alb_access_logs_enabled=True,
                          create_cloudtrail=True, **extra)
    assert run_cli("apply", config, "--yes").code == 0
    waf = client("wafv2")
    assert len(waf.list_web_acls(Scope="REGIONAL")["WebACLs"]) == 1
    buckets_before = {b["Name"] for b in client("s3").list_buckets()["Buckets"]}

    config = write_config(tmp_path / "config.yaml", **extra)
    plan = run_cli("plan", config, "--json")
    assert plan.code == 0, plan
    actions = {name: entry["action"] for name, entry in json.loads(plan.out).items()}
    assert {name: actions[name] for name in ("waf", "alb_access_logs", "cloudtrail")} == dict.fromkeys(
        ("waf", "alb_access_logs", "cloudtrail"), "delete")
    asked = io.StringIO()
    assert main(["apply", config], stdin=Terminal("no\n"), stdout=asked, stderr=io.StringIO()) == 2
    removing = [line for line in asked.getvalue().splitlines() if line.startswith("remove (no longer enabled")]
    assert removing and all(name in removing[0] for name in ("waf", "alb_access_logs", "cloudtrail"))

    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert waf.list_web_acls(Scope="REGIONAL")["WebACLs"] == []
    assert client("cloudtrail").describe_trails()["trailList"] == []
    [lb] = client("elbv2").describe_load_balancers(Names=[f"{DEPLOYMENT}-alb"])["LoadBalancers"]
    attributes = {a["Key"]: a["Value"] for a in client("elbv2").describe_load_balancer_attributes(
        LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    assert attributes["access_logs.s3.enabled"] == "false"  # the ALB stopped logging before its bucket went
    remaining = {b["Name"] for b in client("s3").list_buckets()["Buckets"]}
    assert {b for b in buckets_before - remaining} and all("traces" not in b for b in buckets_before - remaining)
    assert not any("cloudtrail" in b or "alb-logs" in b for b in remaining)
    state = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())
    assert {state["steps"][n]["status"] for n in ("waf", "alb_access_logs", "cloudtrail")} == {"destroyed"}

    reapply_changes_nothing(config, kube_server, monkeypatch)
    assert run_cli("destroy", config, "--yes").code == 0
    assert census(DEPLOYMENT) == {}


def test_apply_never_deletes_data_unless_told(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    config = write_config(tmp_path / "config.yaml", postgres_source="in-cluster")

    refused = run_cli("apply", config, "--yes")
    assert refused.code == 2, refused
    assert "postgres: the RDS instance and its databases" in refused.err and "--allow-data-loss" in refused.err
    rds = client("rds")
    assert [i["DBInstanceStatus"] for i in rds.describe_db_instances()["DBInstances"]] == ["available"]
    plan = run_cli("plan", config)
    assert "postgres" in plan.out and "delete" in plan.out and "--allow-data-loss" in plan.out

    allowed = run_cli("apply", config, "--yes", "--allow-data-loss")
    assert allowed.code == 0, allowed
    assert rds.describe_db_instances()["DBInstances"] == []
    assert [s["DBSnapshotIdentifier"].startswith(f"{DEPLOYMENT}-pg-final-")
            for s in rds.describe_db_snapshots()["DBSnapshots"]] == [True]
    assert run_cli("destroy", config, "--yes").code == 0
    assert census(DEPLOYMENT) == {}
