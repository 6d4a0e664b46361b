"""The step graph: nodes are steps, edges come from each step's `requires`.

Only edges the data needs: RDS and ElastiCache wait for the VPC and their secrets, not
for EKS, so they are built while the cluster comes up.
"""

from __future__ import annotations

import networkx as nx

from steps import REGISTRY


def build(config, for_destroy: bool = False) -> nx.DiGraph:
    """The create graph of the enabled steps; for destroy, every step (a disabled step
    may still own resources from an earlier config, and finds nothing otherwise)."""
    graph = nx.DiGraph()
    for name, cls in REGISTRY.items():
        if for_destroy or cls.enabled(config):
            graph.add_node(name)
    for name in list(graph.nodes):
        for needed in REGISTRY[name].requires:
            if needed in graph:
                graph.add_edge(needed, name)
    if not nx.is_directed_acyclic_graph(graph):
        raise RuntimeError(f"step graph has a cycle: {nx.find_cycle(graph)}")
    return graph


REMOVE = "remove"
PRESENT = ("creating", "created", "failed", "destroying")


def removals(config, records: dict) -> list[str]:
    """Steps the config no longer enables whose state says they may still own resources."""
    return sorted(name for name, cls in REGISTRY.items()
                  if not cls.enabled(config) and records.get(name, {}).get("status") in PRESENT)


def build_apply(config, removed: list[str]) -> nx.DiGraph:
    """The create graph plus a `remove` node per step to tear down. A removed step goes
    after every enabled step that used it has converged (an ALB stops serving the
    certificate before the certificate goes) and before the removed steps it used."""
    graph = build(config)
    for name in removed:
        graph.add_node(name, action=REMOVE)
    for name in removed:
        for user, cls in REGISTRY.items():
            if user in graph and name in cls.requires:
                graph.add_edge(user, name)
    if not nx.is_directed_acyclic_graph(graph):
        raise RuntimeError(f"apply graph has a cycle: {nx.find_cycle(graph)}")
    return graph


def waves(graph: nx.DiGraph) -> list[list[str]]:
    """Groups of steps that can run at the same time, in order."""
    return [sorted(generation) for generation in nx.topological_generations(graph)]


def to_dot(graph: nx.DiGraph, title: str) -> str:
    lines = [f'digraph "{title}" {{', "  rankdir=LR;"]
    lines += [f'  "{node}";' for node in sorted(graph.nodes)]
    lines += [f'  "{a}" -> "{b}";' for a, b in sorted(graph.edges)]
    return "\n".join(lines + ["}"])


def to_mermaid(graph: nx.DiGraph) -> str:
    lines = ["graph LR"]
    lines += [f"  {node.replace('-', '_')}[{node}]" for node in sorted(graph.nodes)]
    lines += [f"  {a.replace('-', '_')} --> {b.replace('-', '_')}" for a, b in sorted(graph.edges)]
    return "\n".join(lines)
