"""The live view of an apply or destroy on a terminal (rich).

One line per step that runs, with its state, its time against the time it usually
takes (a bar where that is known: the expected duration of the wait it is in, or the
step's time in earlier runs), and what it is waiting for; queued steps with what they
wait on; a summary line. Finished steps and anything a step reports scroll up as they
happen; failures stay in view until the run ends, then the run's summary is printed.
Elsewhere (no terminal, --json, NO_COLOR, TERM=dumb) the plain lines are printed as
they always were.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

import networkx as nx
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from . import preflight
from .aws import CallLedger
from .events import Events

BAR_WIDTH = 20
TIME_WIDTH = len("10m00s / ~10m00s")
PREFLIGHT_STYLES = {preflight.FAIL: "bold red", preflight.WARN: "yellow"}


def wanted(stream, as_json: bool) -> bool:
    """A live view only where a person watches a terminal that takes colour and motion."""
    if as_json or os.environ.get("NO_COLOR") or os.environ.get("TERM", "") == "dumb":
        return False
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class StepLine:
    name: str
    after: list[str]
    usual: float | None  # seconds the step took in earlier runs, if any
    state: str = "pending"
    started: float = 0.0
    wait: tuple[str, float, float] | None = None  # what, expected seconds, since
    activity: str = ""
    spinner: Spinner = field(default_factory=lambda: Spinner("dots"))


class LiveView:
    """Listens to a run's events and draws them; a context manager around the run."""

    def __init__(self, events: Events, stream, graph: nx.DiGraph, ledger: CallLedger, verb: str,
                 usual: dict[str, float | None], mark: str = ""):
        self.events, self.ledger, self.verb, self.mark = events, ledger, verb, mark
        self.console = Console(file=stream, highlight=False)
        self.steps = {name: StepLine(name, sorted(graph.predecessors(name)), usual.get(name)) for name in graph}
        self.width = max(map(len, self.steps), default=4)
        self._mutex = threading.Lock()
        own_stdout = stream in (sys.stdout, sys.__stdout__)
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4, transient=True,
                         redirect_stdout=own_stdout, redirect_stderr=own_stdout)
        events.printing = False
        events.listen(self)

    def __enter__(self) -> "LiveView":
        self.live.start(refresh=True)
        return self

    def __exit__(self, *exc) -> None:
        self.live.stop()

    def __call__(self, event: dict) -> None:
        """Called with the events' lock held, so printing happens in event order."""
        with self._mutex:
            printed = self._update(event)
        if event["event"] == "run_finished":
            self.live.stop()
        for text in printed:
            self.console.print(Text.assemble((self.mark, "dim"), text), soft_wrap=True)  # the terminal wraps
        if event["event"] != "run_finished":
            self.live.refresh()  # every change shows, however short (a wait may end within a tick)

    def _update(self, event: dict) -> list[Text]:
        kind, message = event["event"], event.get("message", "")
        line = self.steps.get(event.get("step") or "")
        if kind == "run_finished":
            return [Text(message, style="bold green" if event.get("ok") else "bold red")]
        if kind == "preflight":
            return [Text(f"preflight  {message}", style=PREFLIGHT_STYLES.get(event.get("outcome", ""), ""))]
        if line is None:
            return [Text(message)] if message and kind != "heartbeat" else []
        if kind == "step_started":
            line.state, line.started = "running", time.monotonic()
        elif kind == "wait_started":
            line.wait = (event["what"], event["expected_seconds"], time.monotonic())
        elif kind == "wait_finished":
            line.wait = None
        elif kind == "resource":
            line.activity = message
        elif kind == "progress" and line.wait is None:  # a wait's polls show as its line
            line.activity = message
            return [Text(f"  {line.name:<{self.width}} {message}", style="dim")]
        elif kind == "step_finished":
            line.state = "done"
            return [Text.assemble(("✓ ", "green"), f"{line.name:<{self.width}} {message}")]
        elif kind == "step_failed":
            line.state, line.wait, line.activity = "failed", None, event.get("error", message)
            return [Text(f"✗ {line.name:<{self.width}} {message}", style="bold red")]
        return []

    def _render(self) -> Group:
        with self._mutex:
            rows = Table.grid(padding=(0, 1))
            widths = [len(self.mark.rstrip())] if self.mark else []
            widths += [1, self.width, len("destroying"), BAR_WIDTH, TIME_WIDTH]
            for width in widths:  # [mark,] icon, name, state, bar, time: fixed, so they never squeeze
                rows.add_column(no_wrap=True, width=width)
            rest = max(10, self.console.width - sum(widths) - len(widths))  # one space between columns
            rows.add_column(no_wrap=True, overflow="ellipsis", max_width=rest)  # what it is doing
            mark = [Text(self.mark.rstrip(), style="dim")] if self.mark else []
            running = sorted((s for s in self.steps.values() if s.state == "running"), key=lambda s: s.started)
            for line in running:
                rows.add_row(*mark, *self._running_row(line))
            for line in self.steps.values():
                if line.state == "failed":
                    rows.add_row(*mark, Text("✗", style="bold red"), line.name, Text("failed", style="red"),
                                 "", "", Text(line.activity, style="red"))
            pending = [s for s in self.steps.values() if s.state == "pending"]
            room = max(0, self.console.height - len(running) - 3)
            for line in pending[:room]:
                waiting_on = [name for name in line.after if self.steps[name].state != "done"]
                rows.add_row(*mark, Text("·", style="dim"), Text(line.name, style="dim"), Text("queued", style="dim"),
                             "", "", Text(f"after {', '.join(waiting_on)}" if waiting_on else "next", style="dim"))
            return Group(rows, self._summary(running, pending))

    def _running_row(self, line: StepLine) -> list:
        now = time.monotonic()
        if line.wait:
            what, expected, since = line.wait
            state, done, total, activity = "waiting", now - since, expected, f"for {what}"
        else:
            state, done, total, activity = self.verb, now - line.started, line.usual, line.activity
        if total:
            bar = ProgressBar(total=total, completed=min(done, total), width=BAR_WIDTH)
            times = Text(f"{clock(done)} / ~{clock(total)}", style="yellow" if done > total else "")
        else:
            bar = ProgressBar(total=None, width=BAR_WIDTH)
            times = Text(clock(done))
        return [line.spinner, Text(line.name, style="bold"), Text(state, style="cyan"), bar, times,
                activity]

    def _summary(self, running: list, pending: list) -> Text:
        done = sum(1 for s in self.steps.values() if s.state == "done")
        failed = sum(1 for s in self.steps.values() if s.state == "failed")
        calls = self.ledger.totals()
        text = Text.assemble((self.mark, "dim"), (f"{self.verb}: {done}/{len(self.steps)} steps done, "
                                                  f"{len(running)} running, {len(pending)} pending", "bold"))
        if failed:
            text += Text(f", {failed} failed", style="bold red")
        text += Text(f" · AWS calls {calls['mutating'] + calls['read']} ({calls['mutating']} changing)"
                     f" · {clock(self.events.elapsed())}")
        return text
