"""The load balancer: one, ours, serving traffic in every ingress mode.

Its target groups (target type ip) are filled from inside the cluster by
TargetGroupBindings: the LangSmith frontend in plain ALB mode, the gateway's proxy
otherwise. So WAF, access logs and DNS always sit on the load balancer that really
serves (in the reference, plain ALB mode serves from a second, controller-made ALB),
and destroy has no controller-made load balancer to chase.

With `tls_certificate_source: letsencrypt` TLS ends at the gateway inside the cluster,
with cert-manager's certificate. An ALB cannot pass TLS through (its listeners are HTTP
or HTTPS with an ACM or IAM certificate: ELB docs, "Listeners for your Application Load
Balancers"), so in those modes it is a Network Load Balancer forwarding TCP 80 and 443
to the gateway's two ports; the WAF and ALB access logs, which need an ALB, are refused
by config validation for them.
"""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.errors import StepError
from provisioner.reaping import delete_with_retry
from provisioner.retry import LOG_BUCKET_POLICY_NOT_SEEN_YET, until_accepted
from provisioner.waiting import wait_until

from ._network import delete_security_group, ensure_security_group, security_group_findings
from .base import Finding, Step, register

# gateway -> (namespace, Service, {Service port: pod port the targets listen on}).
# Envoy Gateway runs its proxy unprivileged and shifts ports under 1024 by 10000
# (envoyproxy/gateway, internal/gatewayapi: servicePortToContainerPort); Istio's gateway
# chart maps 80 -> 80 and 443 -> 443 (gateway chart values.yaml, service.ports).
TARGETS = {"alb": ("langsmith", "langsmith-frontend", {80: 8080}),
           "nginx": ("ingress-nginx", "ingress-nginx-controller", {80: 80}),
           "istio": ("istio-system", "istio-ingressgateway", {80: 80, 443: 443}),
           "envoy": ("envoy-gateway-system", "envoy-langsmith-gateway", {80: 10080, 443: 10443})}
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
NODE_RULE = "from the LangSmith ALB"
LB_EXPECTED_SECONDS = 120


def passes_tls_through(config) -> bool:
    """TLS ends in the cluster (letsencrypt): a Network Load Balancer forwards TCP."""
    return config["tls_certificate_source"] == "letsencrypt"


def load_balancer_name(config, network: bool | None = None) -> str:
    network = passes_tls_through(config) if network is None else network
    return f"{config.deployment}-{'nlb' if network else 'alb'}"


def target_groups(config) -> dict[int, tuple[str, str, int]]:
    """Service port -> (target group name, protocol, pod port). An ALB has one HTTP group
    (HTTPS ends at the ALB); a Network Load Balancer one TCP group per gateway port.
    Names stay within ELB's 32 characters (deployment names are at most 26)."""
    _, _, ports = TARGETS[config.gateway]
    if passes_tls_through(config):
        return {port: (f"{config.deployment}-pt{port}", "TCP", pod_port) for port, pod_port in ports.items()}
    return {80: (f"{config.deployment}-{config.gateway}"[:32], "HTTP", ports[80])}


def every_target_group_name(config) -> list[str]:
    """Every name a target group of this deployment may have had, whatever the mode then."""
    names = {f"{config.deployment}-{gateway}"[:32] for gateway in TARGETS}
    return sorted(names | {f"{config.deployment}-pt{port}" for port in (80, 443)})


def find_load_balancer(elbv2, name: str) -> dict | None:
    found = if_exists(elbv2.describe_load_balancers, Names=[name])
    return found["LoadBalancers"][0] if found else None


def find_target_group(elbv2, name: str) -> dict | None:
    found = if_exists(elbv2.describe_target_groups, Names=[name])
    return found["TargetGroups"][0] if found else None


def certificate_arn(ctx) -> str | None:
    """The certificate the HTTPS listener serves: brought, or made by the dns step."""
    cfg = ctx.config
    if cfg["tls_certificate_source"] != "acm":
        return None
    return cfg["acm_certificate_arn"] or ctx.upstream("dns").get("certificate_arn")


def _ingress_rules(cfg) -> list[tuple[int, str]]:
    ports = [80] if cfg["tls_certificate_source"] == "none" else [80, 443]
    return [(port, cidr) for port in ports for cidr in cfg["alb_allowed_cidr_blocks"]]


@register
class Alb(Step):
    name = "alb"
    requires = ("vpc", "eks", "dns", "alb_access_logs")

    def create(self, ctx) -> dict:
        elbv2, cfg, vpc, eks = ctx.client("elbv2"), ctx.config, ctx.upstream("vpc"), ctx.upstream("eks")
        group_id = ensure_security_group(ctx, "alb-sg", "LangSmith load balancer: HTTP/HTTPS in, VPC out",
                                         vpc["vpc_id"], _ingress_rules(cfg), vpc["vpc_cidr"])
        groups = target_groups(cfg)
        self._allow_load_balancer_to_pods(ctx, eks.get("cluster_security_group_id"), group_id,
                                          sorted(pod_port for _, _, pod_port in groups.values()))
        name = load_balancer_name(cfg)
        internal = cfg["alb_scheme"] == "internal"
        lb_arn = ctx.ensure("load_balancer", lambda: (find_load_balancer(elbv2, name) or {}).get("LoadBalancerArn"),
                            lambda: elbv2.create_load_balancer(
                                Name=name, Type="network" if passes_tls_through(cfg) else "application",
                                Scheme=cfg["alb_scheme"], SecurityGroups=[group_id],
                                Subnets=vpc["private_subnet_ids" if internal else "public_subnet_ids"],
                                Tags=ctx.tags.as_list("alb"))["LoadBalancers"][0]["LoadBalancerArn"])
        self._converge_attributes(ctx, lb_arn)
        arns = {port: self._ensure_target_group(ctx, port, *spec) for port, spec in groups.items()}
        listeners = self._converge_listeners(ctx, lb_arn, arns)
        self._retire_previous_mode(ctx)
        described = self._wait_active(ctx, name)
        zone_id = ctx.upstream("dns").get("zone_id") if cfg["langsmith_domain"] and not cfg["acm_certificate_arn"] else None
        if zone_id:
            self._ensure_alias(ctx, zone_id, described)
        return {"load_balancer_arn": lb_arn, "type": described["Type"], "dns_name": described["DNSName"],
                "zone_id": described["CanonicalHostedZoneId"], "security_group_id": group_id,
                "target_groups": {str(port): arn for port, arn in arns.items()},
                "target_group_names": sorted(name for name, _, _ in groups.values()),
                "target_ports": {str(port): spec[2] for port, spec in groups.items()},
                "listeners": listeners, "scheme": cfg["alb_scheme"]}

    @staticmethod
    def _ensure_target_group(ctx, service_port: int, name: str, protocol: str, pod_port: int) -> str:
        elbv2, vpc_id = ctx.client("elbv2"), ctx.upstream("vpc")["vpc_id"]
        health = ({"HealthCheckPath": "/", "Matcher": {"HttpCode": "200-404"}, "HealthCheckTimeoutSeconds": 5}
                  if protocol == "HTTP" else {"HealthCheckProtocol": "TCP"})
        key = "target_group" if service_port == 80 else f"target_group/{service_port}"
        return ctx.ensure(key, lambda: (find_target_group(elbv2, name) or {}).get("TargetGroupArn"),
                          lambda: elbv2.create_target_group(
                              Name=name, Protocol=protocol, Port=pod_port, VpcId=vpc_id, TargetType="ip",
                              HealthCheckIntervalSeconds=15, HealthyThresholdCount=2, UnhealthyThresholdCount=3,
                              Tags=ctx.tags.as_list(f"targets-{service_port}"), **health,
                          )["TargetGroups"][0]["TargetGroupArn"])

    @staticmethod
    def _wait_active(ctx, name: str) -> dict:
        """A new ALB is 'provisioning' for a minute or two; WAF and DNS users need it
        'active' (TF internal/service/elbv2/load_balancer.go waits for active on create)."""
        elbv2 = ctx.client("elbv2")

        def active():
            lb = find_load_balancer(elbv2, name)
            state = (lb or {}).get("State", {}).get("Code")
            if state in (None, "failed"):
                raise StepError(f"load balancer {name} is {state or 'gone'}: "
                                f"{(lb or {}).get('State', {}).get('Reason', 'no reason given')}")
            return lb if state in ("active", "active_impaired") else None
        return wait_until(active, what=f"load balancer {name} to be active", expected_seconds=LB_EXPECTED_SECONDS,
                          timeout_seconds=900, progress=ctx.progress)

    @staticmethod
    def _ensure_alias(ctx, zone_id: str, lb: dict) -> None:
        """The domain's A record, an alias to the ALB."""
        route53, domain = ctx.client("route53"), ctx.config["langsmith_domain"]
        alias = {"HostedZoneId": lb["CanonicalHostedZoneId"], "DNSName": lb["DNSName"], "EvaluateTargetHealth": False}
        current = [r for r in route53.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=domain,
                                                                StartRecordType="A", MaxItems="1")["ResourceRecordSets"]
                   if r["Name"].rstrip(".") == domain and r["Type"] == "A"]
        if not current or current[0].get("AliasTarget", {}).get("DNSName", "").rstrip(".") != lb["DNSName"]:
            route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
                {"Action": "UPSERT", "ResourceRecordSet": {"Name": domain, "Type": "A", "AliasTarget": alias}}]})

    @staticmethod
    def _allow_load_balancer_to_pods(ctx, cluster_group: str | None, lb_group: str, ports: list[int]) -> None:
        """Targets are pod IPs behind the EKS cluster security group: let the load balancer
        reach them on the target ports, and nothing else (a port an earlier gateway used is
        closed again once the new one is open)."""
        if not cluster_group:
            return
        ec2 = ctx.client("ec2")
        group = ec2.describe_security_groups(GroupIds=[cluster_group])["SecurityGroups"][0]
        from_us = [p for p in group.get("IpPermissions", [])
                   if any(g.get("GroupId") == lb_group for g in p.get("UserIdGroupPairs", []))]
        missing = [port for port in ports if port not in {p.get("FromPort") for p in from_us}]
        if missing:
            ec2.authorize_security_group_ingress(GroupId=cluster_group, IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                "UserIdGroupPairs": [{"GroupId": lb_group, "Description": NODE_RULE}]} for port in missing])
        stale = [{"IpProtocol": p["IpProtocol"], "FromPort": p["FromPort"], "ToPort": p["ToPort"],
                  "UserIdGroupPairs": [g for g in p["UserIdGroupPairs"] if g.get("GroupId") == lb_group]}
                 for p in from_us if p.get("FromPort") not in ports]
        if stale:
            ec2.revoke_security_group_ingress(GroupId=cluster_group, IpPermissions=stale)

    @staticmethod
    def _wanted_attributes(ctx) -> dict[str, str]:
        if passes_tls_through(ctx.config):
            # The gateway's pods may sit in one zone: every NLB node must reach them.
            return {"load_balancing.cross_zone.enabled": "true"}
        wanted = {"routing.http.drop_invalid_header_fields.enabled": "true", "idle_timeout.timeout_seconds": "3600"}
        logs = ctx.upstream("alb_access_logs").get("bucket_name") if ctx.config["alb_access_logs_enabled"] else None
        wanted["access_logs.s3.enabled"] = "true" if logs else "false"
        if logs:
            wanted.update({"access_logs.s3.bucket": logs, "access_logs.s3.prefix": "alb"})
        return wanted

    def _converge_attributes(self, ctx, lb_arn: str) -> None:
        elbv2 = ctx.client("elbv2")
        current = {a["Key"]: a["Value"] for a in
                   elbv2.describe_load_balancer_attributes(LoadBalancerArn=lb_arn)["Attributes"]}
        changes = [{"Key": k, "Value": v} for k, v in self._wanted_attributes(ctx).items() if current.get(k) != v]
        if changes:  # log delivery checks the bucket policy, which may not have propagated yet
            until_accepted(lambda: elbv2.modify_load_balancer_attributes(LoadBalancerArn=lb_arn, Attributes=changes),
                           not_yet=LOG_BUCKET_POLICY_NOT_SEEN_YET, what="load balancer attributes", propagation="s3",
                           progress=ctx.progress)

    @staticmethod
    def _wanted_listeners(ctx, group_arns: dict[int, str]) -> dict[int, dict]:
        if passes_tls_through(ctx.config):
            return {port: {"Protocol": "TCP", "DefaultActions": [{"Type": "forward", "TargetGroupArn": arn}]}
                    for port, arn in group_arns.items()}
        forward = [{"Type": "forward", "TargetGroupArn": group_arns[80]}]
        certificate = certificate_arn(ctx)
        if certificate is None:
            return {80: {"Protocol": "HTTP", "DefaultActions": forward}}
        redirect = [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443",
                                                            "StatusCode": "HTTP_301"}}]
        return {80: {"Protocol": "HTTP", "DefaultActions": redirect},
                443: {"Protocol": "HTTPS", "DefaultActions": forward, "SslPolicy": TLS_POLICY,
                      "Certificates": [{"CertificateArn": certificate}]}}

    def _converge_listeners(self, ctx, lb_arn: str, group_arns: dict[int, str]) -> dict[str, str]:
        elbv2 = ctx.client("elbv2")
        existing = {l["Port"]: l for l in elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]}
        wanted = self._wanted_listeners(ctx, group_arns)
        arns = {}
        for port, spec in wanted.items():
            current = existing.get(port)
            if current is None:
                arn = elbv2.create_listener(LoadBalancerArn=lb_arn, Port=port, **spec,
                                            Tags=ctx.tags.as_list(f"listener-{port}"))["Listeners"][0]["ListenerArn"]
            else:
                arn = current["ListenerArn"]
                if _listener_differs(current, spec):
                    elbv2.modify_listener(ListenerArn=arn, Port=port, **spec)
            ctx.record(f"listener/{port}", arn)
            arns[str(port)] = arn
        for port, current in existing.items():
            if port not in wanted:
                elbv2.delete_listener(ListenerArn=current["ListenerArn"])
                ctx.record(f"listener/{port}", None)
        return arns

    def verify(self, ctx) -> list[Finding]:
        elbv2, cfg = ctx.client("elbv2"), ctx.config
        vpc_cidr = ctx.upstream("vpc").get("vpc_cidr")
        findings = security_group_findings(ctx, "alb-sg", _ingress_rules(cfg), vpc_cidr)
        lb = find_load_balancer(elbv2, load_balancer_name(cfg))
        if lb is None:
            return findings + [Finding(f"load balancer {load_balancer_name(cfg)}", "missing", missing=True)]
        if lb["State"]["Code"] != "active":
            findings.append(Finding(f"load balancer {lb['LoadBalancerName']}", f"state {lb['State']['Code']}"))
        current = {a["Key"]: a["Value"] for a in
                   elbv2.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
        for key, value in self._wanted_attributes(ctx).items():
            if current.get(key) != value:
                findings.append(Finding(f"load balancer {lb['LoadBalancerName']}", f"{key} is {current.get(key)}, "
                                                                                   f"config wants {value}"))
        arns = {}
        for port, (name, _, _) in target_groups(cfg).items():
            group = find_target_group(elbv2, name)
            if group is None:
                findings.append(Finding(f"target group {name}", "missing", missing=True))
                continue
            arns[port] = group["TargetGroupArn"]
            health = [t["TargetHealth"]["State"] for t in
                      elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]]
            ctx.fact(f"{lb['LoadBalancerName']} {lb['State']['Code']} at {lb['DNSName']}; port {port}: "
                     f"{health.count('healthy')}/{len(health)} targets healthy on pod port {group['Port']}")
            if health and "healthy" not in health:
                findings.append(Finding(f"target group {name}", "no healthy target: LangSmith is unreachable "
                                        f"through the load balancer on port {port} (check the pods and the "
                                        "TargetGroupBinding)"))
            elif not health and self._something_serves(cfg):
                findings.append(Finding(f"target group {name}", "no target registered: nothing serves on port "
                                        f"{port} (check the TargetGroupBinding's Service and port, and that the "
                                        "load balancer controller runs)"))
        if len(arns) < len(target_groups(cfg)):
            return findings
        existing = {l["Port"]: l for l in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]}
        wanted = self._wanted_listeners(ctx, arns)
        for port, spec in wanted.items():
            if port not in existing:
                findings.append(Finding(f"listener :{port}", "missing", missing=True))
            elif _listener_differs(existing[port], spec):
                findings.append(Finding(f"listener :{port}", f"not {spec['Protocol']} with the configured action"))
        findings += [Finding(f"listener :{port}", "not wanted by the config") for port in existing if port not in wanted]
        return findings

    @staticmethod
    def _something_serves(cfg) -> bool:
        """Whether pods should be registered: the gateway's proxy always, the LangSmith
        frontend only when LangSmith is deployed."""
        return cfg.gateway != "alb" or cfg["deploy_langsmith"]

    def destroy(self, ctx) -> None:
        for network in (False, True):  # the config may have switched TLS modes since the last apply
            self._delete_load_balancer(ctx, load_balancer_name(ctx.config, network))
        ctx.record("load_balancer", None)
        self._delete_target_groups(ctx, every_target_group_name(ctx.config))  # and gateways
        ctx.record("target_group", None)
        ctx.record("target_group/443", None)
        elbv2, cfg, ec2 = ctx.client("elbv2"), ctx.config, ctx.client("ec2")
        alb_group = ctx.state.step(self.name).get("physical_ids", {}).get("security_group/alb-sg")
        for group in ec2.describe_security_groups(Filters=[{"Name": "tag:aws:eks:cluster-name",
                                                            "Values": [cfg.cluster_name]}])["SecurityGroups"]:
            stale = [p for p in group.get("IpPermissions", []) if any(
                g.get("Description") == NODE_RULE or g.get("GroupId") == alb_group for g in p.get("UserIdGroupPairs", []))]
            if stale:
                ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=stale)
        delete_security_group(ctx, "alb-sg")


    @staticmethod
    def _delete_load_balancer(ctx, name: str) -> None:
        elbv2 = ctx.client("elbv2")
        lb = find_load_balancer(elbv2, name)
        if lb is not None:
            for listener in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
                elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
            elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])

    @staticmethod
    def _delete_target_groups(ctx, names) -> None:
        elbv2 = ctx.client("elbv2")
        for name in names:
            group = find_target_group(elbv2, name)
            if group is not None:
                delete_with_retry(lambda g=group: elbv2.delete_target_group(TargetGroupArn=g["TargetGroupArn"]),
                                  f"target group {name}", lambda: "", ctx.progress)

    def _retire_previous_mode(self, ctx) -> None:
        """After a switch of TLS mode or gateway: the other kind of load balancer and the
        target groups this mode does not use go (the new ones already serve)."""
        cfg, previous = ctx.config, ctx.state.outputs(self.name)
        wanted_type = "network" if passes_tls_through(cfg) else "application"
        if previous and previous.get("type", "application") != wanted_type:
            ctx.progress(f"the {previous.get('type', 'application')} load balancer goes: this mode serves from a "
                         f"{wanted_type} one")
            self._delete_load_balancer(ctx, load_balancer_name(cfg, not passes_tls_through(cfg)))
        wanted = {name for name, _, _ in target_groups(cfg).values()}
        if set(previous.get("target_group_names", wanted)) - wanted:
            self._delete_target_groups(ctx, sorted(set(every_target_group_name(cfg)) - wanted))


def _listener_differs(current: dict, spec: dict) -> bool:
    if current.get("Protocol") != spec["Protocol"]:
        return True
    action, wanted = current["DefaultActions"][0], spec["DefaultActions"][0]
    if action["Type"] != wanted["Type"] or action.get("TargetGroupArn") != wanted.get("TargetGroupArn"):
        return True
    if spec["Protocol"] == "HTTPS":
        certs = [c["CertificateArn"] for c in current.get("Certificates", [])]
        return current.get("SslPolicy") != spec["SslPolicy"] or certs != [spec["Certificates"][0]["CertificateArn"]]
    return False
