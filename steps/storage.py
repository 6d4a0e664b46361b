"""The traces bucket behind an S3 gateway endpoint.

The bucket policy denies object reads and writes that do not come through the
endpoint (the reference's Allow-only policy restricts nothing), and any request
without TLS. The bucket name is derived from account, region and deployment, so a
re-run finds the same bucket without the state file.
"""

from __future__ import annotations

import hashlib
import json

from botocore.exceptions import ClientError

from provisioner.errors import StepError
from provisioner.aws import error_code, if_exists, not_found
from provisioner.reaping import delete_endpoints_by_id
from provisioner.tags import idempotency_token, tag_dict

from . import _policies as policies
from ._iam import delete_role, ensure_role, irsa_trust
from .base import Finding, Step, register

ROLE = "irsa-langsmith"
LANGSMITH_NAMESPACE = "langsmith"
# The chart's service accounts that read and write traces (the spec's IRSA table), not the whole namespace.
LANGSMITH_SERVICE_ACCOUNTS = ["langsmith-backend", "langsmith-platform-backend", "langsmith-queue",
                              "langsmith-ingest-queue", "langsmith-host-backend", "langsmith-listener"]
OBJECT_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                       "RestrictPublicBuckets": True}
ENCRYPTION_RULE = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}


def bucket_name(ctx) -> str:
    digest = hashlib.sha256(f"{ctx.aws.account_id()}/{ctx.config['region']}/{ctx.config.deployment}".encode())
    return f"{ctx.config.deployment}-traces-{digest.hexdigest()[:8]}"


def lifecycle_rules(config) -> list[dict]:
    return [{"ID": f"expire-{prefix.rstrip('/')}", "Status": "Enabled", "Filter": {"Prefix": prefix},
             "Expiration": {"Days": days}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
            for prefix, days in (("ttl_s/", config["s3_ttl_short_days"]), ("ttl_l/", config["s3_ttl_long_days"]))]


def bucket_policy(bucket: str, endpoint_id: str, langsmith_role: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "LangSmithThroughVpcEndpoint", "Effect": "Allow", "Principal": {"AWS": langsmith_role},
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"StringEquals": {"aws:SourceVpce": endpoint_id}}},
        {"Sid": "DenyObjectAccessOutsideVpcEndpoint", "Effect": "Deny", "Principal": "*",
         "Action": OBJECT_ACTIONS, "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"StringNotEquals": {"aws:SourceVpce": endpoint_id}}},
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


@register
class Storage(Step):
    name = "storage"
    requires = ("vpc", "eks")  # the bucket policy names the LangSmith IRSA role, trusted by the cluster's OIDC

    def create(self, ctx) -> dict:
        s3, ec2, vpc = ctx.client("s3"), ctx.client("ec2"), ctx.upstream("vpc")
        bucket = bucket_name(ctx)
        ctx.ensure("bucket", lambda: bucket if self._bucket_exists(s3, bucket) else None,
                   lambda: self._create_bucket(ctx, s3, bucket))
        settings = self._bucket_settings(s3, bucket)
        wanted_tags = ctx.tags.tags("traces")
        if settings["tags"] != wanted_tags:
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": ctx.tags.as_list("traces")})
        if settings["public_access_block"] != PUBLIC_ACCESS_BLOCK:
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
        if settings["encryption"] != [ENCRYPTION_RULE]:
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [ENCRYPTION_RULE]})
        if settings["lifecycle"] != lifecycle_rules(ctx.config):
            s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                                  LifecycleConfiguration={"Rules": lifecycle_rules(ctx.config)})

        route_tables = vpc["route_table_ids"]
        endpoint_id = ctx.ensure("s3_endpoint", lambda: (self._find_endpoint(ctx) or {}).get("VpcEndpointId"),
                                 lambda: ec2.create_vpc_endpoint(
                                     VpcEndpointType="Gateway", VpcId=vpc["vpc_id"], RouteTableIds=route_tables,
                                     ServiceName=f"com.amazonaws.{ctx.config['region']}.s3",
                                     ClientToken=idempotency_token(bucket, vpc["vpc_id"]),
                                     TagSpecifications=ctx.tags.ec2_spec("vpc-endpoint", "s3-endpoint"),
                                 )["VpcEndpoint"]["VpcEndpointId"])
        endpoint = ec2.describe_vpc_endpoints(VpcEndpointIds=[endpoint_id])["VpcEndpoints"][0]
        missing_tables = sorted(set(route_tables) - set(endpoint.get("RouteTableIds", [])))
        if missing_tables:
            ec2.modify_vpc_endpoint(VpcEndpointId=endpoint_id, AddRouteTableIds=missing_tables)
        role = ensure_role(ctx, ROLE, irsa_trust(ctx.upstream("eks"), LANGSMITH_NAMESPACE, LANGSMITH_SERVICE_ACCOUNTS),
                           [], "LangSmith pods: the traces bucket", policies.langsmith_s3(bucket))
        policy = bucket_policy(bucket, endpoint_id, role)
        if settings["policy"] != policy:
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        return {"bucket_name": bucket, "bucket_arn": f"arn:aws:s3:::{bucket}", "s3_vpc_endpoint_id": endpoint_id,
                "langsmith_role_arn": role}

    @staticmethod
    def _bucket_exists(s3, bucket: str) -> bool:
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

    def _create_bucket(self, ctx, s3, bucket: str) -> str:
        region = ctx.config["region"]
        extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            s3.create_bucket(Bucket=bucket, ObjectOwnership="BucketOwnerEnforced", **extra)
        except ClientError as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":
                raise
        return bucket

    @staticmethod
    def _bucket_settings(s3, bucket: str) -> dict:
        """Everything about the bucket that create converges, read without side effects."""
        def read(call, extract, absent):
            try:
                return extract(call(Bucket=bucket))
            except ClientError as exc:
                if error_code(exc) in absent:
                    return None
                raise
        return {
            "tags": read(s3.get_bucket_tagging, lambda r: tag_dict(r["TagSet"]), ("NoSuchTagSet",)) or {},
            "public_access_block": read(s3.get_public_access_block, lambda r: r["PublicAccessBlockConfiguration"],
                                        ("NoSuchPublicAccessBlockConfiguration",)),
            "encryption": read(s3.get_bucket_encryption, lambda r: r["ServerSideEncryptionConfiguration"]["Rules"],
                               ("ServerSideEncryptionConfigurationNotFoundError",)),
            "lifecycle": read(s3.get_bucket_lifecycle_configuration, lambda r: r["Rules"],
                              ("NoSuchLifecycleConfiguration",)),
            "policy": read(s3.get_bucket_policy, lambda r: json.loads(r["Policy"]), ("NoSuchBucketPolicy",)),
        }

    def _find_endpoint(self, ctx) -> dict | None:
        endpoints = ctx.client("ec2").describe_vpc_endpoints(Filters=ctx.tags.ec2_filters("s3-endpoint"))["VpcEndpoints"]
        live = [e for e in endpoints if e["State"].lower() in ("pending", "available", "pendingacceptance")]
        return live[0] if live else None

    def verify(self, ctx) -> list[Finding]:
        s3 = ctx.client("s3")
        bucket = bucket_name(ctx)
        findings = []
        if not self._bucket_exists(s3, bucket):
            findings.append(Finding(f"bucket {bucket}", "missing", missing=True))
            settings = None
        else:
            settings = self._bucket_settings(s3, bucket)
            expected = {"public_access_block": PUBLIC_ACCESS_BLOCK, "encryption": [ENCRYPTION_RULE],
                        "lifecycle": lifecycle_rules(ctx.config)}
            findings += [Finding(f"bucket {bucket}", f"{key.replace('_', ' ')} differs from the config")
                         for key, value in expected.items() if settings[key] != value]
        endpoint = self._find_endpoint(ctx)
        if endpoint is None:
            findings.append(Finding("S3 gateway endpoint", "missing", missing=True))
        else:
            tables = ctx.upstream("vpc").get("route_table_ids", [])
            missing = sorted(set(tables) - set(endpoint.get("RouteTableIds", [])))
            if missing:
                findings.append(Finding("S3 gateway endpoint", f"not on route tables {', '.join(missing)}"))
            role = if_exists(ctx.client("iam").get_role, RoleName=ctx.name(ROLE))
            if role is None:
                findings.append(Finding(f"role {ctx.name(ROLE)}", "missing", missing=True))
            elif settings is not None and settings["policy"] != bucket_policy(bucket, endpoint["VpcEndpointId"],
                                                                               role["Role"]["Arn"]):
                findings.append(Finding(f"bucket {bucket}", "policy does not restrict objects to the endpoint"))
        return findings

    def destroy(self, ctx) -> None:
        """Empty and delete the bucket (destroy's confirmation says so), then the endpoint."""
        s3 = ctx.client("s3")
        bucket = bucket_name(ctx)
        if self._bucket_exists(s3, bucket):
            # The policy denies object access from outside the VPC, which includes us.
            s3.delete_bucket_policy(Bucket=bucket)
            self._empty(ctx, s3, bucket)
            try:
                s3.delete_bucket(Bucket=bucket)
            except ClientError as exc:
                if not not_found(exc):
                    raise
        ctx.record("bucket", None)
        endpoints = ctx.client("ec2").describe_vpc_endpoints(Filters=ctx.tags.ec2_filters("s3-endpoint"))["VpcEndpoints"]
        delete_endpoints_by_id(ctx.client("ec2"), [e["VpcEndpointId"] for e in endpoints if e["State"].lower() != "deleted"],
                               ctx.progress)
        ctx.record("s3_endpoint", None)
        delete_role(ctx, ROLE)

    @staticmethod
    def _empty(ctx, s3, bucket: str) -> None:
        deleted = 0
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            for start in range(0, len(doomed), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start:start + 1000], "Quiet": True})
            deleted += len(doomed)
        if deleted:
            ctx.progress(f"emptied {bucket}: {deleted} object versions deleted")
