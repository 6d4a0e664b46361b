"""Apply benchmark: a full apply against a simulated AWS whose long-running resources
take a scaled-down version of their realistic time (EKS cluster 10 min, node group
4 min, RDS 8 min, ElastiCache 8 min, NAT gateway 1.5 min, ALB 2 min).

Prints, for our graph and for the reference's (RDS waits for EKS):
  - wall time / critical path of the measured step durations (1.0 is ideal: no time
    lost to scheduling or over-long polls);
  - sum of step durations / wall time (the speed-up over running steps one by one);
  - AWS calls of the full apply and of a no-op re-apply, mutating and read-only.

    pip install -e '.[test]' && python scripts/bench_apply.py [--scale 0.04]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import requests


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.04,
                        help="fraction of the realistic durations (default 0.04: EKS 24 s, RDS 19 s)")
    args = parser.parse_args(argv)
    # Poll intervals and timeouts follow the expected durations, scaled the same way.
    os.environ["PROVISIONER_TIME_SCALE"] = str(args.scale)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    import yaml

    from provisioner.simulation import aws as simulator
    from provisioner.charts import HELM_RELEASES
    from provisioner.simulation.helm_download import fetch as fetch_helm
    os.environ["PATH"] = f"{fetch_helm().parent}{os.pathsep}{os.environ['PATH']}"
    server, url = simulator.start_server()
    simulator.simulate_latency(args.scale)
    cluster = simulator.start_cluster(url)
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", LANGSMITH_LICENSE_KEY="bench-license")
    os.chdir(tempfile.mkdtemp(prefix="bench-apply-"))
    with open("config.yaml", "w") as handle:
        yaml.safe_dump({"name_prefix": "bench", "environment": "dev", "region": "us-east-1",
                        "kubernetes": {"kubeconfig": cluster.kubeconfig(Path("kubeconfig"))},
                        "charts": cluster.standin_charts(HELM_RELEASES)}, handle)
    try:
        print(f"simulated AWS at {url}, simulated cluster at {cluster.url} (stand-in charts); durations x{args.scale}")
        ours = measure(url, cluster, extra_edges=[], scale=args.scale)
        reference = measure(url, cluster, extra_edges=[("eks", "postgres")], scale=args.scale)
    finally:
        cluster.stop()
        server.stop()
    for title, result in (("ours", ours), ("reference edges (RDS waits for EKS)", reference)):
        print(f"\n{title}:")
        print(f"  wall time                 {result['wall']:7.1f} s")
        print(f"  critical path             {result['critical']:7.1f} s  ({' -> '.join(result['path'])})")
        print(f"  wall / critical path      {result['wall'] / result['critical']:7.2f}   (1.0 is ideal)")
        print(f"  simulated AWS time on it  {result['ideal']:7.1f} s  -> wall / that {result['wall'] / result['ideal']:.2f}"
              "   (time lost to polls and calls)")
        print(f"  sum of steps / wall       {result['sum'] / result['wall']:7.2f}   (speed-up over one by one)")
        print(f"  full apply AWS calls      {result['apply_calls'].get('mutating', 0)} mutating, "
              f"{result['apply_calls'].get('read', 0)} read")
        print(f"  no-op re-apply AWS calls  {result['reapply_calls'].get('mutating', 0)} mutating, "
              f"{result['reapply_calls'].get('read', 0)} read")
    print(f"\nour wall time / reference wall time: {ours['wall'] / reference['wall']:.2f}")
    return 0


# What each step waits for in the simulation: its floor, however well it polls.
STEP_WAITS = {"vpc": ["nat_gateway"], "eks": ["eks_cluster", "eks_nodegroup"], "postgres": ["rds"],
              "redis": ["elasticache"]}


def simulated_seconds(step: str, scale: float) -> float:
    from provisioner.simulation.aws import CREATE_SECONDS
    return sum(CREATE_SECONDS[kind] for kind in STEP_WAITS.get(step, [])) * scale


def measure(url: str, cluster, extra_edges: list[tuple[str, str]], scale: float) -> dict:
    import networkx as nx

    import steps
    from provisioner.cli import main as cli
    from provisioner.graph import critical_path
    requests.post(f"{url}/moto-api/reset", timeout=30)
    cluster.reset()
    # The External Secrets operator validates a new store within seconds (~5): scaled like the
    # AWS durations, as the product's waits are (their timeouts too).
    cluster.cluster.store_validation_seconds = 5 * scale
    for name in os.listdir("state") if os.path.isdir("state") else []:
        os.remove(os.path.join("state", name))
    saved = {child: steps.REGISTRY[child].requires for _, child in extra_edges}
    for parent, child in extra_edges:
        steps.REGISTRY[child].requires = saved[child] + (parent,)
    try:
        events = run(cli, "apply")
        reapply = run(cli, "apply")
    finally:
        for child, requires in saved.items():
            steps.REGISTRY[child].requires = requires
    started = {e["step"]: e["elapsed"] for e in events if e["event"] == "step_started"}
    finished = {e["step"]: e["elapsed"] for e in events if e["event"] == "step_finished"}
    durations = {step: finished[step] - started[step] for step in finished}
    state = json.load(open("state/bench-dev.json"))
    graph = nx.DiGraph()
    for step, record in state["steps"].items():
        graph.add_node(step)
        graph.add_edges_from((parent, step) for parent in record["requires"])
    path = critical_path(graph, durations)
    ideal = critical_path(graph, {step: simulated_seconds(step, scale) for step in graph})
    last = [e for e in events if e["event"] == "run_finished"][0]
    first = [e for e in events if e["event"] == "step_started"][0]
    return {"wall": last["elapsed"] - first["elapsed"], "critical": sum(durations[s] for s in path), "path": path,
            "ideal": sum(simulated_seconds(s, scale) for s in ideal),
            "sum": sum(durations.values()), "apply_calls": last["aws_calls"],
            "reapply_calls": [e for e in reapply if e["event"] == "run_finished"][0]["aws_calls"]}


def run(cli, command: str) -> list[dict]:
    out, err = io.StringIO(), io.StringIO()
    code = cli([command, "config.yaml", "--yes", "--json"], stdout=out, stderr=err)
    if code != 0:
        raise SystemExit(f"{command} failed ({code}): {out.getvalue()[-2000:]} {err.getvalue()[-2000:]}")
    return [json.loads(line) for line in out.getvalue().splitlines()]


if __name__ == "__main__":
    sys.exit(main())
