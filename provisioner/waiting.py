"""One waiter for every long-running AWS operation.

Poll intervals adapt to how long the operation is expected to take: a NAT gateway is
polled every few seconds, RDS less often, and nothing waits a fixed 30 s on something
that finishes in five. A callback reports each poll so the progress display stays live.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from .errors import StepError
from .events import waiting

# Scales expected durations and intervals; the benchmark and simulations shrink them.
TIME_SCALE = float(os.environ.get("PROVISIONER_TIME_SCALE", "1"))


def set_time_scale(scale: float) -> None:
    """For simulations only (the sandbox): waits shrink with the simulated durations."""
    global TIME_SCALE
    TIME_SCALE = scale


def poll_intervals(expected_seconds: float):
    """First poll soon, then back off towards a tenth of the expected duration."""
    interval = max(0.05, min(2.0, expected_seconds / 60)) * TIME_SCALE
    ceiling = max(0.5, min(30.0, expected_seconds / 10)) * TIME_SCALE
    while True:
        yield interval
        interval = min(ceiling, interval * 1.5)


def wait_until(check: Callable[[], object], *, what: str, expected_seconds: float,
               timeout_seconds: float, progress: Callable[[str], None] | None = None) -> object:
    """Call check() until it returns a truthy value; raise StepError on timeout.

    check() may raise to signal a terminal failure (e.g. an RDS instance in 'failed').
    The wait and its expected duration are told to the live view and the run's record.
    """
    with waiting(what, expected_seconds * TIME_SCALE):
        return _poll(check, what, expected_seconds, timeout_seconds, progress)


def _poll(check, what, expected_seconds, timeout_seconds, progress) -> object:
    started = time.monotonic()
    deadline = started + timeout_seconds * TIME_SCALE
    for interval in poll_intervals(expected_seconds):
        result = check()
        if result:
            return result
        elapsed = time.monotonic() - started
        if time.monotonic() + interval > deadline:
            raise StepError(f"timed out after {elapsed:.0f}s waiting for {what}; run the same command "
                            "again to keep waiting (nothing is lost)")
        if progress:
            progress(f"waiting for {what} ({elapsed:.0f}s)")
        time.sleep(interval)
