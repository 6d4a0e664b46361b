"""An independent inventory of what exists in (mock) AWS for a deployment.

Written against boto3 directly, not the product's lookups, so the tests never check
the product with itself. Each entry is (kind, name); duplicates show up as repeats.
"""

from __future__ import annotations

from collections import Counter

import boto3

DEPLOYMENT_TAG = "provisioner:deployment"


def _tags(tag_list) -> dict:
    return {t["Key"]: t["Value"] for t in tag_list or []}


def census(deployment: str, region: str = "us-east-1") -> Counter:
    session = boto3.session.Session(region_name=region)
    ec2, s3, ssm = session.client("ec2"), session.client("s3"), session.client("ssm")
    rds, elasticache = session.client("rds"), session.client("elasticache")
    mine = [{"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [deployment]}]
    found: list[tuple[str, str]] = []

    def add(kind, items, name_of=lambda item: _tags(item.get("Tags")).get("Name")):
        found.extend((kind, name_of(item)) for item in items)

    add("vpc", ec2.describe_vpcs(Filters=mine)["Vpcs"])
    add("subnet", ec2.describe_subnets(Filters=mine)["Subnets"])
    add("internet-gateway", ec2.describe_internet_gateways(Filters=mine)["InternetGateways"])
    add("route-table", ec2.describe_route_tables(Filters=mine)["RouteTables"])
    add("nat-gateway", [n for n in ec2.describe_nat_gateways(Filter=mine)["NatGateways"] if n["State"] != "deleted"])
    add("elastic-ip", ec2.describe_addresses(Filters=mine)["Addresses"])
    add("security-group", ec2.describe_security_groups(Filters=mine)["SecurityGroups"])
    add("vpc-endpoint", [e for e in ec2.describe_vpc_endpoints(Filters=mine)["VpcEndpoints"]
                         if e["State"].lower() != "deleted"])
    for bucket in s3.list_buckets()["Buckets"]:
        try:
            tags = _tags(s3.get_bucket_tagging(Bucket=bucket["Name"])["TagSet"])
        except s3.exceptions.ClientError:
            tags = {}
        if tags.get(DEPLOYMENT_TAG) == deployment or bucket["Name"].startswith(f"{deployment}-"):
            found.append(("bucket", bucket["Name"]))
    for page in ssm.get_paginator("describe_parameters").paginate():
        found += [("ssm-parameter", p["Name"]) for p in page["Parameters"]
                  if p["Name"].startswith(f"/langsmith/{deployment}/")]
    for instance in rds.describe_db_instances()["DBInstances"]:
        if _tags(instance.get("TagList")).get(DEPLOYMENT_TAG) == deployment:
            found.append(("db-instance", instance["DBInstanceIdentifier"]))
    for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
        if _tags(rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"])["TagList"]).get(
                DEPLOYMENT_TAG) == deployment:
            found.append(("db-subnet-group", group["DBSubnetGroupName"]))
    for group in elasticache.describe_replication_groups()["ReplicationGroups"]:
        if group["ReplicationGroupId"].startswith(f"{deployment}-"):
            found.append(("replication-group", group["ReplicationGroupId"]))
    for group in elasticache.describe_cache_subnet_groups()["CacheSubnetGroups"]:
        if group["CacheSubnetGroupName"].startswith(f"{deployment}-"):
            found.append(("cache-subnet-group", group["CacheSubnetGroupName"]))
    return Counter(found)
