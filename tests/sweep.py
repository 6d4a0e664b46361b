"""The crash sweep shared by the crash tests: crash after each change a step makes,
resume, and compare AWS and the cluster with a clean run."""

from __future__ import annotations

import copy
import json

import networkx as nx
import requests

from provisioner import graph
from provisioner.aws import is_mutating
from tests.census import changes_between, inventory, world
from tests.conftest import run_cli
from tests.faults import ClusterCrashAfter, CrashAfter, SharedClients, SimulatedCrash, stop_cluster_calls_after

DEPLOYMENT = "acme-test"


FULL_GRAPH = graph.build


def limit_to(patch, steps: set[str]) -> None:
    """Runs see only these steps (the product's graph logic is unchanged; only the graph it
    is given is narrowed), so each step's sweep replays just what it needs."""
    patch.setattr(graph, "build", lambda config, for_destroy=False: FULL_GRAPH(config, for_destroy).subgraph(
        steps).copy())


def recorded_ids(state_path, steps=None) -> set[str]:
    """The physical IDs the state file holds (of these steps, or all)."""
    if not state_path.exists():
        return set()
    state = json.loads(state_path.read_text())
    return {value for name, step in state["steps"].items() if steps is None or name in steps
            for value in step.get("physical_ids", {}).values() if value}


def sweep(config: str, aws, kube_server, monkeypatch, state_path, only: set[str] | None = None) -> dict:
    """One sweep per step: for each step, crash right after each of its mutating AWS calls
    and each of its cluster changes (Kubernetes writes, helm runs); resume; compare the
    whole account and cluster (a tag-blind census, by name) with a clean run, and check
    that every physical ID the state records exists. Each replay starts from the world as
    it was before the step (the steps it builds on applied once), put back by the step's
    own destroy at the default parallelism, which must bring the account and the cluster
    back to exactly what they held and leave none of the step's recorded IDs behind (so
    every replay also checks that step's destroy, Kubernetes steps included). At each AWS
    crash, whatever the step made before the crashing call is already in the state file
    (IDs are recorded when each create returns, not when the step ends).
    Returns {step: (aws points, cluster points)}."""
    from provisioner import aws as aws_module, config as config_module
    full = graph.build(config_module.load(config))
    crash, cluster_crash = CrashAfter(0), ClusterCrashAfter(monkeypatch)
    owners: list[tuple[str, str]] = []  # (step, operation) of each mutating call

    def after_call(model, http_response, **kwargs):
        """Note which step made each mutating call that CrashAfter counts, then let it count."""
        if not crash.crashed and is_mutating(model.name) and http_response.status_code < 300:
            owners.append((getattr(aws_module._current_step, "name", "-"), model.name))
        crash.after_call(model=model, http_response=http_response, **kwargs)
    SharedClients(monkeypatch, **{"after-call": after_call, "before-call": crash.before_call})
    stop_cluster_calls_after(monkeypatch, crash)
    failures, covered = [], {}

    def fresh_world():
        requests.post(f"{aws}/moto-api/reset", timeout=30)
        kube_server.reset()
        state_path.unlink(missing_ok=True)

    def ids_in(now) -> set[str]:
        return set(now[0].ids) | set(now[1].ids)

    def check_ids_exist(step, n, now) -> None:
        missing = recorded_ids(state_path) - ids_in(now)
        if missing:
            failures.append((step, n, "the state records IDs that do not exist", sorted(missing)))

    def replay(step, counter, points, clean, reset, check_recorded_at_once):
        previous = before[2]  # the account before the crashing call: at first, as before the step
        for n in points:
            reset()  # the world as before the step: the last run undone by the step's destroy
            counter.arm(n)
            try:
                run_cli("apply", config, "--yes", "--parallelism", "1")
                failures.append((step, n, f"never reached {operations[n - 1]}, the clean run's change {n}"))
            except SimulatedCrash:
                pass
            counter.arm(0)
            crash.disarm()
            if check_recorded_at_once:
                previous = recorded_at_once(step, n, previous, clean)
            resumed = run_cli("apply", config, "--yes", "--parallelism", "1")
            after = world(kube_server.cluster)
            if resumed.code != 0 or changes_between(clean, after):  # the final snapshots of undone runs aside
                failures.append((step, n, resumed.code, changes_between(clean, after), resumed.out[-400:]))
            check_ids_exist(step, n, after)

    def recorded_at_once(step, n, previous, clean):
        """What existed before the crashing call and is something the step records must
        already be in the state. The replays run one call at a time and the world before
        the crashing call is the previous replay's world at its crash, by stable labels."""
        now = inventory()
        recorded_entries = {clean[0].ids[i] for i in clean_ids if i in clean[0].ids}
        in_state = recorded_ids(state_path, {step})
        for entry in recorded_entries & set(previous) - set(before[2]):
            if not {i for i, e in now.ids.items() if e == entry} & in_state:
                failures.append((step, n, "made before the crashing call but not in the state", entry))
        return now

    for step in [s for s in nx.topological_sort(full) if only is None or s in only]:
        ancestors = nx.ancestors(full, step)
        with monkeypatch.context() as patch:
            fresh_world()
            limit_to(patch, ancestors)
            owners.clear()
            assert run_cli("apply", config, "--yes", "--parallelism", "1").code == 0
            before = (copy.deepcopy(kube_server.cluster.objects),
                      state_path.read_bytes() if state_path.exists() else None, *world(kube_server.cluster))
            ids_before = ids_in(before[2:])

            def world_as_before():
                kube_server.cluster.objects = copy.deepcopy(before[0])
                state_path.unlink(missing_ok=True)
                if before[1] is not None:
                    state_path.write_bytes(before[1])

            def step_undone():
                """The step's own destroy, at the default parallelism, must restore the world."""
                ids = recorded_ids(state_path, {step})
                result = run_cli("destroy", config, "--yes")  # this step only
                now = world(kube_server.cluster)
                left = changes_between(before[2:], now)
                if result.code != 0 or left:
                    failures.append((step, "its destroy left", left, result.out[-400:]))
                still_there = (ids - ids_before) & ids_in(now)
                if still_there:
                    failures.append((step, "its destroy left recorded IDs", sorted(still_there)))
                world_as_before()
            limit_to(patch, {step})  # the steps it builds on are in the state, as after a real run
            owners.clear()
            cluster_crash.arm(0)
            assert run_cli("apply", config, "--yes", "--parallelism", "1").code == 0
            clean = world(kube_server.cluster)
            clean_ids = recorded_ids(state_path, {step})
            check_ids_exist(step, "clean run", clean)
            assert max(clean[0].values(), default=1) == 1, [k for k, v in clean[0].items() if v > 1]
            operations = [operation for owner, operation in owners]
            aws_points = [n for n, (owner, _) in enumerate(owners, 1) if owner == step]
            cluster_points = [n for n, owner in enumerate(cluster_crash.owners, 1) if owner == step]
            assert not (aws_points and cluster_points), "a step changing both would need both replays"
            # the AWS replays run one call at a time, so the previous crash shows what existed
            # before this one; cluster steps install releases in parallel, so they are not checked so
            replay(step, crash, aws_points, clean, step_undone, True)
            replay(step, cluster_crash, cluster_points, clean, step_undone, False)
            step_undone()
            covered[step] = (len(aws_points), len(cluster_points))
    assert failures == [], failures
    print(f"crash points covered: {sum(a + c for a, c in covered.values())} {covered}")
    return covered
