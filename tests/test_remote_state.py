"""The S3 state backend and its lease lock, against moto (conditional writes behave as in AWS there)."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest

from provisioner.errors import LockHeld
from provisioner.remote_state import S3Lease, StateFenced
from tests.census import census
from tests.conftest import REGION, run_cli, write_config
from tests.faults import AwsCalls, install_session_hooks, run_until_crash

DEPLOYMENT = "acme-test"
BUCKET = "acme-terraform-state"
KEY = f"provisioner/{DEPLOYMENT}.json"


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


def s3_config(tmp_path, **state):
    return write_config(tmp_path / "config.yaml", state={"backend": "s3", "bucket": BUCKET, **state})


def read_state(s3) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read())


def test_apply_keeps_the_state_in_s3_with_a_version_per_write(s3, tmp_path):
    config = s3_config(tmp_path)
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert not (tmp_path / "state").exists()
    state = read_state(s3)
    assert {step["status"] for step in state["steps"].values()} == {"created"}
    versions = [v for v in s3.list_object_versions(Bucket=BUCKET, Prefix=KEY)["Versions"] if v["Key"] == KEY]
    assert len(versions) == state["serial"] > 10
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=KEY + ".lock")  # released
    assert "postgres      created" in run_cli("status", config).out
    assert json.loads(run_cli("outputs", config, "--json").out)["vpc"]["vpc_id"].startswith("vpc-")
    again = run_cli("apply", config, "--yes")
    assert again.code == 0 and "0 mutating" in again.out


def test_refusing_without_a_terminal_reads_nothing_from_s3(s3, tmp_path, monkeypatch):
    with AwsCalls() as seen:
        result = run_cli("apply", s3_config(tmp_path))
    assert result.code == 2 and "--yes" in result.err
    assert seen.calls == []


def test_missing_or_unversioned_state_bucket_is_refused(aws, tmp_path):
    config = s3_config(tmp_path)
    result = run_cli("apply", config, "--yes")
    assert result.code == 2 and "create it with versioning" in result.err
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    made_by_the_test = census()
    result = run_cli("apply", config, "--yes")
    assert result.code == 2 and "versioning off" in result.err
    assert census() == made_by_the_test


def test_many_writers_racing_for_the_lease_get_exactly_one_winner(s3):
    barrier = threading.Barrier(16)
    outcomes, leases = [], []

    def contend(number):
        lease = S3Lease(s3, BUCKET, KEY + ".lock", f"run-{number}", "apply")
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("won")
            leases.append(lease)
        except LockHeld as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("won") == 1
    assert all("locked by apply" in o for o in outcomes if o != "won")
    [winner] = leases
    holder = json.loads(s3.get_object(Bucket=BUCKET, Key=KEY + ".lock")["Body"].read())
    assert holder["run_id"] == winner.info["run_id"]
    winner.release()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=KEY + ".lock")


def test_an_expired_lease_is_taken_over_and_its_old_holder_is_fenced(s3):
    first = S3Lease(s3, BUCKET, KEY + ".lock", "run-first", "apply", lease_seconds=2)
    first.acquire()
    first._stop.set()  # the holder hangs: it no longer renews
    second = S3Lease(s3, BUCKET, KEY + ".lock", "run-second", "apply", lease_seconds=2)
    with pytest.raises(LockHeld):
        second.acquire()
    time.sleep(3.2)
    second.acquire()
    with pytest.raises(StateFenced):
        first.check()
    second.release()


def test_renewal_keeps_a_long_run_holding_its_lease(s3):
    lease = S3Lease(s3, BUCKET, KEY + ".lock", "run-long", "apply", lease_seconds=2)
    lease.acquire()
    deadline = time.monotonic() + 3.5  # longer than the lease: renewals every ~0.7 s keep it alive
    while time.monotonic() < deadline:
        lease.check()  # state writes check the lease all the time, racing the renewals
    lease.check()
    with pytest.raises(LockHeld):
        S3Lease(s3, BUCKET, KEY + ".lock", "run-other", "apply", lease_seconds=2).acquire()
    lease.release()


def test_crash_while_holding_the_lease_then_resume(s3, tmp_path, monkeypatch):
    config = s3_config(tmp_path, lease_seconds=5)
    with monkeypatch.context() as patch:
        # A killed process neither renews nor releases its lease.
        patch.setattr(S3Lease, "release", lambda self: self._stop.set())
        run_until_crash(monkeypatch, 20, "apply", config, "--yes")
    recorded = read_state(s3)
    assert any(step["physical_ids"] for step in recorded["steps"].values())
    blocked = run_cli("apply", config, "--yes")
    assert blocked.code == 1 and "locked by apply" in blocked.err and "lock break" in blocked.err
    resumed = run_cli("apply", config, "--yes", "--lock-timeout", "15")
    assert resumed.code == 0, resumed
    final = read_state(s3)
    assert final["lineage"] == recorded["lineage"] and final["serial"] > recorded["serial"]
    assert max(census().values()) == 1


def test_two_operators_applying_at_once_one_proceeds_the_other_fails_clearly(s3, tmp_path):
    config = s3_config(tmp_path)
    barrier = threading.Barrier(2)
    results = []

    def operator():
        barrier.wait()
        results.append(run_cli("apply", config, "--yes"))

    threads = [threading.Thread(target=operator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.code for r in results)
    assert codes == [0, 1], results
    loser = next(r for r in results if r.code == 1)
    assert "locked by apply" in loser.err
    assert {step["status"] for step in read_state(s3)["steps"].values()} == {"created"}
    assert max(census().values()) == 1


def test_a_run_that_loses_its_lease_stops_before_writing(s3, tmp_path, monkeypatch):
    config = s3_config(tmp_path)
    serial_at_break = []

    def break_lock_midway(model, **_):
        if model.name == "CreateVpc":  # another operator breaks the lock while this run works
            serial_at_break.append(read_state(s3)["serial"])
            assert run_cli("lock", "break", config).code == 0

    with monkeypatch.context() as patch:
        install_session_hooks(patch, **{"after-call": break_lock_midway})
        result = run_cli("apply", config, "--yes", "--parallelism", "1")
    assert result.code == 1
    assert "lost its lease" in result.err
    assert read_state(s3)["serial"] == serial_at_break[0]  # nothing was written after the lease was lost
    assert run_cli("apply", config, "--yes").code == 0


def test_lock_status_and_break(s3, tmp_path):
    config = s3_config(tmp_path)
    assert "unlocked" in run_cli("lock", "status", config).out
    other = S3Lease(s3, BUCKET, KEY + ".lock", "run-other", "destroy")
    other.acquire()
    status = run_cli("lock", "status", config)
    assert "locked by destroy" in status.out and "run-other" in status.out
    assert json.loads(run_cli("lock", "status", config, "--json").out)["holder"]["run_id"] == "run-other"
    broke = run_cli("lock", "break", config)
    assert broke.code == 0 and "destroy" in broke.out
    with pytest.raises(StateFenced):
        other.check()
    assert "unlocked" in run_cli("lock", "status", config).out
    other.release()


def test_local_lock_status_and_break(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert "unlocked" in run_cli("lock", "status", config).out
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / f"{DEPLOYMENT}.json.lock").write_text(json.dumps(
        {"pid": 999999, "host": "elsewhere", "run_id": "run-x", "command": "apply", "started_at": "t"}))
    assert "run-x" in run_cli("lock", "status", config).out
    assert run_cli("apply", config, "--yes").code == 1
    assert run_cli("lock", "break", config).code == 0
    assert run_cli("apply", config, "--yes").code == 0
