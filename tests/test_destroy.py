"""Destroy brings the account and the cluster back to exactly what they held before the
apply (a tag-blind census, compared by name), with or without the state file; what went
before what is read from the doubles' own records (the simulated AWS's call log, the
fake cluster's request log), not from our output."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from provisioner.simulation.calls import LOG
from tests.census import census, changes_since, world
from tests.conftest import REGION, run_cli, write_config
from tests.faults import install_session_hooks, run_until_crash
from tests.sweep import limit_to

DEPLOYMENT = "acme-test"


@pytest.fixture
def before(aws, kube_server):
    """The account and the cluster before anything is applied (moto's defaults, a new EKS cluster)."""
    return world(kube_server.cluster)


@pytest.fixture
def applied(before, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    assert len(census()) > 80
    return config


def test_destroy_removes_everything_and_keeps_a_final_snapshot(applied, before, kube_server, tmp_path):
    result = run_cli("destroy", applied, "--yes")
    assert result.code == 0, result
    assert changes_since(before, kube_server.cluster) == {}
    snapshots = boto3.client("rds", region_name=REGION).describe_db_snapshots()["DBSnapshots"]
    assert [s["DBSnapshotIdentifier"].startswith("acme-test-pg-final-") for s in snapshots] == [True]
    state = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())
    from steps import REGISTRY  # destroy visits every step: a disabled one may own leftovers
    assert {name: step["status"] for name, step in state["steps"].items()} == dict.fromkeys(REGISTRY, "destroyed")
    assert all(step["physical_ids"] == {} for step in state["steps"].values())


def test_destroy_without_the_state_file_finds_everything_by_tags(applied, before, kube_server, tmp_path):
    (tmp_path / "state" / f"{DEPLOYMENT}.json").unlink()
    result = run_cli("destroy", applied, "--yes")
    assert result.code == 0, result
    assert changes_since(before, kube_server.cluster) == {}


@pytest.fixture
def storage_applied(aws, tmp_path, monkeypatch):
    """Just the traces bucket and what it stands on."""
    limit_to(monkeypatch, {"vpc", "eks", "storage"})
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    return config


def test_destroy_empties_a_bucket_holding_traces(storage_applied, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    bucket = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())["steps"]["storage"]["outputs"][
        "bucket_name"]
    # moto enforces any Deny on object writes regardless of its condition (see moto-notes), so
    # the endpoint-only policy is lifted to put test objects in from outside the VPC.
    policy = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    s3.delete_bucket_policy(Bucket=bucket)
    for key in ("ttl_s/a", "ttl_l/b", "ttl_l/c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"trace")
    s3.put_bucket_policy(Bucket=bucket, Policy=policy)
    result = run_cli("destroy", storage_applied, "--yes")
    assert result.code == 0, result
    assert "3 object versions deleted" in result.out
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.fixture
def database_only(aws, monkeypatch):
    """Runs see just the database and what it stands on: the snapshot tests are about RDS."""
    limit_to(monkeypatch, {"vpc", "secrets", "postgres"})


@pytest.fixture
def database_applied(database_only, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    return config


def test_skip_final_snapshot_leaves_no_snapshot(database_only, tmp_path):
    config = write_config(tmp_path / "config.yaml", postgres_skip_final_snapshot=True)
    assert run_cli("apply", config, "--yes").code == 0
    assert run_cli("destroy", config, "--yes").code == 0
    assert boto3.client("rds", region_name=REGION).describe_db_snapshots()["DBSnapshots"] == []
    assert census() == {}


def test_destroy_after_a_crashed_apply_leaves_nothing(before, kube_server, tmp_path, monkeypatch):
    config = write_config(tmp_path / "config.yaml")
    run_until_crash(monkeypatch, 30, "apply", config, "--yes")
    assert census() != {}
    assert run_cli("destroy", config, "--yes").code == 0
    assert changes_since(before, kube_server.cluster) == {}


def test_destroy_twice_and_on_an_empty_account_is_harmless(before, kube_server, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    mark = LOG.mark()
    assert run_cli("destroy", config, "--yes").code == 0
    assert [c.operation for c in LOG.since(mark, caller="testing") if c.mutating] == []  # what AWS received
    assert run_cli("destroy", config, "--yes").code == 0
    assert changes_since(before, kube_server.cluster) == {}


def test_destroy_also_removes_steps_the_config_no_longer_enables(before, kube_server, tmp_path, monkeypatch):
    """Switching to in-cluster Redis and then destroying still deletes the ElastiCache group."""
    limit_to(monkeypatch, {"vpc", "secrets", "redis"})
    assert run_cli("apply", write_config(tmp_path / "config.yaml"), "--yes").code == 0
    assert census()[("replication-group", "acme-test-redis")] == 1
    config = write_config(tmp_path / "config.yaml", redis_source="in-cluster")
    assert run_cli("destroy", config, "--yes").code == 0
    assert changes_since(before, kube_server.cluster) == {}


def test_destroy_crash_then_rerun_finishes_the_job(applied, before, kube_server, monkeypatch):
    run_until_crash(monkeypatch, 8, "destroy", applied, "--yes")
    assert run_cli("destroy", applied, "--yes").code == 0
    assert changes_since(before, kube_server.cluster) == {}


class _FrozenClock:
    """Every destroy in the test sees the same second, as two fast destroys can."""
    timezone = __import__("datetime").timezone

    class datetime(__import__("datetime").datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 11, 30, 12, 0, 0, 123456, tzinfo=tz)


def test_two_destroys_in_one_second_keep_both_final_snapshots(database_applied, monkeypatch):
    """The second instance's final snapshot would take the first's name (DBSnapshotAlreadyExists):
    it gets a finer stamp instead, and the first snapshot is untouched."""
    monkeypatch.setattr("steps.postgres.dt", _FrozenClock)
    assert run_cli("destroy", database_applied, "--yes").code == 0
    assert run_cli("apply", database_applied, "--yes").code == 0
    result = run_cli("destroy", database_applied, "--yes")
    assert result.code == 0, result
    snapshots = boto3.client("rds", region_name=REGION).describe_db_snapshots()["DBSnapshots"]
    assert sorted(s["DBSnapshotIdentifier"] for s in snapshots) == [
        "acme-test-pg-final-20261130120000", "acme-test-pg-final-20261130120000123456"]
    assert len({s["DbiResourceId"] for s in snapshots}) == 2


def test_destroy_goes_on_when_its_final_snapshot_was_already_taken(database_applied, monkeypatch):
    """An earlier attempt already kept this instance's snapshot under the name: no second one."""
    monkeypatch.setattr("steps.postgres.dt", _FrozenClock)
    rds = boto3.client("rds", region_name=REGION)
    rds.create_db_snapshot(DBInstanceIdentifier="acme-test-pg", DBSnapshotIdentifier="acme-test-pg-final-20261130120000")
    result = run_cli("destroy", database_applied, "--yes")
    assert result.code == 0, result
    assert "already kept" in result.out
    assert [s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]] == [
        "acme-test-pg-final-20261130120000"]
    assert census() == {}


def _index(entries: list, wanted) -> list[int]:
    return [n for n, entry in enumerate(entries) if wanted(entry)]


def test_destroy_order_as_aws_and_the_cluster_saw_it(before, kube_server, tmp_path, monkeypatch):
    """At the default parallelism: the web ACL is disassociated before it is deleted, every
    listener is gone before the certificate and the zone it uses, the TargetGroupBinding
    is deleted while the load balancer controller that cleans it up still runs, and the
    controller's release goes last."""
    config = write_config(tmp_path / "config.yaml", tls_certificate_source="acm", langsmith_domain="ls.example.com",
                          create_waf=True)
    assert run_cli("apply", config, "--yes").code == 0
    mark = LOG.mark()
    kube_server.cluster.requests.clear()
    # The load balancer takes a moment to reach its listeners, as on AWS: were the certificate's
    # and zone's step not waiting for it, it would try them meanwhile.
    slowed = []
    install_session_hooks(monkeypatch, **{"before-call.elastic-load-balancing-v2.DescribeListeners":
                                          lambda **_: slowed.append(time.sleep(1))})
    assert run_cli("destroy", config, "--yes").code == 0
    assert slowed
    calls = [c.operation for c in LOG.since(mark, caller="testing") if c.mutating and c.succeeded]
    assert calls.count("DisassociateWebACL") == 1 and calls.count("DeleteWebACL") == 1
    assert calls.index("DisassociateWebACL") < calls.index("DeleteWebACL")
    listeners = _index(calls, lambda op: op == "DeleteListener")
    assert len(listeners) == 2 and max(listeners) < calls.index("DeleteCertificate")
    assert max(listeners) < calls.index("DeleteHostedZone")
    # Not even tried before: a retry after an in-use refusal would hide the wrong order above.
    tried = [c.operation for c in LOG.since(mark, caller="testing") if c.mutating]
    last_listener = max(_index(tried, lambda op: op == "DeleteListener"))
    assert last_listener < tried.index("DeleteCertificate") and last_listener < tried.index("DeleteHostedZone")

    deletes = [path for method, path in kube_server.cluster.requests if method == "DELETE"]
    release_records = {path.rsplit("/", 1)[-1].split(".")[4]: n for n, path in enumerate(deletes)
                       if "/secrets/sh.helm.release.v1." in path}
    controller = release_records.pop("aws-load-balancer-controller")
    binding = _index(deletes, lambda path: path.endswith("/targetgroupbindings/langsmith-tgb"))
    assert binding and binding[0] < controller
    assert release_records and all(n < controller for n in release_records.values()), release_records
    assert changes_since(before, kube_server.cluster) == {}
