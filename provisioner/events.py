"""Progress output: human-readable lines, or NDJSON events with --json.

Events carry step names, IDs and messages; never secret values. Listeners (the run's
record in the state, the live view on a terminal) see every event, and also the quiet
ones (`note`) that are printed nowhere, such as the start and end of a wait.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

_step_on_thread = threading.local()


class Events:
    def __init__(self, as_json: bool = False, stream=None):
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.printing = True  # a live view turns the plain lines off and shows its own
        self._listeners: list[Callable[[dict], None]] = []
        self._mutex = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def listen(self, listener: Callable[[dict], None]) -> None:
        self._listeners.append(listener)

    def emit(self, event: str, step: str | None = None, message: str = "", **fields) -> None:
        with self._mutex:
            record = {"event": event, "elapsed": round(self.elapsed(), 3), "step": step,
                      "message": message, **fields}
            if self.printing:
                if self.as_json:
                    self.stream.write(json.dumps(record, default=str) + "\n")
                elif step:
                    self.stream.write(f"[{self.elapsed():7.1f}s] {step:<10} {message}\n")
                else:
                    self.stream.write(f"{message}\n")
                self.stream.flush()
            self._tell(record)

    def note(self, event: str, step: str | None = None, **fields) -> None:
        """An event for the listeners only: the printed output stays as it is."""
        with self._mutex:
            self._tell({"event": event, "elapsed": round(self.elapsed(), 3), "step": step, **fields})

    def _tell(self, record: dict) -> None:
        for listener in self._listeners:
            listener(record)

    def say(self, message: str) -> None:
        """A plain line for people (skipped in --json mode, where events say it all)."""
        if not self.as_json:
            self.emit("message", message=message)

    @contextmanager
    def step_scope(self, step: str):
        """Marks this thread as running `step`, so a wait inside it is told to the listeners."""
        previous = getattr(_step_on_thread, "current", None)
        _step_on_thread.current = (self, step)
        try:
            yield
        finally:
            _step_on_thread.current = previous


@contextmanager
def waiting(what: str, expected_seconds: float):
    """A wait of the step running on this thread (nothing outside a step): its start and
    end become `wait_started` / `wait_finished` notes, for the live view and the report."""
    current = getattr(_step_on_thread, "current", None)
    if current is None:
        yield
        return
    events, step = current
    events.note("wait_started", step, what=what, expected_seconds=round(expected_seconds, 3))
    try:
        yield
    finally:
        events.note("wait_finished", step, what=what)
