"""Progress output: human-readable lines, or NDJSON events with --json.

Events carry step names, IDs and messages; never secret values.
"""

from __future__ import annotations

import json
import sys
import threading
import time


class Events:
    def __init__(self, as_json: bool = False, stream=None):
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self._mutex = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def emit(self, event: str, step: str | None = None, message: str = "", **fields) -> None:
        with self._mutex:
            if self.as_json:
                record = {"event": event, "elapsed": round(self.elapsed(), 3), "step": step,
                          "message": message, **fields}
                self.stream.write(json.dumps(record, default=str) + "\n")
            elif step:
                self.stream.write(f"[{self.elapsed():7.1f}s] {step:<10} {message}\n")
            else:
                self.stream.write(f"{message}\n")
            self.stream.flush()

    def say(self, message: str) -> None:
        """A plain line for people (skipped in --json mode, where events say it all)."""
        if not self.as_json:
            self.emit("message", message=message)
