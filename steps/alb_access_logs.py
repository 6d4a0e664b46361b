"""ALB access logs (alb_access_logs_enabled): a private, encrypted bucket that only Elastic
Load Balancing may write to, under alb/AWSLogs/<account>/. The alb step turns logging on."""

from __future__ import annotations

from ._buckets import bucket_policy_of, derived_name, empty_and_delete, ensure_bucket_policy, ensure_private_bucket
from .base import Finding, Step, register

# Regions that predate the log-delivery service principal deliver as this ELB account.
ELB_ACCOUNTS = {"us-east-1": "127311923021", "us-east-2": "033677994240", "us-west-1": "027434742980",
                "us-west-2": "797873946194", "ca-central-1": "985666609251", "eu-west-1": "156460612806",
                "eu-west-2": "652711504416", "eu-west-3": "009996457667", "eu-central-1": "054676820928",
                "eu-north-1": "897822967062", "ap-south-1": "718504428378", "ap-northeast-1": "582318560864",
                "ap-northeast-2": "600734575887", "ap-southeast-1": "114774131450",
                "ap-southeast-2": "783225319266", "sa-east-1": "507241528517"}


def bucket_policy(bucket: str, account: str, region: str) -> dict:
    resource = f"arn:aws:s3:::{bucket}/alb/AWSLogs/{account}/*"
    statements = [{"Sid": "LogDelivery", "Effect": "Allow",
                   "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                   "Action": "s3:PutObject", "Resource": resource,
                   "Condition": {"StringEquals": {"aws:SourceAccount": account}}}]
    if region in ELB_ACCOUNTS:
        statements.append({"Sid": "RegionalElbAccount", "Effect": "Allow",
                           "Principal": {"AWS": f"arn:aws:iam::{ELB_ACCOUNTS[region]}:root"},
                           "Action": "s3:PutObject", "Resource": resource})
    return {"Version": "2012-10-17", "Statement": statements}


@register
class AlbAccessLogs(Step):
    name = "alb_access_logs"

    @staticmethod
    def enabled(config) -> bool:
        return config["alb_access_logs_enabled"]

    def create(self, ctx) -> dict:
        bucket = derived_name(ctx, "alb-logs")
        ensure_private_bucket(ctx, "bucket", bucket, "alb-logs")
        policy = bucket_policy(bucket, ctx.aws.account_id(), ctx.config["region"])
        ensure_bucket_policy(ctx, bucket, policy)
        return {"bucket_name": bucket, "prefix": "alb"}

    def verify(self, ctx) -> list[Finding]:
        s3, bucket = ctx.client("s3"), derived_name(ctx, "alb-logs")
        policy = bucket_policy_of(s3, bucket)
        if policy is None:
            return [Finding(f"bucket {bucket}", "missing or without its log-delivery policy", missing=True)]
        ctx.fact(f"access logs to bucket {bucket}")
        return []

    def destroy(self, ctx) -> None:
        empty_and_delete(ctx, derived_name(ctx, "alb-logs"))
        ctx.record("bucket", None)
