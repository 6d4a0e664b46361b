"""Each apply and destroy as the state remembers it, for the run report and the live view.

A run's record holds, per step: the steps it came after in that run's graph, start and
end, the waits inside it (what, expected and measured), its AWS calls and cluster
changes, and its error; and for the run its outcome and AWS call totals. Names, IDs,
times and counts only: nothing secret. It is written as the run goes, so a crash leaves
the record of everything up to it.
"""

from __future__ import annotations

import datetime as dt
import statistics

import networkx as nx

from .aws import CallLedger
from .state import StateStore, now

FINISHED = ("step_finished", "step_failed")


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


class RunRecorder:
    """Listens to a run's events and keeps its record in the state."""

    def __init__(self, state: StateStore, ledger: CallLedger, run_id: str, command: str, graph: nx.DiGraph):
        self.state = state
        self.ledger = ledger
        self.earlier = [run for run in state.runs() if run.get("command") == command]
        self.run = {"run_id": run_id, "command": command, "deployment": state.deployment, "started_at": now(),
                    "finished_at": None, "outcome": "running", "aws_calls": {},
                    "steps": {name: {"after": sorted(graph.predecessors(name)), "status": "pending", "waits": []}
                              for name in graph}}
        self.state.save_run(self.run)

    def __call__(self, event: dict) -> None:
        kind, step = event["event"], event.get("step")
        record = self.run["steps"].get(step)
        if record is None and kind != "run_finished":
            return  # run-level lines (preflight, messages) are in the summary, not per step
        if kind == "step_started":
            record.update(status="running", started_at=now())
        elif kind == "wait_started":
            record["waits"].append({"what": event["what"], "expected_seconds": event["expected_seconds"],
                                    "started_at": now(), "finished_at": None})
        elif kind == "wait_finished":
            open_waits = [w for w in record["waits"] if w["what"] == event["what"] and not w["finished_at"]]
            if not open_waits:
                return
            open_waits[-1]["finished_at"] = now()
        elif kind in FINISHED:
            record.update(finished_at=now(), aws_calls=dict(self.ledger.for_step(step)),
                          cluster_changes=event.get("cluster_changes", 0))
            if kind == "step_failed":
                record.update(status="failed", error=event.get("error", ""))
            else:
                changed = bool(event.get("changes") or event.get("cluster_changes"))
                record.update(status=event["status"] if changed else "unchanged")
        elif kind == "run_finished":
            self.run.update(finished_at=now(), aws_calls=dict(self.ledger.totals()), summary=event["message"],
                            outcome="complete" if event.get("ok") else "failed")
        else:
            return
        self.state.save_run(self.run)

    def usual_seconds(self, step: str, changing: bool) -> float | None:
        """How long the step took in earlier runs of the same command, the median of those
        that changed something (or of those that did not, for a step that should not)."""
        seconds = [seconds_between(record.get("started_at"), record.get("finished_at"))
                   for run in self.earlier
                   for record in [run.get("steps", {}).get(step, {})]
                   if record.get("status") not in (None, "failed", "pending", "running")
                   and (record["status"] != "unchanged") == changing]
        seconds = [s for s in seconds if s is not None]
        return statistics.median(seconds) if seconds else None
