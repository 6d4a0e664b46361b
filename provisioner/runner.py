"""Runs steps over the graph: every ready step at once, in a bounded pool.

When a step fails nothing new starts, running steps finish, everything is recorded and
the run reports failure; running the same command again resumes.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

import networkx as nx

from .events import Events

HEARTBEAT_SECONDS = 15.0


@dataclass
class RunResult:
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_started


def execute(graph: nx.DiGraph, run_step: Callable[[str], bool], parallelism: int, events: Events,
            verb: str) -> RunResult:
    """run_step(name) returns True on success and False on a recorded failure; anything
    it raises that is not an Exception (a crash, Ctrl-C) propagates untouched."""
    result = RunResult()
    pending = set(graph.nodes)
    done: set[str] = set()
    running: dict = {}
    started_at: dict[str, float] = {}
    pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="step")
    try:
        while True:
            if not result.failed:
                for node in sorted(pending):
                    if len(running) >= parallelism:
                        break
                    if all(parent in done for parent in graph.predecessors(node)):
                        pending.discard(node)
                        started_at[node] = time.monotonic()
                        running[pool.submit(run_step, node)] = node
            if not running:
                break
            finished, _ = wait(running, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
            if not finished:
                for node in sorted(running.values()):
                    events.emit("heartbeat", node, f"still {verb} ({time.monotonic() - started_at[node]:.0f}s)")
            for future in finished:
                node = running.pop(future)
                if future.result():
                    done.add(node)
                    result.succeeded.append(node)
                else:
                    result.failed.append(node)
    except BaseException:
        # Ctrl-C or a crash: do not wait for running steps (an RDS wait can last an hour);
        # the state already says what exists.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    result.not_started = sorted(pending)
    return result
