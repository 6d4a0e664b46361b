"""Crash the run after every single mutating call of a full apply, resume, and check
that exactly the resources of a clean run exist: no duplicates, nothing missing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tests.census import census
from tests.conftest import run_cli, write_config
from tests.faults import run_until_crash
from tests.sweep import DEPLOYMENT, sweep


def test_resume_after_a_crash_at_every_change_creates_no_duplicates(aws, tmp_path, monkeypatch, kube_server):
    config = write_config(tmp_path / "config.yaml")
    covered = sweep(config, aws, kube_server, monkeypatch, tmp_path / "state" / f"{DEPLOYMENT}.json")
    assert covered["vpc"][0] > 10 and covered["eks"][0] > 10 and covered["k8s_bootstrap"][1] >= 11
    assert all(covered[s][0] > 0 for s in ("secrets", "postgres", "redis", "storage", "alb"))
    assert covered["langsmith"][1] > 0 and covered["ingress"][1] > 0


def test_resume_after_a_crash_keeps_what_the_state_recorded(aws, tmp_path, monkeypatch):
    """The IDs written before the crash are in the state file, and resume reuses them."""
    config = write_config(tmp_path / "config.yaml")
    run_until_crash(monkeypatch, 12, "apply", config, "--yes", "--parallelism", "1")
    state = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())
    recorded = {key: value for step in state["steps"].values() for key, value in step["physical_ids"].items()}
    assert recorded, "IDs are recorded as soon as each create returns"
    assert run_cli("apply", config, "--yes").code == 0
    final = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())
    final_ids = {key: value for step in final["steps"].values() for key, value in step["physical_ids"].items()}
    assert all(final_ids[key] == value for key, value in recorded.items())
    assert all(step["status"] == "created" for step in final["steps"].values())


def test_resume_after_a_real_sigkill_of_the_process(aws, tmp_path):
    """Not a simulated crash: the provisioner process is killed with SIGKILL mid-apply."""
    config = write_config(tmp_path / "config.yaml")
    state_path = tmp_path / "state" / f"{DEPLOYMENT}.json"
    process = subprocess.Popen([sys.executable, "-m", "provisioner", "apply", config, "--yes", "--parallelism", "1"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ids = json.loads(state_path.read_text())["steps"].get("vpc", {}).get("physical_ids", {})
        except (OSError, ValueError):
            ids = {}
        if len(ids) >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert json.loads(state_path.read_text())["format_version"] == 1  # never half-written
    assert (tmp_path / "state" / f"{DEPLOYMENT}.json.lock").exists()  # the dead run's lock
    resumed = run_cli("apply", config, "--yes")
    assert resumed.code == 0, resumed
    after = census()
    assert max(after.values()) == 1
    assert after[("vpc", "acme-test-vpc")] == 1 and after[("db-instance", "acme-test-pg")] == 1
    assert run_cli("verify", config).code == 0
