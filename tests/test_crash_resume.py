"""Crash the run after every single mutating call of a full apply, resume, and check
that exactly the resources of a clean run exist: no duplicates, nothing missing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tests.census import census, inventory
from tests.conftest import fresh_account, run_cli, write_config
from tests.faults import run_until_crash
from tests.sweep import DEPLOYMENT, recorded_ids, sweep


def test_resume_after_a_crash_at_every_change_creates_no_duplicates(aws, tmp_path, monkeypatch, kube_server):
    config = write_config(tmp_path / "config.yaml")
    covered = sweep(config, aws, kube_server, monkeypatch, tmp_path / "state" / f"{DEPLOYMENT}.json")
    assert covered["vpc"][0] > 10 and covered["eks"][0] > 10 and covered["k8s_bootstrap"][1] >= 11
    assert all(covered[s][0] > 0 for s in ("secrets", "postgres", "redis", "storage", "alb"))
    assert covered["langsmith"][1] > 0 and covered["ingress"][1] > 0


def test_resume_after_a_crash_keeps_what_the_state_recorded(aws, kube_server, tmp_path, monkeypatch):
    """Whatever a run made before its last call is in the state when it dies (IDs are
    written as each create returns, not when the step ends), and resume reuses them.
    Crashes after calls 6 to 12 (the vpc step at work) are compared with the account one
    call earlier, by the census's stable names."""
    config = write_config(tmp_path / "config.yaml")
    state_path = tmp_path / "state" / f"{DEPLOYMENT}.json"
    crashes = []
    for n in range(6, 13):
        fresh_account(aws, kube_server, monkeypatch, tmp_path)
        run_until_crash(monkeypatch, n, "apply", config, "--yes", "--parallelism", "1")
        crashes.append((inventory(), recorded_ids(state_path)))
    state = json.loads(state_path.read_text())
    recorded = {key: value for step in state["steps"].values() for key, value in step["physical_ids"].items()}
    assert run_cli("apply", config, "--yes", "--parallelism", "1").code == 0
    finished = inventory()
    recorded_kinds = {finished.ids[i] for i in recorded_ids(state_path) if i in finished.ids}
    late = []
    for (earlier, _), (now, in_state) in zip(crashes, crashes[1:]):
        for entry in recorded_kinds & set(earlier) & set(now):
            if not {i for i, e in now.ids.items() if e == entry} & in_state:
                late.append(entry)
    assert late == [], "made before the last call, yet not in the state"
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
