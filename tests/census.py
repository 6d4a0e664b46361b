"""An independent inventory of what exists in (mock) AWS for a deployment.

Written against boto3 directly, not the product's lookups, so the tests never check
the product with itself. Each entry is (kind, name); duplicates show up as repeats.
"""

from __future__ import annotations

import os
from collections import Counter

import boto3

DEPLOYMENT_TAG = "provisioner:deployment"


def _tags(tag_list) -> dict:
    return {t["Key"]: t["Value"] for t in tag_list or []}


_clients: dict[tuple, object] = {}


def _client(service: str, region: str):
    """Clients are cached per endpoint: making one costs ~0.2 s, and sweeps call census often."""
    key = (service, region, os.environ.get("AWS_ENDPOINT_URL"))
    if key not in _clients:
        _clients[key] = boto3.session.Session(region_name=region).client(service)
    return _clients[key]


def census(deployment: str, region: str = "us-east-1") -> Counter:
    ec2, s3, ssm = _client("ec2", region), _client("s3", region), _client("ssm", region)
    rds, elasticache = _client("rds", region), _client("elasticache", region)
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
    iam, eks = _client("iam", region), _client("eks", region)
    for role in iam.list_roles()["Roles"]:
        if _tags(iam.list_role_tags(RoleName=role["RoleName"])["Tags"]).get(DEPLOYMENT_TAG) == deployment:
            found.append(("iam-role", role["RoleName"]))
    for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        tags = iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=provider["Arn"])["Tags"]
        if _tags(tags).get(DEPLOYMENT_TAG) == deployment:
            found.append(("oidc-provider", _tags(tags).get("Name")))
    for cluster in eks.list_clusters()["clusters"]:
        if cluster.startswith(f"{deployment}-"):
            found.append(("eks-cluster", cluster))
            found += [("eks-nodegroup", n) for n in eks.list_nodegroups(clusterName=cluster)["nodegroups"]]
            found += [("eks-addon", a) for a in eks.list_addons(clusterName=cluster)["addons"]]
    for reservation in ec2.describe_instances(Filters=mine + [{"Name": "instance-state-name", "Values": [
            "pending", "running", "stopping", "stopped"]}])["Reservations"]:
        add("instance", reservation["Instances"])
    for profile in iam.list_instance_profiles()["InstanceProfiles"]:
        if profile["InstanceProfileName"].startswith(f"{deployment}-"):
            found.append(("instance-profile", profile["InstanceProfileName"]))
    elbv2 = _client("elbv2", region)
    found += [("load-balancer", lb["LoadBalancerName"]) for lb in elbv2.describe_load_balancers()["LoadBalancers"]
              if lb["LoadBalancerName"].startswith(f"{deployment}-")]
    found += [("target-group", tg["TargetGroupName"]) for tg in elbv2.describe_target_groups()["TargetGroups"]
              if tg["TargetGroupName"].startswith(f"{deployment}-")]
    found += [("web-acl", acl["Name"]) for acl in _client("wafv2", region).list_web_acls(Scope="REGIONAL")["WebACLs"]
              if acl["Name"].startswith(f"{deployment}-")]
    found += [("trail", t["Name"]) for t in _client("cloudtrail", region).describe_trails()["trailList"]
              if t["Name"].startswith(f"{deployment}-")]
    acm = _client("acm", region)
    for certificate in acm.list_certificates()["CertificateSummaryList"]:
        tags = _tags(acm.list_tags_for_certificate(CertificateArn=certificate["CertificateArn"]).get("Tags"))
        if tags.get(DEPLOYMENT_TAG) == deployment:
            found.append(("certificate", certificate["DomainName"]))
    found += [("hosted-zone", z["Name"]) for z in _client("route53", region).list_hosted_zones()["HostedZones"]
              if z.get("Config", {}).get("Comment", "").endswith(f" {deployment}")]  # the product notes its name there
    nfw = _client("network-firewall", region)
    found += [("firewall", f["FirewallName"]) for f in nfw.list_firewalls()["Firewalls"]
              if f["FirewallName"].startswith(f"{deployment}-")]
    found += [("firewall-policy", p["Name"]) for p in nfw.list_firewall_policies()["FirewallPolicies"]
              if p["Name"].startswith(f"{deployment}-")]
    found += [("rule-group", g["Name"]) for g in nfw.list_rule_groups()["RuleGroups"]
              if g["Name"].startswith(f"{deployment}-")]
    return Counter(found)


def cluster_census(cluster) -> Counter:
    """What the fake cluster holds, read from its store (not through the product): helm
    releases with the status of their latest revision, and the objects the product makes."""
    found: list[tuple[str, str]] = []
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    for secret in cluster.items("", "secrets"):
        labels = secret["metadata"].get("labels", {})
        if labels.get("owner") == "helm":
            key = (secret["metadata"]["namespace"], labels["name"])
            revision = int(labels["version"])
            if revision > latest.get(key, (0, ""))[0]:
                latest[key] = (revision, labels["status"])
        elif secret["metadata"]["name"] == "langsmith-config":
            found.append(("secret", f"{secret['metadata']['namespace']}/langsmith-config"))
    found += [("helm-release", f"{ns}/{name}: {status}") for (ns, name), (_, status) in latest.items()]
    found += [("namespace", n["metadata"]["name"]) for n in cluster.items("", "namespaces")
              if n["metadata"]["name"] not in ("default", "kube-system", "kube-public")]
    found += [("storageclass", c["metadata"]["name"] + (" (default)" if c["metadata"].get("annotations", {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true" else "")) for c in cluster.items(
        "storage.k8s.io", "storageclasses")]
    for group, plural in (("external-secrets.io", "clustersecretstores"), ("external-secrets.io", "externalsecrets"),
                          ("apiregistration.k8s.io", "apiservices")):
        found += [(plural, o["metadata"]["name"]) for o in cluster.items(group, plural)]
    return Counter(found)
