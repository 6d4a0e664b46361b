"""CloudTrail (create_cloudtrail): a multi-region trail with log file validation, into its
own private bucket whose policy lets only this trail write."""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.retry import TRAIL_BUCKET_POLICY_NOT_SEEN_YET, until_accepted

from ._buckets import derived_name, empty_and_delete, ensure_bucket_policy, ensure_private_bucket
from .base import Finding, Step, register


def trail_name(config) -> str:
    return f"{config.deployment}-trail"


def bucket_policy(bucket: str, trail_arn: str, account: str) -> dict:
    condition = {"StringEquals": {"aws:SourceArn": trail_arn}}
    service = {"Service": "cloudtrail.amazonaws.com"}
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "CloudTrailAclCheck", "Effect": "Allow", "Principal": service, "Action": "s3:GetBucketAcl",
         "Resource": f"arn:aws:s3:::{bucket}", "Condition": condition},
        {"Sid": "CloudTrailWrite", "Effect": "Allow", "Principal": service, "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/AWSLogs/{account}/*",
         "Condition": {"StringEquals": {**condition["StringEquals"], "s3:x-amz-acl": "bucket-owner-full-control"}}},
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


@register
class CloudTrail(Step):
    name = "cloudtrail"

    @staticmethod
    def enabled(config) -> bool:
        return config["create_cloudtrail"]

    def create(self, ctx) -> dict:
        cloudtrail, s3, cfg = ctx.client("cloudtrail"), ctx.client("s3"), ctx.config
        bucket = derived_name(ctx, "cloudtrail")
        ensure_private_bucket(ctx, "bucket", bucket, "cloudtrail-logs")
        name = trail_name(cfg)
        arn = f"arn:aws:cloudtrail:{cfg['region']}:{ctx.aws.account_id()}:trail/{name}"
        policy = bucket_policy(bucket, arn, ctx.aws.account_id())
        ensure_bucket_policy(ctx, bucket, policy)
        trail = self._find(cloudtrail, name)
        if trail is None:
            # CloudTrail checks the bucket policy at create, and may not see it yet.
            trail = until_accepted(lambda: cloudtrail.create_trail(
                Name=name, S3BucketName=bucket, IsMultiRegionTrail=True, IncludeGlobalServiceEvents=True,
                EnableLogFileValidation=True, TagsList=ctx.tags.as_list("trail")),
                not_yet=TRAIL_BUCKET_POLICY_NOT_SEEN_YET, what=f"create trail {name}", propagation="s3",
                progress=ctx.progress)
        elif not (trail["IsMultiRegionTrail"] and trail["LogFileValidationEnabled"]):
            cloudtrail.update_trail(Name=name, IsMultiRegionTrail=True, EnableLogFileValidation=True,
                                    IncludeGlobalServiceEvents=True)
        ctx.record("trail", trail["TrailARN"])
        if not cloudtrail.get_trail_status(Name=name)["IsLogging"]:
            cloudtrail.start_logging(Name=name)
        return {"trail_arn": trail["TrailARN"], "bucket_name": bucket}

    @staticmethod
    def _find(cloudtrail, name: str) -> dict | None:
        found = if_exists(cloudtrail.get_trail, Name=name)
        return found["Trail"] if found else None

    def verify(self, ctx) -> list[Finding]:
        cloudtrail, name = ctx.client("cloudtrail"), trail_name(ctx.config)
        trail = self._find(cloudtrail, name)
        if trail is None:
            return [Finding(f"trail {name}", "missing", missing=True)]
        findings = []
        if not (trail["IsMultiRegionTrail"] and trail["LogFileValidationEnabled"]):
            findings.append(Finding(f"trail {name}", "not multi-region with log file validation"))
        if not cloudtrail.get_trail_status(Name=name)["IsLogging"]:
            findings.append(Finding(f"trail {name}", "not logging"))
        ctx.fact(f"trail {name} to bucket {trail.get('S3BucketName')}")
        return findings

    def destroy(self, ctx) -> None:
        cloudtrail = ctx.client("cloudtrail")
        if self._find(cloudtrail, trail_name(ctx.config)) is not None:
            cloudtrail.delete_trail(Name=trail_name(ctx.config))
        ctx.record("trail", None)
        empty_and_delete(ctx, derived_name(ctx, "cloudtrail"))
        ctx.record("bucket", None)
