"""The traces bucket behind an S3 gateway endpoint.

The bucket policy denies object reads and writes that do not come through the
endpoint (the reference's Allow-only policy restricts nothing), and any request
without TLS. The bucket name is derived from account, region and deployment, so a
re-run finds the same bucket without the state file.
"""

from __future__ import annotations

import json

from provisioner.aws import if_exists
from provisioner.reaping import delete_endpoints_by_id

from . import _policies as policies
from ._buckets import (ENCRYPTION_RULE, PUBLIC_ACCESS_BLOCK, bucket_exists, derived_name, empty_and_delete,
                       ensure_bucket_policy, ensure_private_bucket, read_setting)
from ._iam import delete_role, ensure_role, irsa_trust
from .base import Finding, Step, register
from .langsmith import S3_WORKLOADS

ROLE = "irsa-langsmith"
LANGSMITH_NAMESPACE = "langsmith"
# The chart's service accounts that read and write traces (every workload it gives the bucket), not the
# whole namespace.
LANGSMITH_SERVICE_ACCOUNTS = sorted(S3_WORKLOADS.values())
OBJECT_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]


LIVE_ENDPOINT_STATES = ("pending", "available", "pendingacceptance")


def s3_service(config) -> str:
    return f"com.amazonaws.{config['region']}.s3"


def bucket_name(ctx) -> str:
    return derived_name(ctx, "traces")


def langsmith_trust(eks: dict) -> str:
    """The LangSmith role's trust: the chart's service accounts that get the bucket."""
    return irsa_trust(eks, LANGSMITH_NAMESPACE, LANGSMITH_SERVICE_ACCOUNTS)


def lifecycle_rules(config) -> list[dict]:
    return [{"ID": f"expire-{prefix.rstrip('/')}", "Status": "Enabled", "Filter": {"Prefix": prefix},
             "Expiration": {"Days": days}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
            for prefix, days in (("ttl_s/", config["s3_ttl_short_days"]), ("ttl_l/", config["s3_ttl_long_days"]))]


def bucket_policy(bucket: str, endpoint_ids: list[str], langsmith_role: str) -> dict:
    endpoints = endpoint_ids[0] if len(endpoint_ids) == 1 else sorted(endpoint_ids)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "LangSmithThroughVpcEndpoint", "Effect": "Allow", "Principal": {"AWS": langsmith_role},
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"StringEquals": {"aws:SourceVpce": endpoints}}},
        {"Sid": "DenyObjectAccessOutsideVpcEndpoint", "Effect": "Deny", "Principal": "*",
         "Action": OBJECT_ACTIONS, "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"StringNotEquals": {"aws:SourceVpce": endpoints}}},
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


@register
class Storage(Step):
    name = "storage"
    requires = ("vpc", "eks")  # the bucket policy names the LangSmith IRSA role, trusted by the cluster's OIDC
    data_loss = "the traces bucket and every trace payload in it"

    def create(self, ctx) -> dict:
        s3, ec2, vpc = ctx.client("s3"), ctx.client("ec2"), ctx.upstream("vpc")
        bucket = bucket_name(ctx)
        ensure_private_bucket(ctx, "bucket", bucket, "traces")
        settings = self._bucket_settings(s3, bucket, ("lifecycle", "policy"))
        if settings["lifecycle"] != lifecycle_rules(ctx.config):
            s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                                  LifecycleConfiguration={"Rules": lifecycle_rules(ctx.config)})

        endpoint_ids = self._ensure_endpoints(ctx, vpc)
        role = ensure_role(ctx, ROLE, langsmith_trust(ctx.upstream("eks")), [], "LangSmith pods: the traces bucket",
                           policies.langsmith_s3(bucket))
        ensure_bucket_policy(ctx, bucket, bucket_policy(bucket, endpoint_ids, role), current=settings["policy"])
        return {"bucket_name": bucket, "bucket_arn": f"arn:aws:s3:::{bucket}", "s3_vpc_endpoint_id": endpoint_ids[0],
                "langsmith_role_arn": role}

    def _ensure_endpoints(self, ctx, vpc: dict) -> list[str]:
        """The S3 gateway endpoints serving the VPC's route tables: a brought VPC's own endpoint
        is used as it is (a route table holds one route per prefix list, so a second endpoint
        on it fails with RouteAlreadyExists), and ours covers only the tables left over."""
        ec2 = ctx.client("ec2")
        ours = self._find_endpoint(ctx)
        theirs = [e for e in self._s3_endpoints(ctx, vpc["vpc_id"])
                  if e["VpcEndpointId"] != (ours or {}).get("VpcEndpointId")]
        served = {table for e in theirs for table in e.get("RouteTableIds", [])}
        tables = sorted(set(vpc["route_table_ids"]) - served)
        ids = [e["VpcEndpointId"] for e in theirs]
        if not tables and ours is None:
            return ids
        endpoint_id = ctx.ensure("s3_endpoint", lambda: (ours or {}).get("VpcEndpointId"),
                                 lambda: ec2.create_vpc_endpoint(
                                     VpcEndpointType="Gateway", VpcId=vpc["vpc_id"], RouteTableIds=tables,
                                     ServiceName=s3_service(ctx.config), ClientToken=ctx.client_token("s3_endpoint"),
                                     TagSpecifications=ctx.tags.ec2_spec("vpc-endpoint", "s3-endpoint"),
                                 )["VpcEndpoint"]["VpcEndpointId"])
        endpoint = ours or ec2.describe_vpc_endpoints(VpcEndpointIds=[endpoint_id])["VpcEndpoints"][0]
        missing_tables = sorted(set(tables) - set(endpoint.get("RouteTableIds", [])))
        if missing_tables:
            ec2.modify_vpc_endpoint(VpcEndpointId=endpoint_id, AddRouteTableIds=missing_tables)
        return [endpoint_id] + ids

    @staticmethod
    def _s3_endpoints(ctx, vpc_id: str) -> list[dict]:
        """Live S3 gateway endpoints in the VPC, whoever made them."""
        return [e for e in ctx.client("ec2").describe_vpc_endpoints(Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "service-name", "Values": [s3_service(ctx.config)]},
            {"Name": "vpc-endpoint-type", "Values": ["Gateway"]}])["VpcEndpoints"]
            if e["State"].lower() in LIVE_ENDPOINT_STATES]

    @staticmethod
    def _bucket_settings(s3, bucket: str, keys=("public_access_block", "encryption", "lifecycle", "policy")) -> dict:
        """The bucket settings named by keys, read without side effects."""
        readers = {
            "public_access_block": (s3.get_public_access_block, lambda r: r["PublicAccessBlockConfiguration"],
                                    ("NoSuchPublicAccessBlockConfiguration",)),
            "encryption": (s3.get_bucket_encryption, lambda r: r["ServerSideEncryptionConfiguration"]["Rules"],
                           ("ServerSideEncryptionConfigurationNotFoundError",)),
            "lifecycle": (s3.get_bucket_lifecycle_configuration, lambda r: r["Rules"],
                          ("NoSuchLifecycleConfiguration",)),
            "policy": (s3.get_bucket_policy, lambda r: json.loads(r["Policy"]), ("NoSuchBucketPolicy",)),
        }
        return {key: read_setting(s3, bucket, *readers[key]) for key in keys}

    def _find_endpoint(self, ctx) -> dict | None:
        endpoints = ctx.client("ec2").describe_vpc_endpoints(Filters=ctx.tags.ec2_filters("s3-endpoint"))["VpcEndpoints"]
        live = [e for e in endpoints if e["State"].lower() in LIVE_ENDPOINT_STATES]
        return live[0] if live else None

    def verify(self, ctx) -> list[Finding]:
        s3 = ctx.client("s3")
        bucket = bucket_name(ctx)
        findings = []
        if not bucket_exists(s3, bucket):
            findings.append(Finding(f"bucket {bucket}", "missing", missing=True))
            settings = None
        else:
            settings = self._bucket_settings(s3, bucket)
            expected = {"public_access_block": PUBLIC_ACCESS_BLOCK, "encryption": [ENCRYPTION_RULE],
                        "lifecycle": lifecycle_rules(ctx.config)}
            findings += [Finding(f"bucket {bucket}", f"{key.replace('_', ' ')} differs from the config")
                         for key, value in expected.items() if settings[key] != value]
        vpc = ctx.upstream("vpc")
        endpoints = self._s3_endpoints(ctx, vpc["vpc_id"]) if vpc.get("vpc_id") else []
        if not endpoints:
            findings.append(Finding("S3 gateway endpoint", "missing", missing=True))
        else:
            served = {table for e in endpoints for table in e.get("RouteTableIds", [])}
            missing = sorted(set(vpc.get("route_table_ids", [])) - served)
            if missing:
                findings.append(Finding("S3 gateway endpoint", f"not on route tables {', '.join(missing)}"))
            ids = [e["VpcEndpointId"] for e in endpoints]
            ctx.fact(f"bucket {bucket} reachable through gateway endpoint {', '.join(ids)} "
                     f"(on {len(served)} route tables)")
            role = if_exists(ctx.client("iam").get_role, RoleName=ctx.name(ROLE))
            if role is None:
                findings.append(Finding(f"role {ctx.name(ROLE)}", "missing", missing=True))
            elif settings is not None and settings["policy"] != bucket_policy(bucket, ids, role["Role"]["Arn"]):
                findings.append(Finding(f"bucket {bucket}", "policy does not restrict objects to the endpoint"))
        return findings

    def destroy(self, ctx) -> None:
        """Empty and delete the bucket (destroy's confirmation says so), then the endpoint."""
        empty_and_delete(ctx, bucket_name(ctx))  # the policy, which denies us too, goes first
        ctx.record("bucket", None)
        endpoints = ctx.client("ec2").describe_vpc_endpoints(Filters=ctx.tags.ec2_filters("s3-endpoint"))["VpcEndpoints"]
        delete_endpoints_by_id(ctx.client("ec2"), [e["VpcEndpointId"] for e in endpoints if e["State"].lower() != "deleted"],
                               ctx.progress)
        ctx.record("s3_endpoint", None)
        delete_role(ctx, ROLE)
