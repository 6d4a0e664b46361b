"""Security groups: named tcp ports open to given CIDRs, egress kept inside the VPC.

Shared by the postgres, redis and alb steps, so every group is made,
checked and removed the same way.
"""

from __future__ import annotations

from provisioner.reaping import delete_with_retry, explain_vpc

from .base import Finding


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
