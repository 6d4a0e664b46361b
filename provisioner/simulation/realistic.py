"""Realistic AWS for the simulator: throttling, server errors and eventual consistency.

moto answers every call at once and consistently; AWS does not. This layer sits in front
of the moto server (a WSGI middleware, server side, so the product's real boto3 path and
botocore's own retries run) and, when configured, answers as AWS does:

- throttling and 5xx at a configurable rate, before the call reaches moto (so nothing was
  done: moto ignores idempotency tokens, so an error *after* a create would make a
  duplicate AWS would not make);
- for a configurable window after a create or change, the documented eventual-consistency
  answers, each with AWS's code and message (sources next to each rule below).

Off by default: `configure()` turns it on, `configure()` with no arguments turns it off.
A reset of the moto server (/moto-api/reset) forgets what the layer remembered.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from io import BytesIO
from urllib.parse import parse_qsl, unquote
from xml.sax.saxutils import escape


@dataclass
class Settings:
    window_seconds: float = 0.0  # how long a create or change stays unseen; 0 = consistent
    not_yet_answers: int = 0  # if set, only this many calls in the window are answered "not yet"
    throttle_rate: float = 0.0  # share of calls answered with the service's throttling error
    error_rate: float = 0.0  # share of calls answered with a 5xx
    seed: int = 0
    # Access key ids of observers (the tests' census): their calls see AWS as it stands,
    # never throttled nor "not yet", so what they count is the truth, not the weather.
    observers: tuple[str, ...] = ()

    @property
    def consistent(self) -> bool:
        return not self.window_seconds

    @property
    def active(self) -> bool:
        return bool(not self.consistent or self.throttle_rate or self.error_rate)


SETTINGS = Settings()
_random = random.Random(0)
_memory: dict[tuple[str, str], list] = {}  # (kind, key) -> [when, detail, "not yet" answers given]
_mutex = threading.Lock()
# What the layer answered, for the tests: [(service, operation, code)].
ANSWERED: list[tuple[str, str, str]] = []


def configure(window_seconds: float = 0.0, not_yet_answers: int = 0, throttle_rate: float = 0.0,
              error_rate: float = 0.0, seed: int = 0, observers: tuple[str, ...] = ()) -> None:
    """The window is wall time after each create or change; not_yet_answers makes the
    answers deterministic for tests (only the first N calls in the window are refused)."""
    global SETTINGS, _random
    SETTINGS = Settings(window_seconds, not_yet_answers, throttle_rate, error_rate, seed, observers)
    _random = random.Random(seed)
    forget()


def forget() -> None:
    with _mutex:
        _memory.clear()
        ANSWERED.clear()


def _remember(kind: str, key: str, detail: object = None) -> None:
    with _mutex:
        _memory[(kind, key)] = [time.monotonic(), detail, 0]


def _young(kind: str, key: str | None):
    """(True, detail) while key was made or changed less than the window ago (and, when
    not_yet_answers is set, has been answered "not yet" fewer times than that)."""
    with _mutex:
        found = _memory.get((kind, key or ""))
        if found and time.monotonic() - found[0] < SETTINGS.window_seconds and (
                not SETTINGS.not_yet_answers or found[2] < SETTINGS.not_yet_answers):
            found[2] += 1
            return True, found[1]
    return False, None


class Call:
    """One request as the layer sees it: service, operation, flat parameters."""

    def __init__(self, environ: dict, body: bytes):
        self.environ, self.body = environ, body
        self.service, self.access_key = _signature(environ.get("HTTP_AUTHORIZATION", ""))
        self.path = unquote(environ.get("PATH_INFO", ""))
        self.query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        form = dict(parse_qsl(body.decode("utf-8", "replace"))) if "Action=" in body[:200].decode(
            "utf-8", "replace") else {}
        self.params: dict[str, str] = {}
        if self.service == "ec2":
            self.protocol, self.operation, self.params = "ec2", form.get("Action", ""), form
        elif form:
            self.protocol, self.operation, self.params = "query", form.get("Action", ""), form
        elif target:
            self.protocol, self.operation = "json", target.split(".")[-1]
            self.params = _flatten(_json(body))
        elif self.service == "route53":  # rest-xml, its errors in an ErrorResponse (Route 53 API Reference)
            self.protocol, self.operation = "route53", _rest_operation(self.service, environ, body)
        elif self.service == "s3":
            self.protocol, self.operation = "rest-xml", _s3_operation(environ["REQUEST_METHOD"], self.query)
        else:
            self.protocol, self.operation = "rest-json", _rest_operation(self.service, environ, body)
            self.params = _flatten(_json(body))

    def param(self, name: str) -> str | None:
        return self.params.get(name)

    @property
    def bucket(self) -> str:
        return self.path.strip("/").split("/")[0]


def _signature(authorization: str) -> tuple[str, str]:
    """(signing name, access key id) from a SigV4 Authorization header."""
    match = re.search(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/aws4_request", authorization)
    return (match.group(2), match.group(1)) if match else ("", "")


def _json(body: bytes):
    try:
        return json.loads(body or b"{}")
    except ValueError:
        return {}


def _flatten(value, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return flat
    if isinstance(value, list):
        flat = {}
        for index, item in enumerate(value, 1):
            flat.update(_flatten(item, f"{prefix}.{index}"))
        return flat
    return {prefix: str(value)}


def _s3_operation(method: str, query: dict) -> str:
    if "policy" in query:
        return {"PUT": "PutBucketPolicy", "GET": "GetBucketPolicy", "DELETE": "DeleteBucketPolicy"}.get(method, "")
    if "delete" in query and method == "POST":
        return "DeleteObjects"
    return f"{method} s3"


def _rest_operation(service: str, environ: dict, body: bytes) -> str:
    from moto.core.request import Request
    from moto.core.routing import get_service_router
    try:
        copy = dict(environ, **{"wsgi.input": BytesIO(body)})
        operation, _ = get_service_router({"elasticloadbalancing": "elbv2"}.get(service, service)).match(
            Request(copy))
        return operation.name
    except Exception:  # an operation the router does not know: the layer has no rule for it
        return ""


# --- answers ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    code: str
    message: str


def _error_response(call: Call, answer: Answer) -> tuple[str, list, bytes]:
    """The error as the service's protocol carries it (botocore parses each of these)."""
    request_id = str(uuid.uuid4())
    code, message = escape(answer.code), escape(answer.message)
    headers = [("x-amzn-RequestId", request_id)]
    if call.protocol == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
        headers.append(("Content-Type", "text/xml"))
    elif call.protocol in ("query", "route53"):
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        headers.append(("Content-Type", "text/xml"))
    elif call.protocol == "rest-xml":
        body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        headers.append(("Content-Type", "application/xml"))
    else:
        body = json.dumps({"__type": answer.code, "message": answer.message, "Message": answer.message})
        headers += [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", answer.code)]
    ANSWERED.append((call.service, call.operation, answer.code))
    return f"{answer.status} Error", headers, body.encode()


# botocore's standard retry mode retries these (botocore/retries/standard.py, _THROTTLED_ERROR_CODES
# and the 5xx status codes); the codes are the ones each protocol's services answer.
THROTTLING = {"ec2": Answer(503, "RequestLimitExceeded", "Request limit exceeded."),
              "query": Answer(400, "Throttling", "Rate exceeded"),
              "rest-xml": Answer(503, "SlowDown", "Please reduce your request rate."),
              "route53": Answer(400, "Throttling", "Rate exceeded"),
              "json": Answer(400, "ThrottlingException", "Rate exceeded"),
              "rest-json": Answer(429, "ThrottlingException", "Rate exceeded")}
SERVER_ERROR = Answer(500, "InternalError", "We encountered an internal error. Please try again.")


# EC2: AWS documents that a new resource's id may not be usable at once by the next calls
# (EC2 API reference, "Eventual consistency in the Amazon EC2 API": "you might get a
# resource not found error ... InvalidInstanceID.NotFound"; the same holds for the other
# ids). Codes from the EC2 API error-codes reference; messages as EC2 words them.
EC2_NOT_FOUND = {
    "vpc-": ("InvalidVpcID.NotFound", "The vpc ID '{}' does not exist"),
    "subnet-": ("InvalidSubnetID.NotFound", "The subnet ID '{}' does not exist"),
    "igw-": ("InvalidInternetGatewayID.NotFound", "The internetGateway ID '{}' does not exist"),
    "nat-": ("NatGatewayNotFound", "The Nat Gateway {} was not found"),
    "rtb-": ("InvalidRouteTableID.NotFound", "The routeTable ID '{}' does not exist"),
    "sg-": ("InvalidGroup.NotFound", "The security group '{}' does not exist"),
    "eipalloc-": ("InvalidAllocationID.NotFound", "The allocation ID '{}' does not exist"),
    "vpce-": ("InvalidVpcEndpointId.NotFound", "The VpcEndpoint Id '{}' does not exist"),
}
EC2_CREATES = {"CreateVpc": "vpc-", "CreateSubnet": "subnet-", "CreateInternetGateway": "igw-",
               "CreateNatGateway": "nat-", "CreateRouteTable": "rtb-", "CreateSecurityGroup": "sg-",
               "AllocateAddress": "eipalloc-", "CreateVpcEndpoint": "vpce-"}
EC2_REMOVALS = ("Delete", "Release", "Detach", "Disassociate", "Terminate")  # not modelled: destroy-time answers
IAM_ROLE_CHANGES = ("CreateRole", "AttachRolePolicy", "PutRolePolicy", "UpdateAssumeRolePolicy")
# EKS cannot assume a role made moments ago: "Role with arn: <arn>, could not be assumed because
# it does not exist or the trusted entity is not correct" (terraform-aws-modules/terraform-aws-eks
# #2406; TF internal/service/eks/cluster.go and addon.go retry it for 2 min).
EKS_ROLE_PARAMS = {"CreateCluster": "roleArn", "CreateNodegroup": "nodeRole", "CreateAddon": "serviceAccountRoleArn"}


def _role_name(arn: str | None) -> str:
    return (arn or "").rsplit("/", 1)[-1]


def _eventual(call: Call) -> Answer | None:
    """The eventual-consistency answer AWS could give this call now, or None."""
    service, operation = call.service, call.operation
    if service == "ec2" and not operation.startswith(EC2_REMOVALS) and operation not in EC2_CREATES:
        for key, value in call.params.items():
            prefix = next((p for p in EC2_NOT_FOUND if value.startswith(p)), None)
            if prefix and not key.startswith("Filter") and _young("ec2", value)[0]:
                code, message = EC2_NOT_FOUND[prefix]
                return Answer(400, code, message.format(value))
    if service == "ec2" and operation == "RunInstances":
        profile = call.param("IamInstanceProfile.Name")
        if _young("instance-profile", profile)[0]:  # TF ec2_instance.go retries it; hashicorp/terraform-provider-aws #27516
            return Answer(400, "InvalidParameterValue",
                          f"Value ({profile}) for parameter iamInstanceProfile.name is invalid. "
                          "Invalid IAM Instance Profile name")
    if service == "eks" and operation in EKS_ROLE_PARAMS:
        arn = call.param(EKS_ROLE_PARAMS[operation])
        if _young("role", _role_name(arn))[0]:
            return Answer(400, "InvalidParameterException", f"Role with arn: {arn}, could not be assumed because "
                          "it does not exist or the trusted entity is not correct")
    if service == "eks" and operation == "CreateAccessEntry":
        if _young("role", _role_name(call.param("principalArn")))[0]:  # TF eks/access_entry.go
            return Answer(400, "InvalidParameterException", "The specified principalArn is invalid: invalid principal")
    if service == "s3" and operation == "PutBucketPolicy":
        named = re.findall(r"arn:aws:iam::\d+:role/[\w+=,.@/-]+", call.body.decode("utf-8", "replace"))
        if any(_young("role", _role_name(arn))[0] for arn in named):  # TF s3/bucket_policy.go retries MalformedPolicy
            return Answer(400, "MalformedPolicy", "Invalid principal in policy")
    if service == "s3" and operation == "GetBucketPolicy":
        deleted, policy = _young("deleted-bucket-policy", call.bucket)
        if deleted:  # DeleteBucketPolicy is eventually consistent (TF bucket_policy.go waits RetryUntilNotFound)
            return Answer(200, "", policy)
    if service == "cloudtrail" and operation == "CreateTrail":
        bucket = call.param("S3BucketName")
        if _young("bucket-policy", bucket)[0]:  # boto/boto3 #1766: CloudTrail validates the policy at create
            return Answer(400, "InsufficientS3BucketPolicyException",
                          f"Incorrect S3 bucket policy is detected for bucket: {bucket}")
    if service == "elasticloadbalancing" and operation == "ModifyLoadBalancerAttributes":
        keys = {v: k for k, v in call.params.items() if k.endswith(".Key")}
        bucket = call.param(keys.get("access_logs.s3.bucket", "").replace(".Key", ".Value"))
        if bucket and _young("bucket-policy", bucket)[0]:  # ELB writes a test object with the policy's grant
            return Answer(400, "InvalidConfigurationRequest",
                          f"Access Denied for bucket: {bucket}. Please check S3bucket permission")
    if service == "wafv2" and operation in ("AssociateWebACL", "GetWebACLForResource"):
        # botocore wafv2 model: "If you've just created a resource that you're using in this
        # operation, you might just need to wait a few minutes" (both exceptions).
        if _young("load-balancer", call.param("ResourceArn"))[0]:
            if operation == "AssociateWebACL":
                return Answer(400, "WAFUnavailableEntityException",
                              "AWS WAF couldn’t retrieve the resource that you requested. Retry your request.")
            return Answer(400, "WAFNonexistentItemException",
                          "AWS WAF couldn’t perform the operation because your resource doesn’t exist.")
    if service == "wafv2" and operation == "DeleteWebACL" and _young("waf-disassociation", "any")[0]:
        return Answer(400, "WAFAssociatedItemException", "AWS WAF couldn’t perform the operation because your "
                      "resource is being used by another resource or it’s associated with another resource.")
    if service == "network-firewall" and (
            (operation == "DeleteFirewallPolicy" and _young("firewall-deleted", "any")[0])
            or (operation == "DeleteRuleGroup" and _young("firewall-policy-deleted", "any")[0])):
        # TF networkfirewall/firewall_policy.go and rule_group.go retry exactly this message.
        return Answer(400, "InvalidOperationException", "Unable to delete the object because it is still in use")
    if service == "s3" and operation == "DeleteObjects" and _young("deleted-bucket-policy", call.bucket)[0]:
        return Answer(200, "AccessDenied", "")  # the old Deny still applies: see _denied_deletes
    return None


def _remember_effects(call: Call, body: bytes) -> None:
    """After a successful call: what it made or changed, and when."""
    service, operation, text = call.service, call.operation, body.decode("utf-8", "replace")
    if service == "ec2" and operation in EC2_CREATES:
        found = re.search(rf">({re.escape(EC2_CREATES[operation])}[0-9a-f]+)<", text)
        if found:
            _remember("ec2", found.group(1))
    elif service == "iam" and operation in IAM_ROLE_CHANGES:
        _remember("role", call.param("RoleName"))
    elif service == "iam" and operation in ("CreateInstanceProfile", "AddRoleToInstanceProfile"):
        _remember("instance-profile", call.param("InstanceProfileName"))
    elif service == "elasticloadbalancing" and operation == "CreateLoadBalancer":
        found = re.search(r"<LoadBalancerArn>([^<]+)</LoadBalancerArn>", text)
        if found:
            _remember("load-balancer", found.group(1))
    elif service == "s3" and operation == "PutBucketPolicy":
        _remember("bucket-policy", call.bucket, call.body.decode("utf-8", "replace"))
    elif service == "s3" and operation == "DeleteBucketPolicy":
        _, policy = _young_or_last("bucket-policy", call.bucket)
        if policy:
            _remember("deleted-bucket-policy", call.bucket, policy)
    elif service == "wafv2" and operation == "DisassociateWebACL":
        _remember("waf-disassociation", "any")
    elif service == "network-firewall" and operation == "DeleteFirewall":
        _remember("firewall-deleted", "any")
    elif service == "network-firewall" and operation == "DeleteFirewallPolicy":
        _remember("firewall-policy-deleted", "any")
    elif service == "eks" and operation == "CreateAddon":
        _remember("addon", call.path)


def _young_or_last(kind: str, key: str):
    with _mutex:
        found = _memory.get((kind, key))
    return (True, found[1]) if found else (False, None)


def _degraded_addon(call: Call, body: bytes) -> bytes:
    """EKS add-on DEGRADED while its pods cannot yet use their new IRSA role (TF
    internal/service/eks/addon.go waitAddonCreated keeps DEGRADED pending)."""
    if call.service == "eks" and call.operation == "DescribeAddon" and _young("addon", call.path.rsplit("/", 1)[0])[0]:
        described = json.loads(body)
        if described.get("addon", {}).get("status") == "ACTIVE":
            described["addon"]["status"] = "DEGRADED"
            ANSWERED.append((call.service, call.operation, "DEGRADED"))
            described["addon"]["health"] = {"issues": [{"code": "AccessDenied", "message": "sts:AssumeRoleWithWebIdentity "
                                                        "is not yet possible for the add-on's role"}]}
            return json.dumps(described).encode()
    return body


def _denied_deletes(call: Call) -> bytes:
    """DeleteObjects while a deleted policy's Deny still applies: 200 with a per-key error each."""
    keys = re.findall(r"<Object>\s*<Key>([^<]*)</Key>(?:\s*<VersionId>([^<]*)</VersionId>)?", call.body.decode())
    errors = "".join(f"<Error><Key>{key}</Key>{f'<VersionId>{version}</VersionId>' if version else ''}"
                     "<Code>AccessDenied</Code><Message>Access Denied</Message></Error>" for key, version in keys)
    return (f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"{errors}</DeleteResult>").encode()


class RealisticAws:
    """WSGI middleware in front of moto's server application."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api/reset"):
            forget()
        if not SETTINGS.active or environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = BytesIO(body)
        call = Call(environ, body)
        if not call.service or call.access_key in SETTINGS.observers:
            return self.app(environ, start_response)
        roll = _random.random()
        if roll < SETTINGS.throttle_rate:
            return self._answer(start_response, *_error_response(call, THROTTLING[call.protocol]))
        if roll < SETTINGS.throttle_rate + SETTINGS.error_rate:
            return self._answer(start_response, *_error_response(call, SERVER_ERROR))
        answer = None if SETTINGS.consistent else _eventual(call)
        if answer is not None and answer.status == 200:
            ANSWERED.append((call.service, call.operation, answer.code or "stale read"))
            content = _denied_deletes(call) if answer.code == "AccessDenied" else answer.message.encode()
            return self._answer(start_response, "200 OK", [("Content-Type", "application/xml")], content)
        if answer is not None:
            return self._answer(start_response, *_error_response(call, answer))
        captured = {}

        def capture(status, headers, exc_info=None):
            captured.update(status=status, headers=headers)
            return lambda data: None
        content = b"".join(self.app(environ, capture))
        if captured["status"][:1] == "2" and not SETTINGS.consistent:
            _remember_effects(call, content)
            content = _degraded_addon(call, content)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        return self._answer(start_response, captured["status"], headers, content)

    @staticmethod
    def _answer(start_response, status: str, headers: list, body: bytes):
        start_response(status, headers + [("Content-Length", str(len(body)))])
        return [body]
