"""Fault injection through botocore's event hooks on the product's own session."""

from __future__ import annotations

import threading

from provisioner import aws as aws_module


class SimulatedCrash(BaseException):
    """Like SIGKILL: not an Exception, so no product code catches it and nothing is recorded."""


def is_mutating(operation: str) -> bool:
    return aws_module.is_mutating(operation)


class CallRecorder:
    """Counts the calls that reach AWS, per operation, from every session the product makes."""

    def __init__(self):
        self.calls: list[str] = []
        self._mutex = threading.Lock()

    def __call__(self, model, **_):
        with self._mutex:
            self.calls.append(model.name)

    @property
    def mutating(self) -> list[str]:
        return [c for c in self.calls if is_mutating(c)]


class CrashAfter:
    """Let the Nth successful mutating call reach AWS, then 'kill' the process: that call's
    response never reaches the product, and no later call is sent."""

    def __init__(self, n: int):
        self.n = n
        self.seen = 0
        self.crashed = False
        self._mutex = threading.Lock()

    def after_call(self, model, http_response, **_):
        with self._mutex:
            if self.crashed:
                raise SimulatedCrash()
            if is_mutating(model.name) and http_response.status_code < 300:
                self.seen += 1
                if self.seen == self.n:
                    self.crashed = True
                    raise SimulatedCrash(f"after mutating call {self.n}: {model.name}")

    def before_call(self, **_):
        if self.crashed:
            raise SimulatedCrash()


def install_session_hooks(monkeypatch, **handlers) -> None:
    """Register handlers (event name -> callable) on every session the product creates."""
    original = aws_module.make_session

    def make_session(region):
        session = original(region)
        for event, handler in handlers.items():
            session.events.register(event, handler)
        return session

    monkeypatch.setattr(aws_module, "make_session", make_session)
