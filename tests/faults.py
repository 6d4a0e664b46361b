"""Fault injection through botocore's event hooks on the product's own session."""

from __future__ import annotations

import threading

import boto3

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

    def arm(self, n: int) -> None:
        self.n, self.seen, self.crashed = n, 0, False

    def disarm(self) -> None:
        self.n, self.crashed = 0, False

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


class SharedClients:
    """Reuse boto3 clients across in-process runs (creating them costs ~0.2 s each),
    re-pointing the current run's call ledger and the given hooks at them.

    Only the sweeps use this, to stay cheap; every other test lets the product make
    its own clients.
    """

    def __init__(self, monkeypatch, **handlers):
        self.handlers = handlers
        self.cache: dict[str, object] = {}
        self.session = boto3.session.Session()
        monkeypatch.setattr(aws_module.Aws, "client", lambda aws, service: self._client(aws, service))

    def _client(self, aws, service):
        client = self.cache.get(service)
        if client is None:
            client = self.cache[service] = self.session.client(service, region_name=aws.region,
                                                              config=aws_module.RETRY_CONFIG)
        events = client.meta.events
        for event, handler in [("before-call", aws._count), *self.handlers.items()]:
            key = f"test-{event}-{getattr(handler, '__name__', 'h')}"
            events.unregister(event, unique_id=key)
            events.register(event, handler, unique_id=key)
        return client


def install_session_hooks(monkeypatch, **handlers) -> None:
    """Register handlers (event name -> callable) on every session the product creates."""
    original = aws_module.make_session

    def make_session(region):
        session = original(region)
        for event, handler in handlers.items():
            session.events.register(event, handler)
        return session

    monkeypatch.setattr(aws_module, "make_session", make_session)


def run_until_crash(monkeypatch, n: int, *argv: str) -> None:
    """Run the CLI in-process and 'kill' it right after its Nth mutating AWS call."""
    import pytest

    from tests.conftest import run_cli
    crash = CrashAfter(n)
    with monkeypatch.context() as patch:
        install_session_hooks(patch, **{"after-call": crash.after_call, "before-call": crash.before_call})
        with pytest.raises(SimulatedCrash):
            run_cli(*argv)
