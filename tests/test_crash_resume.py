"""Crash the run after every single mutating call of a full apply, resume, and check
that exactly the resources of a clean run exist: no duplicates, nothing missing."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time

import networkx as nx
import pytest
import requests

from provisioner import graph
from provisioner.aws import is_mutating
from tests.census import census, cluster_census
from tests.conftest import run_cli, write_config
from tests.faults import (ClusterCrashAfter, CrashAfter, SharedClients, SimulatedCrash, run_until_crash,
                          stop_cluster_calls_after)

DEPLOYMENT = "acme-test"


FULL_GRAPH = graph.build


def limit_to(patch, steps: set[str]) -> None:
    """Runs see only these steps (the product's graph logic is unchanged; only the graph it
    is given is narrowed), so each step's sweep replays just what it needs."""
    patch.setattr(graph, "build", lambda config, for_destroy=False: FULL_GRAPH(config, for_destroy).subgraph(
        steps).copy())


def test_resume_after_a_crash_at_every_change_creates_no_duplicates(aws, tmp_path, monkeypatch, kube_server):
    """One sweep per step: for each step, crash right after each of its mutating AWS calls
    and each of its cluster changes (Kubernetes writes, helm runs); resume; compare AWS and
    the cluster with a clean run. An AWS step is replayed with the steps it builds on from
    an empty account; a cluster step (no AWS change) on top of them, the cluster and the
    state put back to how they were before it."""
    from provisioner import aws as aws_module, config as config_module
    config = write_config(tmp_path / "config.yaml")
    full = graph.build(config_module.load(config))
    crash, cluster_crash = CrashAfter(0), ClusterCrashAfter(monkeypatch)
    owners: list[str] = []
    state_path = tmp_path / "state" / f"{DEPLOYMENT}.json"

    def after_call(model, http_response, **kwargs):
        """Note which step made each mutating call that CrashAfter counts, then let it count."""
        if not crash.crashed and is_mutating(model.name) and http_response.status_code < 300:
            owners.append(getattr(aws_module._current_step, "name", "-"))
        crash.after_call(model=model, http_response=http_response, **kwargs)
    SharedClients(monkeypatch, **{"after-call": after_call, "before-call": crash.before_call})
    stop_cluster_calls_after(monkeypatch, crash)
    failures, covered = [], {}

    def fresh_world():
        requests.post(f"{aws}/moto-api/reset", timeout=30)
        kube_server.reset()
        state_path.unlink(missing_ok=True)

    def replay(step, counter, points, clean, reset):
        for n in points:
            reset()
            counter.arm(n)
            with pytest.raises(SimulatedCrash):
                run_cli("apply", config, "--yes", "--parallelism", "1")
            counter.arm(0)
            crash.disarm()
            resumed = run_cli("apply", config, "--yes", "--parallelism", "1")
            after = (census(DEPLOYMENT), cluster_census(kube_server.cluster))
            if resumed.code != 0 or after != clean:
                failures.append((step, n, resumed.code, after[0] - clean[0], clean[0] - after[0],
                                 after[1] - clean[1], clean[1] - after[1], resumed.out[-400:]))

    for step in nx.topological_sort(full):
        ancestors = nx.ancestors(full, step)
        with monkeypatch.context() as patch:
            fresh_world()
            limit_to(patch, ancestors)
            owners.clear()
            assert run_cli("apply", config, "--yes", "--parallelism", "1").code == 0
            ancestor_calls = len(owners)  # a replay from an empty account makes these first
            before = (copy.deepcopy(kube_server.cluster.objects),
                      state_path.read_bytes() if state_path.exists() else None)

            def cluster_as_before():
                kube_server.cluster.objects = copy.deepcopy(before[0])
                state_path.unlink(missing_ok=True)
                if before[1] is not None:
                    state_path.write_bytes(before[1])
            limit_to(patch, {step})
            owners.clear()
            cluster_crash.arm(0)
            assert run_cli("apply", config, "--yes", "--parallelism", "1").code == 0
            clean = (census(DEPLOYMENT), cluster_census(kube_server.cluster))
            assert max(clean[0].values(), default=1) == 1
            aws_points = [ancestor_calls + n for n, owner in enumerate(owners, 1) if owner == step]
            cluster_points = [n for n, owner in enumerate(cluster_crash.owners, 1) if owner == step]
            if aws_points:
                limit_to(patch, ancestors | {step})
                replay(step, crash, aws_points, clean, fresh_world)
            assert not (aws_points and cluster_points), "a step changing both would need both replays"
            replay(step, cluster_crash, cluster_points, clean, cluster_as_before)
            covered[step] = (len(aws_points), len(cluster_points))
    assert failures == [], failures
    assert covered["vpc"][0] > 10 and covered["eks"][0] > 10 and covered["k8s_bootstrap"][1] >= 11
    assert all(covered[s][0] > 0 for s in ("secrets", "postgres", "redis", "storage", "alb"))
    assert covered["langsmith"][1] > 0 and covered["ingress"][1] > 0
    print(f"crash points covered: {sum(a + c for a, c in covered.values())} {covered}")


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
    after = census(DEPLOYMENT)
    assert max(after.values()) == 1
    assert after[("vpc", "acme-test-vpc")] == 1 and after[("db-instance", "acme-test-pg")] == 1
    assert run_cli("verify", config).code == 0
