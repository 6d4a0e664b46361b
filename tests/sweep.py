"""The crash sweep shared by the crash tests: crash after each change a step makes,
resume, and compare AWS and the cluster with a clean run."""

from __future__ import annotations

import copy

import networkx as nx
import requests

from provisioner import graph
from provisioner.aws import is_mutating
from tests.census import census, cluster_census
from tests.conftest import run_cli
from tests.faults import ClusterCrashAfter, CrashAfter, SharedClients, SimulatedCrash, stop_cluster_calls_after

DEPLOYMENT = "acme-test"


FULL_GRAPH = graph.build


def limit_to(patch, steps: set[str]) -> None:
    """Runs see only these steps (the product's graph logic is unchanged; only the graph it
    is given is narrowed), so each step's sweep replays just what it needs."""
    patch.setattr(graph, "build", lambda config, for_destroy=False: FULL_GRAPH(config, for_destroy).subgraph(
        steps).copy())


def sweep(config: str, aws, kube_server, monkeypatch, state_path, only: set[str] | None = None) -> dict:
    """One sweep per step: for each step, crash right after each of its mutating AWS calls
    and each of its cluster changes (Kubernetes writes, helm runs); resume; compare AWS and
    the cluster with a clean run. Each replay starts from the world as it was before the
    step (the steps it builds on applied once): a step with none starts from an empty
    account; an AWS step is taken away by its own destroy, which must bring AWS back to
    exactly the census before it (so every replay also checks that step's destroy); a
    cluster step has the cluster and the state put back. Returns {step: (aws points,
    cluster points)}."""
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

    def replay(step, counter, points, clean, reset):
        for n in points:
            reset()
            counter.arm(n)
            try:
                run_cli("apply", config, "--yes", "--parallelism", "1")
                failures.append((step, n, f"never reached {operations[n - 1]}, the clean run's change {n}"))
            except SimulatedCrash:
                pass
            counter.arm(0)
            crash.disarm()
            resumed = run_cli("apply", config, "--yes", "--parallelism", "1")
            after = (census(DEPLOYMENT), cluster_census(kube_server.cluster))
            if resumed.code != 0 or after != clean:
                failures.append((step, n, resumed.code, after[0] - clean[0], clean[0] - after[0],
                                 after[1] - clean[1], clean[1] - after[1], resumed.out[-400:]))

    for step in [s for s in nx.topological_sort(full) if only is None or s in only]:
        ancestors = nx.ancestors(full, step)
        with monkeypatch.context() as patch:
            fresh_world()
            limit_to(patch, ancestors)
            owners.clear()
            assert run_cli("apply", config, "--yes", "--parallelism", "1").code == 0
            before = (copy.deepcopy(kube_server.cluster.objects),
                      state_path.read_bytes() if state_path.exists() else None, census(DEPLOYMENT))

            def cluster_as_before():
                kube_server.cluster.objects = copy.deepcopy(before[0])
                state_path.unlink(missing_ok=True)
                if before[1] is not None:
                    state_path.write_bytes(before[1])

            def step_undone():
                result = run_cli("destroy", config, "--yes", "--parallelism", "1")  # this step only
                if result.code != 0 or census(DEPLOYMENT) != before[2]:
                    failures.append((step, "its destroy left", census(DEPLOYMENT) - before[2], result.out[-400:]))
                cluster_as_before()
            limit_to(patch, {step})  # the steps it builds on are in the state, as after a real run
            owners.clear()
            cluster_crash.arm(0)
            assert run_cli("apply", config, "--yes", "--parallelism", "1").code == 0
            clean = (census(DEPLOYMENT), cluster_census(kube_server.cluster))
            assert max(clean[0].values(), default=1) == 1
            operations = [operation for owner, operation in owners]
            aws_points = [n for n, (owner, _) in enumerate(owners, 1) if owner == step]
            cluster_points = [n for n, owner in enumerate(cluster_crash.owners, 1) if owner == step]
            if aws_points:
                replay(step, crash, aws_points, clean, step_undone if ancestors else fresh_world)
            assert not (aws_points and cluster_points), "a step changing both would need both replays"
            replay(step, cluster_crash, cluster_points, clean, cluster_as_before)
            covered[step] = (len(aws_points), len(cluster_points))
    assert failures == [], failures
    print(f"crash points covered: {sum(a + c for a, c in covered.values())} {covered}")
    return covered
