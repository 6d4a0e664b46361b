"""Network Firewall (create_firewall): every connection from the private subnets to the
internet passes a stateful domain allowlist (TLS SNI and HTTP Host) before the NAT gateway.

Built as the reference does (firewall subnet in the NAT's zone, its route table to the
NAT, a STATEFUL allowlist rule group, a policy that drops other established traffic,
the private default route through the firewall endpoint), with two of its known gaps
closed:

- Return traffic comes back through the firewall too: the public route table sends the
  private subnets' CIDRs to the endpoint. Without that the NAT answers straight to the
  pods, the stateful engine sees half of each flow and drops it.
- The allowlist always includes what the stack itself must reach (the EKS API, ECR,
  STS and the other regional AWS APIs, Route 53, the image registries the charts pull
  from, Let's Encrypt when used); the user's firewall_allowed_fqdns come on top.
  The reference allows beacon.langchain.com alone, which strands nodes and pods.

Destroy puts the private default route back on the NAT gateway before the firewall
goes, so the VPC never holds a route to a deleted endpoint.
"""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.errors import StepError
from provisioner.reaping import delete_with_retry, explain_vpc
from provisioner.waiting import wait_until

from ._network import DEFAULT_ROUTE, delete_route_table, ensure_route_table, ensure_subnet, find_tagged
from .base import Finding, Step, register

RULE_GROUP_CAPACITY = 100
FIREWALL_EXPECTED_SECONDS = 420  # AWS takes 5-10 minutes to bring an endpoint up
STATEFUL = "STATEFUL"
STRICT_ORDER = {"RuleOrder": "STRICT_ORDER"}  # required by the drop_established default action


def stack_fqdns(config) -> list[str]:
    """Domains the stack cannot run without (a leading dot allows every subdomain)."""
    region = config["region"]
    needed = [f".{region}.amazonaws.com",          # ECR, STS (IRSA), EC2, ELB, autoscaling, SSM
              ".eks.amazonaws.com",                # the cluster API endpoint the nodes join
              "sts.amazonaws.com", "route53.amazonaws.com",
              ".docker.io", "production.cloudflare.docker.com",  # LangSmith and ClickHouse images
              "public.ecr.aws", "registry.k8s.io", ".pkg.dev",    # add-on images and their mirrors
              "quay.io", ".quay.io", "ghcr.io", "pkg-containers.githubusercontent.com"]
    if config["tls_certificate_source"] == "letsencrypt":
        needed.append("acme-v02.api.letsencrypt.org")
    return needed


def allowed_fqdns(config) -> list[str]:
    return sorted(set(stack_fqdns(config)) | set(config["firewall_allowed_fqdns"]))


def names(config) -> dict:
    base = f"{config.deployment}-fw"
    return {"firewall": f"{base}-egress", "policy": f"{base}-egress-policy", "rule_group": f"{base}-egress-allow"}


def rule_group_body(config) -> dict:
    return {"RulesSource": {"RulesSourceList": {"Targets": allowed_fqdns(config),
                                                "TargetTypes": ["TLS_SNI", "HTTP_HOST"],
                                                "GeneratedRulesType": "ALLOWLIST"}},
            "StatefulRuleOptions": STRICT_ORDER}


def policy_body(rule_group_arn: str) -> dict:
    return {"StatelessDefaultActions": ["aws:forward_to_sfe"],
            "StatelessFragmentDefaultActions": ["aws:forward_to_sfe"],
            "StatefulRuleGroupReferences": [{"ResourceArn": rule_group_arn, "Priority": 1}],
            "StatefulDefaultActions": ["aws:drop_established"],
            "StatefulEngineOptions": STRICT_ORDER}


def _endpoint_id(firewall: dict, zone: str) -> str | None:
    state = firewall.get("FirewallStatus", {}).get("SyncStates", {}).get(zone, {})
    return state.get("Attachment", {}).get("EndpointId")


@register
class Firewall(Step):
    name = "firewall"
    requires = ("vpc",)

    @staticmethod
    def enabled(config) -> bool:
        return config["create_firewall"]

    # --- create ---------------------------------------------------------------------

    def create(self, ctx) -> dict:
        nfw, cfg, vpc = ctx.client("network-firewall"), ctx.config, ctx.upstream("vpc")
        zone, named = vpc["nat_gateway_az"], names(cfg)
        subnet_id = ensure_subnet(ctx, vpc["vpc_id"], "firewall", zone, cfg.firewall_subnet_cidr)
        ensure_route_table(ctx, vpc["vpc_id"], "firewall", {"NatGatewayId": vpc["nat_gateway_id"]}, [subnet_id])

        group = if_exists(nfw.describe_rule_group, RuleGroupName=named["rule_group"], Type=STATEFUL)
        if group is None:
            group = nfw.create_rule_group(RuleGroupName=named["rule_group"], Type=STATEFUL, Capacity=RULE_GROUP_CAPACITY,
                                          RuleGroup=rule_group_body(cfg), Tags=ctx.tags.as_list("fw-egress-allow"),
                                          Description=f"LangSmith {cfg.deployment} egress allowlist")
        elif group["RuleGroup"] != rule_group_body(cfg):
            group = nfw.update_rule_group(RuleGroupArn=group["RuleGroupResponse"]["RuleGroupArn"], Type=STATEFUL,
                                          UpdateToken=group["UpdateToken"], RuleGroup=rule_group_body(cfg))
        group_arn = group["RuleGroupResponse"]["RuleGroupArn"]
        ctx.record("rule_group", group_arn)

        policy = if_exists(nfw.describe_firewall_policy, FirewallPolicyName=named["policy"]) or \
            nfw.create_firewall_policy(FirewallPolicyName=named["policy"], FirewallPolicy=policy_body(group_arn),
                                       Tags=ctx.tags.as_list("fw-egress-policy"))
        policy_arn = policy["FirewallPolicyResponse"]["FirewallPolicyArn"]
        ctx.record("firewall_policy", policy_arn)

        if if_exists(nfw.describe_firewall, FirewallName=named["firewall"]) is None:
            nfw.create_firewall(FirewallName=named["firewall"], FirewallPolicyArn=policy_arn, VpcId=vpc["vpc_id"],
                                SubnetMappings=[{"SubnetId": subnet_id}], DeleteProtection=False,
                                Tags=ctx.tags.as_list("fw-egress"))
        firewall = self._wait_ready(ctx, nfw, named["firewall"], zone)
        ctx.record("firewall", firewall["Firewall"]["FirewallArn"])
        endpoint_id = _endpoint_id(firewall, zone)

        ec2 = ctx.client("ec2")
        for table_id in vpc["private_route_table_ids"]:
            self._route(ec2, table_id, [DEFAULT_ROUTE], endpoint_id)
        private_cidrs = [s["CidrBlock"] for s in ec2.describe_subnets(SubnetIds=vpc["private_subnet_ids"])["Subnets"]]
        # the return path, so the firewall sees both halves of every flow
        self._route(ec2, vpc["public_route_table_id"], private_cidrs, endpoint_id)
        return {"firewall_arn": firewall["Firewall"]["FirewallArn"], "firewall_endpoint_id": endpoint_id,
                "firewall_subnet_id": subnet_id, "firewall_policy_arn": policy_arn, "rule_group_arn": group_arn,
                "allowed_fqdns": allowed_fqdns(cfg)}

    @staticmethod
    def _wait_ready(ctx, nfw, name: str, zone: str) -> dict:
        def ready():
            firewall = nfw.describe_firewall(FirewallName=name)
            status = firewall["FirewallStatus"]["Status"]
            if status == "DELETING":
                raise StepError(f"firewall {name} is being deleted; wait for it to go, then apply again")
            return firewall if status == "READY" and _endpoint_id(firewall, zone) else None
        return wait_until(ready, what=f"firewall {name} and its endpoint in {zone}",
                          expected_seconds=FIREWALL_EXPECTED_SECONDS, timeout_seconds=1800, progress=ctx.progress)

    @staticmethod
    def _route(ec2, table_id: str, cidrs: list[str], endpoint_id: str) -> None:
        """Each CIDR through the endpoint, from one read of the table."""
        routes = {r.get("DestinationCidrBlock"): r for r in
                  ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0]["Routes"]}
        for cidr in cidrs:
            route = routes.get(cidr)
            if route is None:
                ec2.create_route(RouteTableId=table_id, DestinationCidrBlock=cidr, VpcEndpointId=endpoint_id)
            elif route.get("GatewayId") != endpoint_id or route.get("State") == "blackhole":
                ec2.replace_route(RouteTableId=table_id, DestinationCidrBlock=cidr, VpcEndpointId=endpoint_id)

    # --- verify ---------------------------------------------------------------------

    def verify(self, ctx) -> list[Finding]:
        nfw, cfg, named = ctx.client("network-firewall"), ctx.config, names(ctx.config)
        group = if_exists(nfw.describe_rule_group, RuleGroupName=named["rule_group"], Type=STATEFUL)
        if group is None:
            return [Finding(f"rule group {named['rule_group']}", "missing", missing=True)]
        findings = []
        if group["RuleGroup"] != rule_group_body(cfg):
            findings.append(Finding(f"rule group {named['rule_group']}", "allowlist differs from the config"))
        if if_exists(nfw.describe_firewall_policy, FirewallPolicyName=named["policy"]) is None:
            findings.append(Finding(f"firewall policy {named['policy']}", "missing", missing=True))
        firewall = if_exists(nfw.describe_firewall, FirewallName=named["firewall"])
        if firewall is None:
            return findings + [Finding(f"firewall {named['firewall']}", "missing", missing=True)]
        endpoints = {a["Attachment"].get("EndpointId") for a in firewall["FirewallStatus"].get("SyncStates", {}).values()}
        ctx.fact(f"firewall {named['firewall']} {firewall['FirewallStatus']['Status']} at {', '.join(sorted(endpoints))}; "
                 f"{len(allowed_fqdns(cfg))} domains allowed")
        if firewall["FirewallStatus"]["Status"] != "READY":
            findings.append(Finding(f"firewall {named['firewall']}", f"is {firewall['FirewallStatus']['Status']}"))
        for resource in ("private", "public"):
            table_id = find_tagged(ctx, "describe_route_tables", "RouteTables", "RouteTableId", resource)
            table = ctx.client("ec2").describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0] if table_id else {}
            if not any(r.get("GatewayId") in endpoints and r.get("State") != "blackhole" for r in table.get("Routes", [])):
                findings.append(Finding(f"route table {ctx.name(resource)}", "sends no traffic through the firewall"))
        return findings

    # --- destroy --------------------------------------------------------------------

    def destroy(self, ctx) -> None:
        """Found by name and tags, so it works without the state file."""
        nfw, ec2, named = ctx.client("network-firewall"), ctx.client("ec2"), names(ctx.config)
        self._unroute(ctx, ec2)
        if if_exists(nfw.describe_firewall, FirewallName=named["firewall"]) is not None:
            if_exists(nfw.delete_firewall, FirewallName=named["firewall"])
            wait_until(lambda: if_exists(nfw.describe_firewall, FirewallName=named["firewall"]) is None,
                       what=f"firewall {named['firewall']} to be deleted", expected_seconds=300,
                       timeout_seconds=1800, progress=ctx.progress)
        ctx.record("firewall", None)
        if if_exists(nfw.describe_firewall_policy, FirewallPolicyName=named["policy"]) is not None:
            delete_with_retry(lambda: nfw.delete_firewall_policy(FirewallPolicyName=named["policy"]),
                              f"firewall policy {named['policy']}", lambda: "", ctx.progress)
            # The rule group stays in use until the policy is gone (TF firewall_policy.go waits for deletion).
            wait_until(lambda: if_exists(nfw.describe_firewall_policy, FirewallPolicyName=named["policy"]) is None,
                       what=f"firewall policy {named['policy']} to be deleted", expected_seconds=30,
                       timeout_seconds=600, progress=ctx.progress)
        ctx.record("firewall_policy", None)
        if if_exists(nfw.describe_rule_group, RuleGroupName=named["rule_group"], Type=STATEFUL) is not None:
            delete_with_retry(lambda: nfw.delete_rule_group(RuleGroupName=named["rule_group"], Type=STATEFUL),
                              f"rule group {named['rule_group']}", lambda: "", ctx.progress)
        ctx.record("rule_group", None)
        self._delete_network(ctx, ec2)

    @staticmethod
    def _unroute(ctx, ec2) -> None:
        """Private default route back to the NAT (or gone, when the NAT is); return routes removed."""
        nat_id = find_tagged(ctx, "describe_nat_gateways", "NatGateways", "NatGatewayId", "nat",
                             [{"Name": "state", "Values": ["pending", "available"]}])
        for resource in ("private", "public"):
            table_id = find_tagged(ctx, "describe_route_tables", "RouteTables", "RouteTableId", resource)
            routes = ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0]["Routes"] if table_id else []
            for route in routes:
                if not route.get("GatewayId", "").startswith("vpce-") or "DestinationCidrBlock" not in route:
                    continue
                cidr = route["DestinationCidrBlock"]
                if resource == "private" and cidr == DEFAULT_ROUTE and nat_id:
                    ec2.replace_route(RouteTableId=table_id, DestinationCidrBlock=cidr, NatGatewayId=nat_id)
                else:
                    ec2.delete_route(RouteTableId=table_id, DestinationCidrBlock=cidr)

    @staticmethod
    def _delete_network(ctx, ec2) -> None:
        table_id = find_tagged(ctx, "describe_route_tables", "RouteTables", "RouteTableId", "firewall")
        if table_id:
            delete_route_table(ec2, ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0])
        ctx.record("route_table/firewall", None)
        subnet = ec2.describe_subnets(Filters=ctx.tags.ec2_filters("firewall"))["Subnets"]
        if subnet:
            delete_with_retry(lambda: ec2.delete_subnet(SubnetId=subnet[0]["SubnetId"]),
                              f"subnet {subnet[0]['SubnetId']}", lambda: explain_vpc(ec2, subnet[0]["VpcId"]),
                              ctx.progress)
        ctx.record("subnet/firewall", None)
