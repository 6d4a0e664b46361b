"""Nothing is used before AWS says it is ready, read from the simulator's own call record.

moto makes everything ready at once, so a step that stopped waiting would pass every
other test. Here long-running resources keep their in-progress status for their
realistic creation time (scaled down), and the record shows when each was used.
"""

from __future__ import annotations

from provisioner import waiting
from provisioner.simulation import aws as simulator, firewall as simulated_firewall
from provisioner.simulation.calls import LOG
from tests.conftest import run_cli, write_config
from tests.faults import PRODUCT_CALLER

SCALE = 0.01  # the EKS cluster takes 6 s, the NAT gateway 0.9 s
CLUSTER_USERS = ("CreateNodegroup", "CreateAddon", "CreateAccessEntry", "AssociateAccessPolicy")


def test_nothing_is_used_before_aws_says_it_is_ready(aws, tmp_path, monkeypatch):
    monkeypatch.setattr(simulated_firewall, "READY_AFTER_SECONDS", simulated_firewall.READY_AFTER_SECONDS)
    monkeypatch.setattr(waiting, "TIME_SCALE", SCALE)
    simulator.simulate_latency(SCALE)
    try:
        # the bastion's access entry: the operator's own comes with the cluster (its creator)
        result = run_cli("apply", write_config(tmp_path / "config.yaml", create_bastion=True), "--yes")
    finally:
        simulator.simulate_latency(0)
    assert result.code == 0, result
    calls = [c for c in LOG.calls(caller=PRODUCT_CALLER) if c.succeeded]

    def ready_at(operation: str, kind: str) -> float:
        created = [c.at for c in calls if c.operation == operation]
        assert len(created) == 1, (operation, created)
        return created[0] + simulator.CREATE_SECONDS[kind] * SCALE

    cluster_ready = ready_at("CreateCluster", "eks_cluster")
    used = [c for c in calls if c.service == "eks" and c.operation in CLUSTER_USERS]
    assert {c.operation for c in used} == set(CLUSTER_USERS)
    assert [(c.operation, round(cluster_ready - c.at, 2)) for c in used if c.at < cluster_ready] == []
    nat_ready = ready_at("CreateNatGateway", "nat_gateway")
    routes = [c for c in calls if c.operation in ("CreateRoute", "ReplaceRoute")
              and any(name.startswith("nat-") for name in c.names)]
    assert routes and [c for c in routes if c.at < nat_ready] == []
