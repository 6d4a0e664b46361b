"""Private S3 buckets the steps own (traces, ALB access logs, CloudTrail logs): names
derived from account, region and deployment so a re-run finds them without the state
file; public access blocked; SSE-S3; emptied (every version) before deletion."""

from __future__ import annotations

import hashlib
import json

from botocore.exceptions import ClientError

from provisioner.aws import error_code
from provisioner.errors import StepError
from provisioner.retry import BUCKET_POLICY_NOT_ACCEPTED_YET, PROPAGATION_SECONDS, STILL_IN_USE, until_accepted
from provisioner.waiting import wait_until

PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                       "RestrictPublicBuckets": True}
ENCRYPTION_RULE = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}


def derived_name(ctx, kind: str) -> str:
    digest = hashlib.sha256(f"{ctx.aws.account_id()}/{ctx.config['region']}/{ctx.config.deployment}".encode())
    return f"{ctx.config.deployment}-{kind}-{digest.hexdigest()[:8]}"


def bucket_exists(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if error_code(exc) in ("403", "AccessDenied"):
            raise StepError(f"bucket name {bucket} is taken by another account; it is derived from the "
                            "deployment name: change name_prefix or environment") from exc
        raise


def create_bucket(ctx, s3, bucket: str) -> str:
    region = ctx.config["region"]
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, ObjectOwnership="BucketOwnerEnforced", **extra)
    except ClientError as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":
            raise
    return bucket


def read_setting(s3, bucket: str, call, extract, absent: tuple[str, ...]):
    """One bucket setting, or None where S3 says it is not set."""
    try:
        return extract(call(Bucket=bucket))
    except ClientError as exc:
        if error_code(exc) in absent:
            return None
        raise


def bucket_policy_of(s3, bucket: str) -> dict | None:
    """The bucket's policy as a dict; None when it has none or the bucket is gone."""
    return read_setting(s3, bucket, s3.get_bucket_policy, lambda r: json.loads(r["Policy"]),
                        ("NoSuchBucketPolicy", "NoSuchBucket", "404"))


def ensure_bucket_policy(ctx, bucket: str, policy: dict, current: dict | None = None) -> None:
    """Put the policy unless it is already in force; S3 refuses a principal made moments ago
    (MalformedPolicy) and a bucket made moments ago (NoSuchBucket) until they propagate,
    and other services see the policy only once it reads back (TF
    internal/service/s3/bucket_policy.go retries both, then waits for the read-back)."""
    s3 = ctx.client("s3")
    if (current if current is not None else bucket_policy_of(s3, bucket)) == policy:
        return
    until_accepted(lambda: s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy)),
                   not_yet=BUCKET_POLICY_NOT_ACCEPTED_YET, what=f"bucket policy of {bucket}", propagation="s3",
                   progress=ctx.progress)
    wait_until(lambda: bucket_policy_of(s3, bucket) == policy, what=f"bucket policy of {bucket} to read back",
               expected_seconds=5, timeout_seconds=PROPAGATION_SECONDS["s3"], progress=ctx.progress)


def ensure_private_bucket(ctx, key: str, bucket: str, resource: str) -> None:
    """Create (or adopt) the bucket, then converge tags, public access block and encryption."""
    s3 = ctx.client("s3")
    ctx.ensure(key, lambda: bucket if bucket_exists(s3, bucket) else None, lambda: create_bucket(ctx, s3, bucket))
    tags = read_setting(s3, bucket, s3.get_bucket_tagging, lambda r: r["TagSet"], ("NoSuchTagSet",)) or []
    if {t["Key"]: t["Value"] for t in tags} != ctx.tags.tags(resource):
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": ctx.tags.as_list(resource)})
    if read_setting(s3, bucket, s3.get_public_access_block, lambda r: r["PublicAccessBlockConfiguration"],
                    ("NoSuchPublicAccessBlockConfiguration",)) != PUBLIC_ACCESS_BLOCK:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    if read_setting(s3, bucket, s3.get_bucket_encryption, lambda r: r["ServerSideEncryptionConfiguration"]["Rules"],
                    ("ServerSideEncryptionConfigurationNotFoundError",)) != [ENCRYPTION_RULE]:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [ENCRYPTION_RULE]})


def empty_and_delete(ctx, bucket: str) -> None:
    """Delete the policy (its Deny refuses our deletes too) and wait until S3 no longer
    returns it: a deleted policy goes on denying for a moment (TF bucket_policy.go waits
    RetryUntilNotFound). Then delete every version, checking DeleteObjects' per-key errors,
    and the bucket, again while it is not empty."""
    s3 = ctx.client("s3")
    if not bucket_exists(s3, bucket):
        return
    read_setting(s3, bucket, s3.delete_bucket_policy, lambda r: r, ("NoSuchBucketPolicy",))
    wait_until(lambda: bucket_policy_of(s3, bucket) is None, what=f"bucket policy of {bucket} to be gone",
               expected_seconds=5, timeout_seconds=PROPAGATION_SECONDS["s3"], progress=ctx.progress)
    deleted, refused = 0, []

    def empty_then_delete():
        nonlocal deleted
        deleted, refused[:] = 0, []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            for start in range(0, len(doomed), 1000):
                answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start:start + 1000], "Quiet": True})
                refused.extend(answer.get("Errors", []))
            deleted += len(doomed)
        s3.delete_bucket(Bucket=bucket)
    try:
        until_accepted(empty_then_delete, not_yet=STILL_IN_USE, what=f"delete bucket {bucket}", propagation="s3",
                       progress=ctx.progress, absent_is_done=True)
    except StepError as exc:
        if refused:
            raise StepError(f"{exc}; S3 refused to delete {len(refused)} object versions, e.g. "
                            f"{refused[0].get('Key')}: {refused[0].get('Code')} {refused[0].get('Message')}") from exc
        raise
    if deleted:
        ctx.progress(f"emptied {bucket}: {deleted} object versions deleted")
