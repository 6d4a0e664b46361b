"""VPC: two or three AZs, a private and a public subnet in each, one NAT gateway.

Subnets carry the EKS and ELB role tags (private ones get internal-elb too, which the
reference leaves off). With create_vpc false the step only checks the given IDs.
"""

from __future__ import annotations

from provisioner.config import PRIVATE_BLOCKS, PUBLIC_BLOCKS, network_blocks
from provisioner.errors import StepError
from provisioner.tags import idempotency_token
from provisioner.reaping import delete_detached_interfaces, delete_endpoints, delete_with_retry, explain_vpc
from provisioner.waiting import wait_until

from ._network import DEFAULT_ROUTE, delete_route_table, ensure_route_table, ensure_subnet, find_tagged
from .base import Finding, Step, register

MAX_ZONES = 3
NAT_EXPECTED_SECONDS = 90


def subnet_layout(cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Private blocks first, public from the sixth block on (10.0.0.0/21... and 10.0.40.0/21... in a /16)."""
    blocks = network_blocks(cidr)
    return blocks[PRIVATE_BLOCKS][:zones], blocks[PUBLIC_BLOCKS][:zones]


@register
class Vpc(Step):
    name = "vpc"

    # --- create ---------------------------------------------------------------------

    def create(self, ctx) -> dict:
        if not ctx.config["create_vpc"]:
            return self._existing_network(ctx)
        ec2 = ctx.client("ec2")
        zones = self._zones(ec2)
        vpc_id = ctx.ensure("vpc", lambda: self._find_vpc(ctx), lambda: ec2.create_vpc(
            CidrBlock=ctx.config["vpc_cidr"], TagSpecifications=ctx.tags.ec2_spec("vpc", "vpc"))["Vpc"]["VpcId"])
        for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
            if not self._vpc_attribute(ec2, vpc_id, attribute):
                ec2.modify_vpc_attribute(VpcId=vpc_id, **{attribute: {"Value": True}})

        private_cidrs, public_cidrs = subnet_layout(ctx.config["vpc_cidr"], len(zones))
        cluster_tag = {f"kubernetes.io/cluster/{ctx.config.cluster_name}": "shared"}
        private, public = [], []
        for zone, private_cidr, public_cidr in zip(zones, private_cidrs, public_cidrs):
            private.append(ensure_subnet(ctx, vpc_id, f"private-{zone}", zone, private_cidr,
                                         {**cluster_tag, "kubernetes.io/role/internal-elb": "1"}))
            public.append(ensure_subnet(ctx, vpc_id, f"public-{zone}", zone, public_cidr,
                                        {**cluster_tag, "kubernetes.io/role/elb": "1"}))
            if not self._subnet(ec2, public[-1])["MapPublicIpOnLaunch"]:
                ec2.modify_subnet_attribute(SubnetId=public[-1], MapPublicIpOnLaunch={"Value": True})

        igw_id = ctx.ensure("internet_gateway", lambda: self._find_igw(ctx),
                            lambda: ec2.create_internet_gateway(TagSpecifications=ctx.tags.ec2_spec(
                                "internet-gateway", "igw"))["InternetGateway"]["InternetGatewayId"])
        if not self._igw_attached(ec2, igw_id, vpc_id):
            ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)

        allocation_id = ctx.ensure("nat_eip", lambda: self._find_eip(ctx), lambda: ec2.allocate_address(
            Domain="vpc", TagSpecifications=ctx.tags.ec2_spec("elastic-ip", "nat-eip"))["AllocationId"])
        nat_id = ctx.ensure("nat_gateway", lambda: self._find_nat(ctx), lambda: ec2.create_nat_gateway(
            SubnetId=public[0], AllocationId=allocation_id,
            ClientToken=idempotency_token(ctx.config.deployment, "nat", allocation_id),
            TagSpecifications=ctx.tags.ec2_spec("natgateway", "nat"))["NatGateway"]["NatGatewayId"])
        self._wait_for_nat(ctx, ec2, nat_id)

        public_rt = ensure_route_table(ctx, vpc_id, "public", {"GatewayId": igw_id}, public)
        # With the firewall on, the firewall step points the private default route at its endpoint.
        private_rt = ensure_route_table(ctx, vpc_id, "private", {"NatGatewayId": nat_id}, private,
                                        replace_default=not ctx.config["create_firewall"])
        return {"vpc_id": vpc_id, "vpc_cidr": ctx.config["vpc_cidr"], "azs": zones,
                "private_subnet_ids": private, "public_subnet_ids": public,
                "private_route_table_ids": [private_rt], "public_route_table_id": public_rt,
                "route_table_ids": [public_rt, private_rt], "nat_gateway_id": nat_id, "nat_gateway_az": zones[0], "internet_gateway_id": igw_id, "created": True}

    def _zones(self, ec2) -> list[str]:
        zones = ec2.describe_availability_zones(Filters=[
            {"Name": "opt-in-status", "Values": ["opt-in-not-required"]},
            {"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
        names = sorted(zone["ZoneName"] for zone in zones)
        if len(names) < 2:
            raise StepError(f"the region offers {len(names)} usable availability zone(s); EKS and RDS need at "
                            "least two: choose another region")
        return names[:MAX_ZONES]

    def _find_vpc(self, ctx) -> str | None:
        vpcs = ctx.client("ec2").describe_vpcs(Filters=ctx.tags.ec2_filters("vpc"))["Vpcs"]
        return vpcs[0]["VpcId"] if vpcs else None

    @staticmethod
    def _vpc_attribute(ec2, vpc_id: str, attribute: str) -> bool:
        name = attribute[0].lower() + attribute[1:]
        return ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=name)[attribute]["Value"]

    @staticmethod
    def _subnet(ec2, subnet_id) -> dict:
        return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]

    def _find_igw(self, ctx):
        return find_tagged(ctx, "describe_internet_gateways", "InternetGateways", "InternetGatewayId", "igw")

    @staticmethod
    def _igw_attached(ec2, igw_id, vpc_id) -> bool:
        igw = ec2.describe_internet_gateways(InternetGatewayIds=[igw_id])["InternetGateways"][0]
        return any(a["VpcId"] == vpc_id for a in igw.get("Attachments", []))

    def _find_eip(self, ctx):
        return find_tagged(ctx, "describe_addresses", "Addresses", "AllocationId", "nat-eip")

    def _find_nat(self, ctx):
        return find_tagged(ctx, "describe_nat_gateways", "NatGateways", "NatGatewayId", "nat",
                              [{"Name": "state", "Values": ["pending", "available"]}])

    @staticmethod
    def _wait_for_nat(ctx, ec2, nat_id) -> None:
        def available():
            nat = ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"][0]
            if nat["State"] == "failed":
                raise StepError(f"NAT gateway {nat_id} failed: {nat.get('FailureMessage', 'no reason given')}; "
                                "destroy it (or run destroy) and apply again")
            return nat["State"] == "available"
        wait_until(available, what=f"NAT gateway {nat_id}", expected_seconds=NAT_EXPECTED_SECONDS,
                   timeout_seconds=900, progress=ctx.progress)

    def _existing_network(self, ctx) -> dict:
        """Bring-your-own VPC: check the given IDs and pass them on; create nothing."""
        ec2, cfg = ctx.client("ec2"), ctx.config
        problems = self._check_existing(ec2, cfg)
        if problems:
            raise StepError("; ".join(problems))
        for seen in (cfg["vpc_id"], *cfg["private_subnets"], *cfg["public_subnets"]):
            ctx.aws.remember(seen)  # seen just now: a NotFound by id is AWS catching up (retry.py)
        vpc = ec2.describe_vpcs(VpcIds=[cfg["vpc_id"]])["Vpcs"][0]
        tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [cfg["vpc_id"]]}])["RouteTables"]
        subnets = ec2.describe_subnets(SubnetIds=cfg["private_subnets"])["Subnets"]
        return {"vpc_id": cfg["vpc_id"], "vpc_cidr": vpc["CidrBlock"],
                "azs": sorted({s["AvailabilityZone"] for s in subnets}),
                "private_subnet_ids": list(cfg["private_subnets"]), "public_subnet_ids": list(cfg["public_subnets"]),
                "private_route_table_ids": [], "route_table_ids": sorted(t["RouteTableId"] for t in tables),
                "created": False}

    @staticmethod
    def _check_existing(ec2, cfg) -> list[str]:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [cfg["vpc_id"]]}])["Vpcs"]
        if not vpcs:
            return [f"vpc_id {cfg['vpc_id']} does not exist in {cfg['region']}: check the id and region"]
        problems = []
        for key in ("private_subnets", "public_subnets"):
            found = ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": cfg[key]}])["Subnets"]
            missing = sorted(set(cfg[key]) - {s["SubnetId"] for s in found})
            if missing:
                problems.append(f"{key}: {', '.join(missing)} not found")
            outside = sorted(s["SubnetId"] for s in found if s["VpcId"] != cfg["vpc_id"])
            if outside:
                problems.append(f"{key}: {', '.join(outside)} are not in {cfg['vpc_id']}")
            if len({s["AvailabilityZone"] for s in found}) < 2:
                problems.append(f"{key}: the subnets must span at least two availability zones")
        return problems

    # --- verify ---------------------------------------------------------------------

    def verify(self, ctx) -> list[Finding]:
        ec2, cfg = ctx.client("ec2"), ctx.config
        if not cfg["create_vpc"]:
            return [Finding("vpc", problem) for problem in self._check_existing(ec2, cfg)]
        vpc_id = self._find_vpc(ctx)
        if vpc_id is None:
            return [Finding("vpc", f"{ctx.name('vpc')} does not exist", missing=True)]
        findings = []
        vpc = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]
        ctx.fact(f"{vpc_id} {vpc['CidrBlock']}")
        if vpc["CidrBlock"] != cfg["vpc_cidr"]:
            findings.append(Finding("vpc", f"CIDR is {vpc['CidrBlock']}, config says {cfg['vpc_cidr']} "
                                           "(a VPC's CIDR cannot change: destroy and apply to move it)"))
        for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
            if not self._vpc_attribute(ec2, vpc_id, attribute):
                findings.append(Finding("vpc", f"{attribute} is off"))
        zones = self._zones(ec2)
        for zone in zones:
            for kind in ("private", "public"):
                subnet_id = find_tagged(ctx, "describe_subnets", "Subnets", "SubnetId", f"{kind}-{zone}")
                if subnet_id is None:
                    findings.append(Finding(f"subnet {kind}-{zone}", "missing", missing=True))
                elif kind == "public" and not self._subnet(ec2, subnet_id)["MapPublicIpOnLaunch"]:
                    findings.append(Finding(f"subnet {kind}-{zone}", "does not map public IPs on launch"))
        igw_id = self._find_igw(ctx)
        if igw_id is None or not self._igw_attached(ec2, igw_id, vpc_id):
            findings.append(Finding("internet gateway", "missing or detached", missing=igw_id is None))
        nat_id = self._find_nat(ctx)
        if nat_id is None:
            findings.append(Finding("NAT gateway", "missing", missing=True))
        for resource, target_key in (("public", "GatewayId"), ("private", "NatGatewayId")):
            table_id = find_tagged(ctx, "describe_route_tables", "RouteTables", "RouteTableId", resource)
            if table_id is None:
                findings.append(Finding(f"route table {resource}", "missing", missing=True))
                continue
            table = ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0]
            default = next((r for r in table["Routes"] if r.get("DestinationCidrBlock") == DEFAULT_ROUTE), None)
            through_firewall = (resource == "private" and cfg["create_firewall"]
                                and (default or {}).get("GatewayId", "").startswith("vpce-"))
            if default is None or default.get("State") == "blackhole" or not (default.get(target_key) or through_firewall):
                findings.append(Finding(f"route table {resource}", f"default route to the {target_key[:-2]} is missing"))
        return findings

    # --- destroy --------------------------------------------------------------------

    def destroy(self, ctx) -> None:
        """Delete what this deployment made in the VPC, and the blockers AWS would
        otherwise complain about (leftover endpoints, detached ENIs, extra groups)."""
        ec2 = ctx.client("ec2")
        for vpc in ec2.describe_vpcs(Filters=ctx.tags.ec2_filters("vpc"))["Vpcs"]:
            self._destroy_vpc(ctx, ec2, vpc["VpcId"])
        for address in ec2.describe_addresses(Filters=ctx.tags.ec2_filters())["Addresses"]:
            ec2.release_address(AllocationId=address["AllocationId"])
        ctx.forget_all()

    def _destroy_vpc(self, ctx, ec2, vpc_id: str) -> None:
        in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
        nats = ec2.describe_nat_gateways(Filter=in_vpc + [{"Name": "state", "Values": ["pending", "available"]}])
        for nat in nats["NatGateways"]:
            ec2.delete_nat_gateway(NatGatewayId=nat["NatGatewayId"])
        for nat in nats["NatGateways"]:
            wait_until(lambda nat_id=nat["NatGatewayId"]: ec2.describe_nat_gateways(NatGatewayIds=[nat_id])[
                "NatGateways"][0]["State"] == "deleted", what=f"NAT gateway {nat['NatGatewayId']} to be deleted",
                expected_seconds=60, timeout_seconds=900, progress=ctx.progress)
        delete_endpoints(ec2, vpc_id, ctx.progress)
        delete_detached_interfaces(ec2, vpc_id)
        for table in ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]:
            if any(a.get("Main") for a in table.get("Associations", [])):
                continue
            delete_route_table(ec2, table)
        for igw in ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])[
                "InternetGateways"]:
            gateway = igw["InternetGatewayId"]
            # AWS refuses the detach while an address in the VPC is public ("has some mapped public
            # address(es)"), and a deleted load balancer's or NAT's addresses linger for minutes:
            # retried, as terraform-provider-aws does (hashicorp/terraform#1325).
            delete_with_retry(lambda g=gateway: ec2.detach_internet_gateway(InternetGatewayId=g, VpcId=vpc_id),
                              f"the attachment of internet gateway {gateway}", lambda: explain_vpc(ec2, vpc_id),
                              ctx.progress)
            ec2.delete_internet_gateway(InternetGatewayId=gateway)
        for subnet in ec2.describe_subnets(Filters=in_vpc)["Subnets"]:
            delete_with_retry(lambda s=subnet["SubnetId"]: ec2.delete_subnet(SubnetId=s),
                              f"subnet {subnet['SubnetId']}", lambda: explain_vpc(ec2, vpc_id), ctx.progress)
        for group in ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]:
            if group["GroupName"] != "default":
                delete_with_retry(lambda g=group["GroupId"]: ec2.delete_security_group(GroupId=g),
                                  f"security group {group['GroupId']}", lambda: explain_vpc(ec2, vpc_id),
                                  ctx.progress)
        delete_with_retry(lambda: ec2.delete_vpc(VpcId=vpc_id), f"VPC {vpc_id}",
                          lambda: explain_vpc(ec2, vpc_id), ctx.progress)
