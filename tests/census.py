"""An independent inventory of everything in the simulated account and the fake cluster.

Written against boto3 directly, not the product's lookups, and blind to our tags: every
resource of every kind the product makes is listed, sub-resources included (policies
attached to roles, access entries, records, listeners, security-group rules, routes,
network interfaces, ...), whoever made it. moto's own objects (the default VPC and its
subnets, security group, route table) are simply part of what an account holds before
an apply. Tests compare two inventories: the named differences are what an apply made
or a destroy left.

Each entry is (kind, label). Labels are stable across runs: IDs that AWS makes up
(vpc-1a2b..., an OIDC issuer's id) are replaced by the label of what they name, so a
clean run and a resumed one can be compared entry by entry, and a duplicate shows up
as a count of 2. `Inventory.ids` maps every ID, ARN and name seen to its entry, for
checking the state's physical IDs against what exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter

import boto3

CALLER = "census"  # the access key id the census signs with: its calls are told apart in the call record
_clients: dict[tuple, object] = {}


def _client(service: str, region: str):
    """Clients are cached per endpoint: making one costs ~0.2 s, and sweeps take censuses often."""
    key = (service, region, os.environ.get("AWS_ENDPOINT_URL"))
    if key not in _clients:
        _clients[key] = boto3.session.Session(aws_access_key_id=CALLER, aws_secret_access_key=CALLER,
                                              region_name=region).client(service)
    return _clients[key]


def _name_tag(tags) -> str | None:
    return {t["Key"]: t["Value"] for t in tags or []}.get("Name")


class Inventory(Counter):
    """Counter of (kind, label); .ids maps each identifier seen to its (kind, label)."""

    def __init__(self):
        super().__init__()
        self.ids: dict[str, tuple[str, str]] = {}
        self._labels: dict[str, str] = {}  # made-up ID -> stable label, for relabelling text

    def add(self, kind: str, label: str, *identifiers: str | None) -> tuple[str, str]:
        entry = (kind, self.relabel(label))
        self[entry] += 1
        for identifier in identifiers:
            if identifier:
                self.ids[identifier] = entry
        return entry

    def alias(self, made_up_id: str | None, label: str) -> None:
        if made_up_id:
            self._labels[made_up_id] = label

    def label(self, made_up_id: str | None) -> str:
        return self._labels.get(made_up_id or "", made_up_id or "-")

    def relabel(self, text: str) -> str:
        for made_up_id in sorted(self._labels, key=len, reverse=True):
            if made_up_id in text:
                text = text.replace(made_up_id, self._labels[made_up_id])
        return text

    def digest(self, document) -> str:
        """A short fingerprint of a document (policy, ...) with made-up IDs relabelled:
        a changed setting shows up as a different entry."""
        text = document if isinstance(document, str) else json.dumps(document, sort_keys=True)
        try:
            text = json.dumps(json.loads(text), sort_keys=True)
        except ValueError:
            pass
        return hashlib.sha256(self.relabel(text).encode()).hexdigest()[:8]


def inventory(region: str = "us-east-1") -> Inventory:
    """Everything in the simulated account, by kind and stable label."""
    found = Inventory()
    _network(found, region)
    _iam_and_eks(found, region)
    _edge(found, region)
    _data(found, region)
    return found


def _network(found: Inventory, region: str) -> None:
    ec2 = _client("ec2", region)
    vpcs = ec2.describe_vpcs()["Vpcs"]
    for vpc in vpcs:
        found.alias(vpc["VpcId"], _name_tag(vpc.get("Tags")) or ("default-vpc" if vpc.get("IsDefault") else
                                                                  vpc["CidrBlock"]))
    subnets = ec2.describe_subnets()["Subnets"]
    for subnet in subnets:
        found.alias(subnet["SubnetId"], _name_tag(subnet.get("Tags")) or
                    f"{found.label(subnet['VpcId'])}/{subnet['AvailabilityZone']}/{subnet['CidrBlock']}")
    gateways = ec2.describe_internet_gateways()["InternetGateways"]
    for gateway in gateways:
        attached = ",".join(found.label(a["VpcId"]) for a in gateway.get("Attachments", []))
        found.alias(gateway["InternetGatewayId"], _name_tag(gateway.get("Tags")) or f"igw of {attached}")
    nats = [n for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] not in ("deleted", "deleting")]
    addresses = ec2.describe_addresses()["Addresses"]
    for address in addresses:
        found.alias(address["AllocationId"], _name_tag(address.get("Tags")) or f"eip {address['PublicIp']}")
        found.alias(address.get("PublicIp"), found.label(address["AllocationId"]))
    for nat in nats:
        found.alias(nat["NatGatewayId"], _name_tag(nat.get("Tags")) or f"nat in {found.label(nat['SubnetId'])}")
    groups = ec2.describe_security_groups()["SecurityGroups"]
    for group in groups:
        name = re.sub(r"^(eks-cluster-sg-.+)-[0-9a-f]{8}$", r"\1", group["GroupName"])  # AWS adds a random suffix
        found.alias(group["GroupId"], f"{name} in {found.label(group.get('VpcId'))}")
    endpoints = [e for e in ec2.describe_vpc_endpoints()["VpcEndpoints"] if e["State"].lower() not in ("deleted",
                                                                                                      "deleting")]
    for endpoint in endpoints:
        found.alias(endpoint["VpcEndpointId"], f"{endpoint['ServiceName']} in {found.label(endpoint['VpcId'])}")
    instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] not in ("terminated", "shutting-down")]
    for instance in instances:
        found.alias(instance["InstanceId"], _name_tag(instance.get("Tags")) or
                    f"instance in {found.label(instance.get('SubnetId'))}")
    tables = ec2.describe_route_tables()["RouteTables"]
    for table in tables:
        main = any(a.get("Main") for a in table.get("Associations", []))
        found.alias(table["RouteTableId"], _name_tag(table.get("Tags")) or
                    f"{'main ' if main else ''}route table of {found.label(table['VpcId'])}")
    firewall_endpoints = _firewall_endpoints(region)
    for endpoint_id, label in firewall_endpoints.items():
        found.alias(endpoint_id, label)

    for vpc in vpcs:
        found.add("vpc", found.label(vpc["VpcId"]), vpc["VpcId"])
        found.add("vpc-cidr", f"{vpc['VpcId']} {vpc['CidrBlock']}")
    for subnet in subnets:
        found.add("subnet", found.label(subnet["SubnetId"]) + f" {subnet['CidrBlock']} in {subnet['VpcId']}"
                  + (" public-ip" if subnet.get("MapPublicIpOnLaunch") else ""), subnet["SubnetId"])
    for gateway in gateways:
        attached = ",".join(a["VpcId"] for a in gateway.get("Attachments", []))
        found.add("internet-gateway", f"{gateway['InternetGatewayId']} attached to {attached or 'nothing'}",
                  gateway["InternetGatewayId"])
    for address in addresses:
        found.add("elastic-ip", f"{address['AllocationId']} for {address.get('AssociationId') and 'an interface'}",
                  address["AllocationId"], address.get("PublicIp"))
    for nat in nats:
        found.add("nat-gateway", f"{nat['NatGatewayId']} in {nat['SubnetId']} with "
                  + ",".join(a.get("AllocationId", "") for a in nat.get("NatGatewayAddresses", [])), nat["NatGatewayId"])
    for group in groups:
        found.add("security-group", group["GroupId"], group["GroupId"])
    for rule in ec2.describe_security_group_rules()["SecurityGroupRules"]:
        peer = (rule.get("CidrIpv4") or rule.get("CidrIpv6") or rule.get("PrefixListId")
                or rule.get("ReferencedGroupInfo", {}).get("GroupId"))
        found.add("security-group-rule", f"{rule['GroupId']} {'egress' if rule['IsEgress'] else 'ingress'} "
                  f"{rule['IpProtocol']} {rule.get('FromPort')}-{rule.get('ToPort')} {peer} "
                  f"{rule.get('Description', '')}".strip())
    for endpoint in endpoints:
        found.add("vpc-endpoint", f"{endpoint['VpcEndpointId']} ({endpoint['VpcEndpointType']}) route tables "
                  + ",".join(sorted(found.label(t) for t in endpoint.get("RouteTableIds", []))), endpoint["VpcEndpointId"])
    for instance in instances:
        found.add("instance", f"{instance['InstanceId']} in {instance.get('SubnetId')}", instance["InstanceId"])
    for table in tables:
        found.add("route-table", table["RouteTableId"], table["RouteTableId"])
        for route in table.get("Routes", []):
            target = next((route[k] for k in ("GatewayId", "NatGatewayId", "VpcEndpointId", "NetworkInterfaceId",
                                               "InstanceId", "TransitGatewayId", "VpcPeeringConnectionId")
                           if route.get(k)), "?")
            destination = route.get("DestinationCidrBlock") or route.get("DestinationIpv6CidrBlock") or route.get(
                "DestinationPrefixListId")
            found.add("route", f"{table['RouteTableId']}: {destination} -> {target}")
        for association in table.get("Associations", []):
            what = association.get("SubnetId") or association.get("GatewayId") or ("main" if association.get("Main")
                                                                                   else "?")
            found.add("route-table-association", f"{table['RouteTableId']} <- {what}")
    live_vpcs = {vpc["VpcId"] for vpc in vpcs}
    for acl in ec2.describe_network_acls()["NetworkAcls"]:
        if acl["VpcId"] not in live_vpcs:
            continue  # moto keeps a deleted VPC's default ACL; AWS deletes it with the VPC
        found.add("network-acl", f"{'default ' if acl.get('IsDefault') else ''}acl of {acl['VpcId']} "
                  f"with {len(acl.get('Entries', []))} entries", acl["NetworkAclId"])
    live_instances = {instance["InstanceId"] for instance in instances}
    for interface in ec2.describe_network_interfaces()["NetworkInterfaces"]:
        instance = interface.get("Attachment", {}).get("InstanceId")
        if (instance and instance not in live_instances) or interface["SubnetId"] not in found._labels:
            continue  # moto keeps a terminated instance's primary interface; AWS deletes it (DeleteOnTermination)
        description = interface.get("Description") or interface.get("InterfaceType", "interface")
        found.add("network-interface", f"{description} in {interface['SubnetId']}", interface["NetworkInterfaceId"])


def _firewall_endpoints(region: str) -> dict[str, str]:
    """Network Firewall endpoint IDs (routes point at them) -> a stable label."""
    nfw, labels = _client("network-firewall", region), {}
    for firewall in nfw.list_firewalls()["Firewalls"]:
        status = nfw.describe_firewall(FirewallName=firewall["FirewallName"]).get("FirewallStatus", {})
        for zone, state in status.get("SyncStates", {}).items():
            endpoint = state.get("Attachment", {}).get("EndpointId")
            if endpoint:
                labels[endpoint] = f"endpoint of {firewall['FirewallName']} in {zone}"
    return labels


def _iam_and_eks(found: Inventory, region: str) -> None:
    iam, eks = _client("iam", region), _client("eks", region)
    clusters = {name: eks.describe_cluster(name=name)["cluster"] for name in eks.list_clusters()["clusters"]}
    for name, cluster in clusters.items():
        issuer = cluster.get("identity", {}).get("oidc", {}).get("issuer", "").removeprefix("https://")
        if issuer:
            found.alias(issuer, f"oidc-issuer-of-{name}")
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        found.add("iam-role", f"{name} trust {found.digest(role['AssumeRolePolicyDocument'])}", role["Arn"], name)
        for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            found.add("iam-attached-policy", f"{name} <- {policy['PolicyArn']}")
        for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
            found.add("iam-inline-policy", f"{name}/{policy_name} {found.digest(document)}")
    for policy in iam.list_policies(Scope="Local")["Policies"]:
        found.add("iam-policy", policy["PolicyName"], policy["Arn"])
    for profile in iam.list_instance_profiles()["InstanceProfiles"]:
        found.add("instance-profile", f"{profile['InstanceProfileName']} with "
                  + ",".join(sorted(r["RoleName"] for r in profile["Roles"])), profile["InstanceProfileName"],
                  profile["Arn"])
    for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        url = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider["Arn"])["Url"]
        found.add("oidc-provider", url, provider["Arn"])
    for name, cluster in clusters.items():
        subnets = ",".join(sorted(found.label(s) for s in cluster.get("resourcesVpcConfig", {}).get("subnetIds", [])))
        found.add("eks-cluster", f"{name} {cluster.get('version')} in {subnets}", name, cluster.get("arn"))
        for nodegroup in eks.list_nodegroups(clusterName=name)["nodegroups"]:
            found.add("eks-nodegroup", f"{name}/{nodegroup}", nodegroup)
        for addon in eks.list_addons(clusterName=name)["addons"]:
            found.add("eks-addon", f"{name}/{addon}", addon)
        for principal in eks.list_access_entries(clusterName=name)["accessEntries"]:
            found.add("eks-access-entry", f"{name}/{principal}", principal)
            for policy in eks.list_associated_access_policies(clusterName=name, principalArn=principal)[
                    "associatedAccessPolicies"]:
                found.add("eks-access-policy", f"{name}/{principal} <- {policy['policyArn']}")


def _edge(found: Inventory, region: str) -> None:
    elbv2, acm, route53 = _client("elbv2", region), _client("acm", region), _client("route53", region)
    certificates = acm.list_certificates()["CertificateSummaryList"]
    for certificate in certificates:
        details = acm.describe_certificate(CertificateArn=certificate["CertificateArn"])["Certificate"]
        found.alias(certificate["CertificateArn"], f"certificate {certificate['DomainName']}")
        for option in details.get("DomainValidationOptions", []):
            record = option.get("ResourceRecord", {}).get("Name")
            found.alias(record and record.rstrip("."), f"validation-of-{option['DomainName']}")
        found.add("certificate", certificate["DomainName"], certificate["CertificateArn"])
    for zone in route53.list_hosted_zones()["HostedZones"]:
        zone_id = zone["Id"].split("/")[-1]
        found.add("hosted-zone", f"{zone['Name']} ({zone.get('Config', {}).get('Comment', '')})", zone_id, zone["Id"])
        for record in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]:
            target = record.get("AliasTarget", {}).get("DNSName") or ",".join(
                sorted(r["Value"] for r in record.get("ResourceRecords", [])))
            if record["Type"] in ("NS", "SOA"):
                target = "(made with the zone)"
            found.add("dns-record", f"{zone['Name']}: {record['Name'].rstrip('.')} {record['Type']} -> {target}")
    balancers = elbv2.describe_load_balancers()["LoadBalancers"]
    for balancer in balancers:
        found.alias(balancer["DNSName"], f"dns of {balancer['LoadBalancerName']}")
        found.alias(balancer["DNSName"].lower(), f"dns of {balancer['LoadBalancerName']}")
    groups = elbv2.describe_target_groups()["TargetGroups"]
    for group in groups:
        found.alias(group["TargetGroupArn"], f"target group {group['TargetGroupName']}")
        found.add("target-group", f"{group['TargetGroupName']} {group.get('Protocol')}:{group.get('Port')} "
                  f"{group.get('TargetType')}", group["TargetGroupArn"], group["TargetGroupName"])
    wafv2 = _client("wafv2", region)
    acls = wafv2.list_web_acls(Scope="REGIONAL")["WebACLs"]
    for acl in acls:
        found.alias(acl["ARN"], f"web acl {acl['Name']}")
    for balancer in balancers:
        arn = balancer["LoadBalancerArn"]
        found.alias(arn, f"load balancer {balancer['LoadBalancerName']}")
        found.add("load-balancer", f"{balancer['LoadBalancerName']} {balancer['Scheme']} "
                  + ",".join(sorted(found.label(g) for g in balancer.get("SecurityGroups", []))), arn,
                  balancer["LoadBalancerName"])
        for listener in elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]:
            actions = ",".join(f"{a['Type']}:{a.get('TargetGroupArn', '')}" for a in listener["DefaultActions"])
            certificates = ",".join(c["CertificateArn"] for c in listener.get("Certificates", []))
            found.add("listener", f"{balancer['LoadBalancerName']}:{listener['Port']} {listener['Protocol']} "
                      f"{actions} {certificates}".strip(), listener["ListenerArn"])
            for rule in elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]:
                if not rule.get("IsDefault"):
                    found.add("listener-rule", f"{balancer['LoadBalancerName']}:{listener['Port']} "
                              f"priority {rule['Priority']}", rule["RuleArn"])
        associated = wafv2.get_web_acl_for_resource(ResourceArn=arn).get("WebACL")
        if associated:
            found.add("web-acl-association", f"{associated['Name']} on {balancer['LoadBalancerName']}")
    for acl in acls:
        found.add("web-acl", acl["Name"], acl["ARN"])
    cloudtrail = _client("cloudtrail", region)
    for trail in cloudtrail.describe_trails()["trailList"]:
        found.add("trail", f"{trail['Name']} to {trail.get('S3BucketName')}", trail["TrailARN"], trail["Name"])
    nfw = _client("network-firewall", region)
    for firewall in nfw.list_firewalls()["Firewalls"]:
        found.add("firewall", firewall["FirewallName"], firewall["FirewallArn"])
    for policy in nfw.list_firewall_policies()["FirewallPolicies"]:
        found.add("firewall-policy", policy["Name"], policy["Arn"])
    for group in nfw.list_rule_groups()["RuleGroups"]:
        found.add("firewall-rule-group", group["Name"], group["Arn"])


def _data(found: Inventory, region: str) -> None:
    s3, ssm = _client("s3", region), _client("ssm", region)
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        found.add("bucket", name, name)
        try:
            found.add("bucket-policy", f"{name} {found.digest(s3.get_bucket_policy(Bucket=name)['Policy'])}")
        except s3.exceptions.ClientError:
            pass  # no policy
    for page in ssm.get_paginator("describe_parameters").paginate():
        for parameter in page["Parameters"]:
            if parameter["Name"].startswith("/aws/"):
                continue  # AWS's public parameters (AMI ids), which moto lists once one is read
            found.add("ssm-parameter", f"{parameter['Name']} {parameter['Type']}", parameter["Name"])
    rds, elasticache = _client("rds", region), _client("elasticache", region)
    for instance in rds.describe_db_instances()["DBInstances"]:
        found.add("db-instance", instance["DBInstanceIdentifier"], instance["DBInstanceIdentifier"],
                  instance["DBInstanceArn"])
        found.add("db-instance-setting", f"{instance['DBInstanceIdentifier']} {instance['Engine']} in "
                  f"{instance.get('DBSubnetGroup', {}).get('DBSubnetGroupName')}")
    for snapshot in rds.describe_db_snapshots()["DBSnapshots"]:
        automated = snapshot.get("SnapshotType") == "automated"  # named by the minute AWS took it
        found.add("db-snapshot", f"automated of {snapshot['DBInstanceIdentifier']}" if automated
                  else snapshot["DBSnapshotIdentifier"], snapshot["DBSnapshotIdentifier"])
    for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
        found.add("db-subnet-group", group["DBSubnetGroupName"], group["DBSubnetGroupName"])
    for group in elasticache.describe_replication_groups()["ReplicationGroups"]:
        if group.get("Status") != "deleting":
            found.add("replication-group", group["ReplicationGroupId"], group["ReplicationGroupId"])
    for group in elasticache.describe_cache_subnet_groups()["CacheSubnetGroups"]:
        found.add("cache-subnet-group", group["CacheSubnetGroupName"], group["CacheSubnetGroupName"])
    for group in _client("logs", region).describe_log_groups()["logGroups"]:
        found.add("log-group", group["logGroupName"], group["logGroupName"])


# --- the fake cluster ---

HELM_RELEASE_SECRET = re.compile(r"^sh\.helm\.release\.v1\.(.+)\.v(\d+)$")


def cluster_census(cluster) -> Inventory:
    """Every object the fake cluster stores, by kind and namespace/name, read from its
    store (not through the product). Helm's release records are summed up as one entry
    per release with the status of its latest revision (how many revisions a resume
    took is not a difference), and a ReplicaSet is named by its Deployment."""
    found = Inventory()
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    with cluster.lock:
        objects = list(cluster.objects.items())
    for (group, plural, namespace, name), obj in objects:
        meta = obj["metadata"]
        release = HELM_RELEASE_SECRET.match(name) if plural == "secrets" else None
        if release and meta.get("labels", {}).get("owner") == "helm":
            revision = int(release.group(2))
            if revision > latest.get((namespace, release.group(1)), (0, ""))[0]:
                latest[(namespace, release.group(1))] = (revision, meta["labels"].get("status", "?"))
            continue
        if plural == "replicasets":
            owners = [o["name"] for o in meta.get("ownerReferences", [])]
            name = f"of {','.join(owners)}" if owners else name
        kind = f"{plural}.{group}" if group else plural
        phase = " (Terminating)" if meta.get("deletionTimestamp") else ""
        if meta.get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true":
            phase += " (default)"
        found.add(kind, f"{namespace}/{name}{phase}" if namespace else f"{name}{phase}",
                  f"{namespace}/{name}" if namespace else name, name)
    for (namespace, release), (_, status) in latest.items():
        found.add("helm-release", f"{namespace}/{release}: {status}", f"{namespace}/{release}")
    return found


FINAL_SNAPSHOT = re.compile(r"-final-\d+$")


def kept_on_purpose(entry: tuple[str, str]) -> bool:
    """What destroy leaves on purpose: the RDS final snapshot (unless skip_final_snapshot),
    and the CRDs the charts installed: helm never deletes CRDs (crds/ directories, and
    templates marked helm.sh/resource-policy: keep, as cert-manager's are); on EKS they go
    with the cluster, which the eks step's destroy deletes."""
    return (entry[0] == "db-snapshot" and bool(FINAL_SNAPSHOT.search(entry[1]))) or \
        entry[0] == "customresourcedefinitions.apiextensions.k8s.io"


def difference(before: Counter, after: Counter) -> dict:
    """What appeared and what went, by name: {} when nothing changed."""
    appeared, went = after - before, before - after
    return {key: sorted(value.elements()) for key, value in (("appeared", appeared), ("went", went)) if value}


def leftovers(before: Counter, after: Counter) -> dict:
    """The difference, less what destroy keeps on purpose."""
    return difference(Counter({k: v for k, v in before.items() if not kept_on_purpose(k)}),
                      Counter({k: v for k, v in after.items() if not kept_on_purpose(k)}))


def world(cluster) -> tuple[Inventory, Inventory]:
    """The account and the cluster, as the tests compare them."""
    return inventory(), cluster_census(cluster)


_fresh: dict[str, Inventory] = {}


def remember_fresh_account(cluster) -> None:
    """Called right after a reset: every fresh account (moto's defaults) and fresh cluster
    are alike, so the first one seen in this process is the reference for census()."""
    if not _fresh:
        _fresh["aws"], _fresh["cluster"] = world(cluster)


def _beyond(fresh: Counter, now: Counter) -> Counter:
    """Entries added to a fresh account or cluster, and ('went <kind>', label) for any taken from it."""
    changes = leftovers(fresh, now)
    return Counter(changes.get("appeared", [])) + Counter((f"went {kind}", label) for kind, label in
                                                          changes.get("went", []))


def census() -> Counter:
    """What the account holds beyond a fresh one, by kind and name ({} when nothing), less
    what destroy keeps on purpose; blind to tags: anything anyone made shows up."""
    return _beyond(_fresh["aws"], inventory())


def cluster_changes(cluster) -> Counter:
    """The same for the fake cluster: what it holds beyond a fresh EKS cluster."""
    return _beyond(_fresh["cluster"], cluster_census(cluster))


def changes_between(before: tuple[Counter, Counter], after: tuple[Counter, Counter]) -> dict:
    """What differs in the account and the cluster between two world()s, by name, less
    what destroy keeps on purpose: {} when they hold exactly the same."""
    return {f"{where} {change}": entries for where, old, new in (("aws", before[0], after[0]),
                                                                   ("cluster", before[1], after[1]))
            for change, entries in leftovers(old, new).items()}


def changes_since(before: tuple[Counter, Counter], cluster) -> dict:
    """changes_between(before, the world now)."""
    return changes_between(before, world(cluster))
