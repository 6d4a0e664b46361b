"""The simulated AWS's own record of every request it received: a test double's log.

Tests read what happened here (which calls, in what order, naming which resources)
instead of trusting the product's own counters or output. It sits in front of the moto
server as WSGI middleware and reads each request off the wire as AWS would: the service
from the SigV4 credential scope, the operation from X-Amz-Target (JSON protocols), the
Action parameter (query protocols) or the method and URI matched against botocore's
service model (REST protocols), and the resource identifiers it names from its
parameters. The record is cleared when the account is reset (POST /moto-api/reset).
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import parse_qsl, unquote

import botocore.session

READ_ONLY = ("Describe", "List", "Get", "Head")
# Parameter names that name a resource: VpcId, SubnetIds.1, RoleName, LoadBalancerArn, ...
_NAMING_KEY = re.compile(r"(Id|Ids|Arn|Arns|ARN|Name|Names|Identifier|Bucket|name|arn)(\.member)?(\.\d+)*$")
_SERVICE_BY_SIGNING_NAME = {"elasticloadbalancing": "elbv2"}
_loader_session = botocore.session.get_session()


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() when the request arrived
    service: str  # botocore's service name (ec2, elbv2, wafv2, ...)
    operation: str  # the API operation (CreateVpc, DeleteWebACL, ...)
    status: int  # the HTTP status of the answer
    caller: str  # the access key id that signed the request
    names: tuple[str, ...] = field(default=())  # resource identifiers the request names

    @property
    def mutating(self) -> bool:
        return not self.operation.startswith(READ_ONLY)

    @property
    def succeeded(self) -> bool:
        return self.status < 300


class CallLog:
    """Every request the simulated AWS answered, in arrival order (thread-safe)."""

    def __init__(self):
        self._calls: list[Call] = []
        self._mutex = threading.Lock()

    def add(self, call: Call) -> None:
        with self._mutex:
            self._calls.append(call)

    def clear(self) -> None:
        with self._mutex:
            self._calls.clear()

    def calls(self, caller: str | None = None) -> list[Call]:
        with self._mutex:
            return [c for c in self._calls if caller is None or c.caller == caller]

    def mark(self) -> int:
        """A position in the log: calls(since=mark) are the ones after it."""
        with self._mutex:
            return len(self._calls)

    def since(self, mark: int, caller: str | None = None) -> list[Call]:
        with self._mutex:
            return [c for c in self._calls[mark:] if caller is None or c.caller == caller]


LOG = CallLog()


@lru_cache(maxsize=None)
def _rest_routes(service: str) -> list[tuple[str, re.Pattern, tuple[str, ...], str, int]]:
    """(method, path pattern, query keys it requires, operation, literal length) per operation."""
    model = _loader_session.get_service_model(service)
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        path, _, query = http["requestUri"].partition("?")
        pattern = re.sub(r"\\{(\w+)\\\+\\}", r"(?P<\1>.+)", re.escape(path))
        pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", pattern)
        keys = tuple(part.split("=")[0] for part in query.split("&") if part)
        routes.append((http["method"], re.compile(f"^{pattern}/?$"), keys, name, len(re.sub(r"{[^}]+}", "", path))))
    return routes


def _rest_operation(service: str, method: str, path: str, query: dict) -> tuple[str, dict]:
    best = None
    for verb, pattern, keys, name, literal in _rest_routes(service):
        if verb != method or any(key not in query for key in keys):
            continue
        match = pattern.match(path)
        if match and (best is None or (len(keys), literal) > best[0]):
            best = ((len(keys), literal), name, match.groupdict())
    return (best[1], best[2]) if best else (f"{method} {path}", {})


def _names(params, into: set[str], key: str = "") -> None:
    if isinstance(params, dict):
        for inner_key, value in params.items():
            _names(value, into, inner_key)
    elif isinstance(params, list):
        for item in params:
            _names(item, into, key)
    elif isinstance(params, str) and params and _NAMING_KEY.search(key):
        into.add(params)


def describe(environ: dict, body: bytes) -> tuple[str, str, str, tuple[str, ...]]:
    """(service, operation, caller, names) of one request, as AWS reads it off the wire."""
    scope = re.search(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    caller, signing = (scope.group(1), scope.group(2)) if scope else ("-", "-")
    service = _SERVICE_BY_SIGNING_NAME.get(signing, signing)
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    content_type = environ.get("CONTENT_TYPE", "")
    params: dict = dict(query)
    target = environ.get("HTTP_X_AMZ_TARGET")
    if "x-www-form-urlencoded" in content_type:
        params.update(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
    elif body and "json" in content_type:
        try:
            params.update(json.loads(body))
        except ValueError:
            pass
    if target:
        operation = target.rsplit(".", 1)[-1]
    elif "Action" in params:
        operation = params["Action"]
    elif service == "-":
        operation = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
    else:
        raw_path = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")).split("?")[0]
        operation, path_params = _rest_operation(service, environ["REQUEST_METHOD"], raw_path, query)  # ARNs keep %2F
        params.update({key: unquote(value) for key, value in path_params.items()})
        if service == "route53" and body:  # rest-xml bodies: the record and zone names they change
            params["Name"] = [name.decode() for name in re.findall(rb"<Name>([^<]+)</Name>", body)]
    names: set[str] = set()
    _names({k: v for k, v in params.items() if k not in ("Action", "Version")}, names)
    return service, operation, caller, tuple(sorted(names))


class Recorder:
    """WSGI middleware: notes every request in LOG, then lets the moto app answer it."""

    def __init__(self, app, log: CallLog = LOG):
        self.app, self.log = app, log

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            if environ.get("PATH_INFO") == "/moto-api/reset":
                self.log.clear()
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        arrived = time.monotonic()
        service, operation, caller, names = describe(environ, body)
        status = []

        def start(status_line, headers, exc_info=None):
            status.append(int(status_line.split()[0]))
            return start_response(status_line, headers, exc_info)
        response = self.app(environ, start)
        self.log.add(Call(arrived, service, operation, status[0] if status else 0, caller, names))
        return response


def install(server) -> None:
    """Put the recorder in front of a started ThreadedMotoServer's app."""
    server._server.app = Recorder(server._server.app)
