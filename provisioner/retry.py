"""The one retry policy: which AWS answers mean "not yet", which mean "absent", which mean
"failed", and for how long AWS documents that "not yet" can last.

AWS is eventually consistent: right after a create or a change, other calls (and other
services) may not see it yet. Such answers are retried with backoff for as long as AWS
documents propagation, then reported as failures. A NotFound for something this run has
just created, or whose id the state holds, is "not yet", never "absent, create another":
see `Aws` in provisioner/aws.py, which retries those on every client. Everything else that
is not "absent" (aws.not_found) is a failure at once; throttling and 5xx answers are
botocore's (standard retry mode, provisioner/aws.py).

Waits go through waiting.wait_until (one loop, one backoff, scaled by waiting.TIME_SCALE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from botocore.exceptions import ClientError

from . import waiting
from .aws import error_code, not_found
from .errors import StepError

# How long "not yet" can last, per kind of propagation (seconds).
# IAM/EKS: terraform-provider-aws internal/service/eks/consts.go propagationTimeout = 2 min.
# S3: internal/service/s3/bucket.go bucketPropagationTimeout = 2 min.
# EC2: internal/service/ec2/wait.go ec2PropagationTimeout = 5 min.
# WAF: internal/service/wafv2/web_acl.go retries WAFUnavailableEntity/WAFAssociatedItem 5 min.
# Network Firewall: internal/service/networkfirewall/firewall_policy.go, rule_group.go: 10 min.
# Dependents (ENIs of load balancers, RDS, ElastiCache): minutes; ten is generous (TF: 20).
PROPAGATION_SECONDS = {"iam": 120, "s3": 120, "ec2": 300, "waf": 300, "network-firewall": 600,
                       "dependents": 600}
# Which propagation a service's "not yet" NotFound follows (client hook in provisioner/aws.py).
# EC2 documents it for ids ("Eventual consistency in the Amazon EC2 API") and names the id
# in each NotFound message; elsewhere the call sites handle their own answers.
SERVICE_PROPAGATION = {"ec2": "ec2"}


@dataclass(frozen=True)
class Answer:
    """An AWS error answer: its code, and text its message must contain (any of them)."""
    code: str
    says: tuple[str, ...] = ()

    def matches(self, exc: BaseException) -> bool:
        if error_code(exc) != self.code:
            return False
        message = exc.response.get("Error", {}).get("Message", "") or ""
        return not self.says or any(text in message for text in self.says)


# EKS cannot assume a role created or changed moments ago. The messages are those
# terraform-provider-aws internal/service/eks/cluster.go retries for propagationTimeout
# (e.g. "Role with arn: ..., could not be assumed because it does not exist or the trusted
# entity is not correct", terraform-aws-modules/terraform-aws-eks #2406); addon.go retries
# CreateAddon on "does not exist" / "CREATE_FAILED".
ROLE_NOT_ASSUMABLE_YET = (Answer("InvalidParameterException", (
    "does not exist", "Error in role params", "trusted entity is not correct", "could not be assumed",
    "doesn't have the Amazon EKS Managed Policies", "IAM role's policy must include", "CREATE_FAILED")),)
# CreateAccessEntry for a role made moments ago (TF internal/service/eks/access_entry.go).
PRINCIPAL_NOT_KNOWN_YET = (Answer("InvalidParameterException", ("invalid principal",)),)
# RunInstances with an instance profile made moments ago: "Value (x) for parameter
# iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name" (TF ec2_instance.go
# retries "Invalid IAM Instance Profile" and " has no associated IAM Roles").
INSTANCE_PROFILE_NOT_KNOWN_YET = (Answer("InvalidParameterValue", (
    "Invalid IAM Instance Profile", "iamInstanceProfile", "has no associated IAM Roles")),)
# PutBucketPolicy naming a role made moments ago: MalformedPolicy "Invalid principal in policy";
# NoSuchBucket right after CreateBucket (TF internal/service/s3/bucket_policy.go retries both 2 min).
BUCKET_POLICY_NOT_ACCEPTED_YET = (Answer("MalformedPolicy"), Answer("NoSuchBucket"))
# CreateTrail before the bucket policy propagated: "Incorrect S3 bucket policy is detected for
# bucket: <bucket>" (boto/boto3 #1766). TF relies on the policy's read-back wait instead.
TRAIL_BUCKET_POLICY_NOT_SEEN_YET = (Answer("InsufficientS3BucketPolicyException"),)
# ELB access-log delivery checks the bucket policy: "Access Denied for bucket: <bucket>. Please
# check S3bucket permission" (kubernetes-sigs/aws-load-balancer-controller #1956). Also what a
# wrong policy answers: after the S3 propagation window it is reported as a failure.
LOG_BUCKET_POLICY_NOT_SEEN_YET = (Answer("InvalidConfigurationRequest", ("Access Denied for bucket",)),)
# WAF does not see a load balancer (or managed rule group) made moments ago. botocore's wafv2
# model: WAFUnavailableEntityException "If you've just created a resource ... wait a few
# minutes"; WAFNonexistentItemException says the same. TF web_acl_association.go retries.
WAF_ENTITY_NOT_SEEN_YET = (Answer("WAFUnavailableEntityException"), Answer("WAFNonexistentItemException"))
# Something still depends on what is being deleted (or the change has not propagated yet).
STILL_IN_USE = (
    Answer("DependencyViolation"), Answer("ResourceInUse"), Answer("ResourceInUseException"),
    Answer("InvalidDBInstanceState"), Answer("InvalidCacheClusterState"), Answer("InvalidReplicationGroupState"),
    # IAM DeleteRole/DeleteInstanceProfile right after detach (TF iam/role.go deleteRole).
    Answer("DeleteConflict"),
    # Network Firewall policy / rule group right after their user is gone (TF firewall_policy.go).
    Answer("InvalidOperationException", ("still in use",)),
    # WAF web ACL right after disassociation (TF wafv2/web_acl.go DeleteWebACL).
    Answer("WAFAssociatedItemException"),
    # RDS delete before the deletion-protection change landed (TF rds/instance.go).
    Answer("InvalidParameterCombination", ("deletion pro",)),
    # S3 DeleteBucket while late deliveries or denied deletes left objects.
    Answer("BucketNotEmpty"),
)


def is_answer(exc: BaseException, answers) -> bool:
    return any(answer.matches(exc) for answer in answers)


def until_accepted(call: Callable[[], object], *, not_yet, what: str, propagation: str,
                   progress: Callable[[str], None] | None = None, absent_is_done: bool = False):
    """call(), retried while AWS answers one of not_yet, for the documented propagation time.
    absent_is_done: a NotFound answer means the work is done (deletes). On giving up, the
    last answer is reported as a StepError naming what and AWS's message."""
    last: list[ClientError] = []

    def attempt():
        try:
            return (call(),)
        except ClientError as exc:
            if absent_is_done and not_found(exc):
                return (None,)
            if not is_answer(exc, not_yet):
                raise
            last[:] = [exc]
            if progress:
                progress(f"{what}: AWS answers {error_code(exc)} (not yet); retrying")
            return None
    seconds = PROPAGATION_SECONDS[propagation]
    try:
        return waiting.wait_until(attempt, what=what, expected_seconds=10, timeout_seconds=seconds)[0]
    except StepError as exc:
        answer = last[0].response["Error"] if last else {}
        raise StepError(f"{what}: AWS still answers {answer.get('Code')} after {seconds}s of retries "
                        f"({answer.get('Message')})") from exc


def delete_with_retry(delete: Callable[[], object], what: str, explain: Callable[[], str],
                      progress: Callable[[str], None]) -> None:
    """Delete, retrying while AWS says something still depends on it; an absent
    resource counts as deleted. On giving up, name what is in the way."""
    try:
        until_accepted(delete, not_yet=STILL_IN_USE, what=f"delete {what}", propagation="dependents",
                       progress=progress, absent_is_done=True)
    except StepError as exc:
        raise StepError(f"cannot delete {what}: {exc}. In the way: "
                        f"{explain() or 'nothing visible to this account'}") from exc


def not_yet_delay(service: str, code: str, message: str, error: dict, known: Callable[[str], bool],
                  attempts: int, started: float, now: float) -> float | None:
    """For the client hook in provisioner/aws.py: seconds to wait before resending a call AWS
    answered NotFound about something known to exist (created this run, or held by the
    state), or None when the answer stands (absent, or the propagation time is over)."""
    propagation = SERVICE_PROPAGATION.get(service)
    if propagation is None or not not_found(_as_error(code)):
        return None
    named = [message] + [str(v) for k, v in error.items() if k not in ("Code", "Message")]
    if not any(known(token) for text in named for token in _tokens(text)):
        return None
    if now - started > PROPAGATION_SECONDS[propagation] * waiting.TIME_SCALE:
        return None
    return min(0.5 * 1.5 ** attempts, 15.0) * waiting.TIME_SCALE


def _as_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}}, "-")


def _tokens(text: str) -> list[str]:
    """Identifier-like words of an AWS message ('vpc-0ab', an ARN, a name), quotes stripped."""
    return [word.strip("'\".,:;()[]") for word in text.split()]
