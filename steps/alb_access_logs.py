"""ALB access logs (alb_access_logs_enabled): a private, encrypted bucket that only Elastic
Load Balancing may write to, under alb/AWSLogs/<account>/. The alb step turns logging on."""

from __future__ import annotations

from provisioner.config import partition_of

from ._buckets import bucket_policy_of, derived_name, empty_and_delete, ensure_bucket_policy, ensure_private_bucket
from .base import Finding, Step, register

# Regions opened before August 2022 deliver logs as a regional ELB account, named in the
# bucket policy; later regions use the log-delivery service principal alone. The accounts are
# those of terraform-provider-aws internal/service/elb/service_account_data_source.go
# (from the ELB user guide, "Enable access logs for your Application Load Balancer").
ELB_ACCOUNTS = {"af-south-1": "098369216593", "ap-east-1": "754344448648", "ap-northeast-1": "582318560864",
                "ap-northeast-2": "600734575887", "ap-northeast-3": "383597477331", "ap-south-1": "718504428378",
                "ap-southeast-1": "114774131450", "ap-southeast-2": "783225319266",
                "ap-southeast-3": "589379963580", "ca-central-1": "985666609251", "cn-north-1": "638102146993",
                "cn-northwest-1": "037604701340", "eu-central-1": "054676820928", "eu-north-1": "897822967062",
                "eu-south-1": "635631232127", "eu-west-1": "156460612806", "eu-west-2": "652711504416",
                "eu-west-3": "009996457667", "me-south-1": "076674570225", "sa-east-1": "507241528517",
                "us-east-1": "127311923021", "us-east-2": "033677994240", "us-gov-east-1": "190560391635",
                "us-gov-west-1": "048591011584", "us-west-1": "027434742980", "us-west-2": "797873946194"}


def bucket_policy(bucket: str, account: str, region: str) -> dict:
    partition = partition_of(region)
    resource = f"arn:{partition}:s3:::{bucket}/alb/AWSLogs/{account}/*"
    statements = [{"Sid": "LogDelivery", "Effect": "Allow",
                   "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                   "Action": "s3:PutObject", "Resource": resource,
                   "Condition": {"StringEquals": {"aws:SourceAccount": account}}}]
    if region in ELB_ACCOUNTS:
        statements.append({"Sid": "RegionalElbAccount", "Effect": "Allow",
                           "Principal": {"AWS": f"arn:{partition}:iam::{ELB_ACCOUNTS[region]}:root"},
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
