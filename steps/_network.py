"""Network pieces several steps make the same way: tagged EC2 lookups, route tables
(vpc and firewall steps), and security groups with named tcp ports open to given CIDRs
and egress kept inside the VPC (postgres, redis, alb, bastion).
"""

from __future__ import annotations

from provisioner.reaping import delete_with_retry, explain_vpc

from .base import Finding

DEFAULT_ROUTE = "0.0.0.0/0"


def find_tagged(ctx, method: str, key: str, id_key: str, resource: str, extra_filters=()) -> str | None:
    """The id of this deployment's EC2 resource named `resource`, or None."""
    filter_param = "Filter" if method == "describe_nat_gateways" else "Filters"  # EC2's one odd spelling
    filters = ctx.tags.ec2_filters(resource) + list(extra_filters)
    found = getattr(ctx.client("ec2"), method)(**{filter_param: filters})[key]
    return found[0][id_key] if found else None


def delete_route_table(ec2, table: dict) -> None:
    for association in table.get("Associations", []):
        ec2.disassociate_route_table(AssociationId=association["RouteTableAssociationId"])
    ec2.delete_route_table(RouteTableId=table["RouteTableId"])


def ensure_subnet(ctx, vpc_id: str, resource: str, zone: str, cidr: str, extra_tags: dict | None = None) -> str:
    return ctx.ensure(f"subnet/{resource}",
                      lambda: find_tagged(ctx, "describe_subnets", "Subnets", "SubnetId", resource),
                      lambda: ctx.client("ec2").create_subnet(
                          VpcId=vpc_id, AvailabilityZone=zone, CidrBlock=cidr,
                          TagSpecifications=ctx.tags.ec2_spec("subnet", resource, extra_tags))["Subnet"]["SubnetId"])


def route_target_matches(route: dict, target: dict) -> bool:
    return route.get("State") != "blackhole" and all(route.get(key) == value for key, value in target.items())


def ensure_route_table(ctx, vpc_id: str, resource: str, target: dict, subnet_ids, replace_default=True) -> str:
    """A tagged route table with a default route to target, associated with subnet_ids.
    replace_default False only adds a missing default route (another step owns it then)."""
    ec2 = ctx.client("ec2")
    table_id = ctx.ensure(f"route_table/{resource}",
                          lambda: find_tagged(ctx, "describe_route_tables", "RouteTables", "RouteTableId", resource),
                          lambda: ec2.create_route_table(VpcId=vpc_id, TagSpecifications=ctx.tags.ec2_spec(
                              "route-table", resource))["RouteTable"]["RouteTableId"])
    table = ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0]
    default = next((r for r in table["Routes"] if r.get("DestinationCidrBlock") == DEFAULT_ROUTE), None)
    if default is None:
        ec2.create_route(RouteTableId=table_id, DestinationCidrBlock=DEFAULT_ROUTE, **target)
    elif replace_default and not route_target_matches(default, target):
        ec2.replace_route(RouteTableId=table_id, DestinationCidrBlock=DEFAULT_ROUTE, **target)
    associated = {a.get("SubnetId") for a in table.get("Associations", [])}
    for subnet_id in subnet_ids:
        if subnet_id not in associated:
            ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet_id)
    return table_id


def _find_group(ctx, resource: str) -> dict | None:
    groups = ctx.client("ec2").describe_security_groups(Filters=ctx.tags.ec2_filters(resource))["SecurityGroups"]
    return groups[0] if groups else None


def _tcp_from(port: int, cidr: str) -> dict:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}


def _all_to(cidr: str) -> dict:
    return {"IpProtocol": "-1", "IpRanges": [{"CidrIp": cidr}]}


def _rule_gaps(group: dict, ingress: list[tuple[int, str]], egress_cidr: str) -> tuple[list, bool, bool]:
    """(ingress rules missing, egress to egress_cidr missing, egress to anywhere present)."""
    present = {(p.get("FromPort"), r.get("CidrIp")) for p in group.get("IpPermissions", [])
               if p.get("IpProtocol") == "tcp" and p.get("FromPort") == p.get("ToPort") for r in p.get("IpRanges", [])}
    egress = group.get("IpPermissionsEgress", [])
    to_vpc = any(p.get("IpProtocol") == "-1" and any(r.get("CidrIp") == egress_cidr for r in p.get("IpRanges", []))
                 for p in egress)
    to_anywhere = egress_cidr != "0.0.0.0/0" and any(
        p.get("IpProtocol") == "-1" and any(r.get("CidrIp") == "0.0.0.0/0" for r in p.get("IpRanges", []))
        for p in egress)
    return [rule for rule in ingress if rule not in present], not to_vpc, to_anywhere


def ensure_security_group(ctx, resource: str, description: str, vpc_id: str, ingress: list[tuple[int, str]],
                          egress_cidr: str) -> str:
    """A group allowing tcp (port, cidr) in, and all traffic out to egress_cidr only."""
    ec2 = ctx.client("ec2")
    group_id = ctx.ensure(f"security_group/{resource}", lambda: (_find_group(ctx, resource) or {}).get("GroupId"),
                          lambda: ec2.create_security_group(
                              GroupName=ctx.name(resource), Description=description, VpcId=vpc_id,
                              TagSpecifications=ctx.tags.ec2_spec("security-group", resource))["GroupId"])
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    missing, no_egress, open_egress = _rule_gaps(group, ingress, egress_cidr)
    if missing:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_tcp_from(p, c) for p, c in missing])
    if no_egress:
        ec2.authorize_security_group_egress(GroupId=group_id, IpPermissions=[_all_to(egress_cidr)])
    if open_egress:
        ec2.revoke_security_group_egress(GroupId=group_id, IpPermissions=[_all_to("0.0.0.0/0")])
    return group_id


def security_group_findings(ctx, resource: str, ingress: list[tuple[int, str]], egress_cidr: str | None) -> list[Finding]:
    group = _find_group(ctx, resource)
    label = f"security group {ctx.name(resource)}"
    if group is None:
        return [Finding(label, "missing", missing=True)]
    if egress_cidr is None:
        return []
    missing, no_egress, open_egress = _rule_gaps(group, ingress, egress_cidr)
    return ([Finding(label, f"no ingress on tcp/{port} from {cidr}") for port, cidr in missing]
            + [Finding(label, f"no egress to {egress_cidr}")] * no_egress
            + [Finding(label, "egress open to 0.0.0.0/0")] * open_egress)


def delete_security_group(ctx, resource: str) -> None:
    group = _find_group(ctx, resource)
    if group is None:
        return
    ec2 = ctx.client("ec2")
    delete_with_retry(lambda: ec2.delete_security_group(GroupId=group["GroupId"]),
                      f"security group {group['GroupId']}", lambda: explain_vpc(ec2, group["VpcId"]), ctx.progress)
    ctx.record(f"security_group/{resource}", None)
