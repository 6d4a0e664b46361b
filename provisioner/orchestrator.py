"""Apply, destroy, plan and verify over the step graph, recording everything in the state."""

from __future__ import annotations

import time

import networkx as nx
from botocore.exceptions import BotoCoreError, ClientError

import steps
from steps.base import Finding

from . import graph as step_graph
from .aws import Aws, attributed_to
from .config import Config
from .context import StepContext
from .events import Events
from .runner import RunResult, execute
from .state import StateStore, now


def describe_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
    if isinstance(exc, BotoCoreError):
        return f"AWS: {exc}"
    return str(exc) or type(exc).__name__


class Orchestrator:
    def __init__(self, config: Config, state: StateStore, aws: Aws, events: Events, parallelism: int = 8):
        self.config = config
        self.state = state
        self.aws = aws
        self.events = events
        self.parallelism = parallelism

    def context(self, name: str) -> StepContext:
        return StepContext(name, self.config, self.aws, self.state, self.events)

    def removals(self) -> list[str]:
        """Steps this apply tears down: the config no longer enables them."""
        return step_graph.removals(self.config, self.state.all_steps())

    def graph(self, command: str) -> nx.DiGraph:
        """The steps `command` runs, in their order: for apply the create graph and the
        removals; for destroy every step, each once all that need it are gone."""
        if command == "destroy":
            return step_graph.build(self.config, for_destroy=True).reverse(copy=True)
        return step_graph.build_apply(self.config, self.removals())

    def apply(self) -> RunResult:
        graph = self.graph("apply")
        requires = {name: sorted(p for p in graph.predecessors(name) if graph.nodes[p].get("action") is None)
                    for name in graph}

        def run_one(name: str) -> bool:
            if graph.nodes[name].get("action") == step_graph.REMOVE:
                return self._destroy_one(name, "removing (no longer enabled by the config)")
            step = steps.REGISTRY[name]()
            self.state.update_step(name, status="creating", requires=requires[name], started_at=now(),
                                   finished_at=None, last_error=None)
            self.events.emit("step_started", name, "applying")
            return self._run(name, lambda ctx: step.create(ctx), "created")

        return execute(graph, run_one, self.parallelism, self.events, "applying")

    def destroy(self) -> RunResult:
        return execute(self.graph("destroy"), lambda name: self._destroy_one(name, "destroying"), self.parallelism,
                       self.events, "destroying")

    def _destroy_one(self, name: str, message: str) -> bool:
        step = steps.REGISTRY[name]()
        self.state.update_step(name, status="destroying", started_at=now(), finished_at=None, last_error=None)
        self.events.emit("step_started", name, message)
        return self._run(name, lambda ctx: step.destroy(ctx) or {}, "destroyed")

    def _run(self, name: str, action, final_status: str) -> bool:
        ctx = self.context(name)
        started = time.monotonic()
        with attributed_to(name), self.events.step_scope(name):
            try:
                outputs = action(ctx)
            except Exception as exc:  # a step failure is recorded; crashes propagate
                message = describe_error(exc)
                self.state.update_step(name, status="failed", last_error=message, finished_at=now())
                self.events.emit("step_failed", name, f"failed: {message}", error=message)
                return False
        changes = self.aws.ledger.for_step(name)["mutating"]
        cluster_changes = ctx.cluster_changes
        fields = {"status": final_status, "outputs": outputs, "finished_at": now()}
        if final_status == "destroyed":
            fields["physical_ids"] = {}
            fields["client_tokens"] = {}  # a token outliving its resource would bring the deleted one back
        self.state.update_step(name, **fields)
        seconds = time.monotonic() - started
        verb = final_status if changes or cluster_changes else "unchanged"
        counts = f"{changes} AWS changes" + (f", {cluster_changes} cluster changes" if cluster_changes else "")
        self.events.emit("step_finished", name, f"{verb} in {seconds:.1f}s ({counts})", status=final_status,
                         changes=changes, cluster_changes=cluster_changes, seconds=round(seconds, 3))
        return True

    def check(self) -> tuple[dict[str, list[Finding]], dict[str, list[str]]]:
        """Read-only: every enabled step's findings, and the facts its checks established,
        in create order."""
        graph = step_graph.build(self.config)
        findings, facts = {}, {}
        for wave in step_graph.waves(graph):
            for name in wave:
                ctx = self.context(name)
                with attributed_to(name):
                    findings[name] = steps.REGISTRY[name]().verify(ctx)
                facts[name] = ctx.facts
        return findings, facts
