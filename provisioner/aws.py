"""The one place that makes AWS clients.

Credentials, region and endpoint come from the standard AWS environment (AWS_PROFILE,
AWS_REGION, AWS_ENDPOINT_URL, ...); nothing here names an endpoint. Every call is
counted, split into mutating and read-only and attributed to the step that made it,
which is how apply proves a no-op re-run changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

# botocore's standard mode retries throttling and transient faults with jittered
# back-off; ten attempts ride out the bursts a parallel apply can cause.
RETRY_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 10},
                      user_agent_extra="langsmith-aws-provisioner")
READ_ONLY_PREFIXES = ("Describe", "List", "Get", "Head")

_current_step = threading.local()


# Service models are large JSON files; parsing EC2's alone takes tens of milliseconds.
# Sessions made in one process share one loader, so each model is parsed once.
_SHARED_LOADER = botocore.loaders.create_loader()


def make_session(region: str) -> boto3.session.Session:
    core = botocore.session.get_session()
    core.register_component("data_loader", _SHARED_LOADER)
    return boto3.session.Session(region_name=region, botocore_session=core)


def error_code(exc: BaseException) -> str:
    """AWS's error code for a ClientError ('' for anything else)."""
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def not_found(exc: BaseException) -> bool:
    """AWS says the thing does not exist (for something just made, see provisioner/retry.py)."""
    code = error_code(exc)
    # Route 53 and WAFv2 name their absent-resource errors differently (botocore route53 and wafv2 models).
    return "NotFound" in code or code in ("NoSuchEntity", "NoSuchBucket", "NoSuchKey", "ParameterNotFound", "404",
                                          "NoSuchHostedZone", "WAFNonexistentItemException")


def if_exists(describe, *args, **kwargs):
    """The describe call's answer, or None where AWS says the thing does not exist."""
    try:
        return describe(*args, **kwargs)
    except ClientError as exc:
        if not_found(exc):
            return None
        raise


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_ONLY_PREFIXES)


class CallLedger:
    """Counts AWS calls per step and kind, thread-safely."""

    def __init__(self):
        self._mutex = threading.Lock()
        self.by_step: dict[str, Counter] = {}

    def add(self, step: str, mutating: bool) -> None:
        with self._mutex:
            self.by_step.setdefault(step, Counter())["mutating" if mutating else "read"] += 1

    def totals(self) -> Counter:
        with self._mutex:
            total = Counter()
            for counts in self.by_step.values():
                total.update(counts)
            return total

    def for_step(self, step: str) -> Counter:
        with self._mutex:
            return Counter(self.by_step.get(step, {}))


class Aws:
    """Cached boto3 clients for one region, sharing one session and one call ledger."""

    def __init__(self, region: str):
        self.region = region
        self.session = make_session(region)
        self.ledger = CallLedger()
        self.session.events.register("before-call", self._count)
        self.session.events.register("needs-retry", self.not_yet)
        self._known: set[str] = set()
        self._clients: dict[str, object] = {}
        self._mutex = threading.Lock()
        self._identity: dict | None = None

    def client(self, service: str):
        with self._mutex:
            if service not in self._clients:
                self._clients[service] = self.session.client(service, config=RETRY_CONFIG)
            return self._clients[service]

    def identity(self) -> dict:
        """Who runs the provisioner (sts get-caller-identity), asked once."""
        if self._identity is None:
            self._identity = self.client("sts").get_caller_identity()
        return self._identity

    def account_id(self) -> str:
        return self.identity()["Account"]

    def remember(self, physical_id: str) -> None:
        """Something this run created or adopted (its id is in the state): a NotFound about
        it is AWS not seeing it yet, never its absence (provisioner/retry.py)."""
        self._known.add(physical_id)

    def forget(self, physical_id: str | None) -> None:
        self._known.discard(physical_id)

    def not_yet(self, response, attempts, caught_exception, request_dict, operation, **_):
        """botocore needs-retry hook, on every client: resend a call AWS answered NotFound
        about something known to exist, for as long as the retry policy allows."""
        if caught_exception is not None or response is None or response[0].status_code < 400:
            return None
        from .retry import not_yet_delay
        error = response[1].get("Error", {})
        started = request_dict["context"].setdefault("not_yet_since", time.monotonic())
        return not_yet_delay(operation.service_model.service_name, error.get("Code", ""), error.get("Message", ""),
                             error, self._known.__contains__, attempts, started, time.monotonic())

    def _count(self, model, **_):
        self.ledger.add(getattr(_current_step, "name", "-"), is_mutating(model.name))


class attributed_to:
    """Attribute the AWS calls made in this thread to a step while the block runs."""

    def __init__(self, step: str):
        self.step = step

    def __enter__(self):
        self.previous = getattr(_current_step, "name", "-")
        _current_step.name = self.step

    def __exit__(self, *exc):
        _current_step.name = self.previous
