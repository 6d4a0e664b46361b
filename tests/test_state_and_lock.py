"""The state file and the lock: concurrent runs, dead holders, corrupt files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from tests.census import census
from tests.conftest import run_cli, write_config

DEPLOYMENT = "acme-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hold_lock(state_path: str) -> subprocess.Popen:
    """Another live process holding the deployment's lock, as a second operator would."""
    code = ("import sys, time; from provisioner.state import FileLock; "
            f"FileLock({state_path!r}, 'run-other', 'apply').acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_concurrent_apply_gets_the_lock_error_and_state_stays_valid(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    state_path = tmp_path / "state" / f"{DEPLOYMENT}.json"
    before = state_path.read_text()
    holder = hold_lock(str(state_path))
    try:
        result = run_cli("apply", config, "--yes")
        assert result.code == 1
        assert "locked by apply" in result.err and f"pid {holder.pid}" in result.err and "run-other" in result.err
        assert run_cli("destroy", config, "--yes").code == 1
    finally:
        holder.kill()
        holder.wait()
    assert state_path.read_text() == before
    assert json.loads(before)["format_version"] == 1
    assert census() != {}


def test_lock_left_by_a_dead_run_is_taken_over(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    state_path = tmp_path / "state" / f"{DEPLOYMENT}.json"
    holder = hold_lock(str(state_path))
    holder.kill()
    holder.wait()
    assert os.path.exists(f"{state_path}.lock")
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert not os.path.exists(f"{state_path}.lock")


def test_state_file_is_private_versioned_and_records_each_step(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    path = tmp_path / "state" / f"{DEPLOYMENT}.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    state = json.loads(path.read_text())
    assert state["format_version"] == 1 and state["deployment"] == DEPLOYMENT
    postgres = state["steps"]["postgres"]
    assert postgres["status"] == "created" and postgres["requires"] == ["secrets", "vpc"]
    assert postgres["physical_ids"]["db_instance"] == "acme-test-pg"
    assert postgres["started_at"] <= postgres["finished_at"] and postgres["last_error"] is None
    assert postgres["outputs"]["port"] == 5432
    assert [name for name in os.listdir(path.parent) if name.endswith(".tmp")] == []


def test_corrupt_state_is_refused_and_never_overwritten(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    path = tmp_path / "state" / f"{DEPLOYMENT}.json"
    path.parent.mkdir()
    path.write_text('{"format_version": 1, "steps": {"vpc": ')
    for command in (["apply", config, "--yes"], ["destroy", config, "--yes"], ["status", config], ["plan", config]):
        result = run_cli(*command)
        assert result.code == 2, (command, result)
        assert "corrupt" in result.err and "state/acme-test.json" in result.err
    assert path.read_text() == '{"format_version": 1, "steps": {"vpc": '
    assert census() == {}


def test_unknown_state_version_is_refused(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    path = tmp_path / "state" / f"{DEPLOYMENT}.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"format_version": 99, "deployment": DEPLOYMENT, "steps": {}}))
    result = run_cli("apply", config, "--yes")
    assert result.code == 2 and "format version 99" in result.err
    assert json.loads(path.read_text())["format_version"] == 99


def test_state_of_another_deployment_is_refused(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format_version": 1, "deployment": "zeta-prod", "serial": 3, "steps": {}}))
    result = run_cli("apply", config, "--yes", "--state", str(other))
    assert result.code == 2 and "zeta-prod" in result.err


def test_state_path_option_and_config_key(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml", state={"backend": "local", "path": str(tmp_path / "s.json")})
    assert run_cli("apply", config, "--yes", "--parallelism", "2").code == 0
    assert json.loads((tmp_path / "s.json").read_text())["steps"]["vpc"]["status"] == "created"
    custom = tmp_path / "elsewhere.json"
    assert run_cli("status", config, "--state", str(custom)).out.startswith("no state")
