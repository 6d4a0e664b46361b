"""The ALB: one load balancer, ours, serving traffic in every ingress mode.

Its target group (target type ip) is filled from inside the cluster by a
TargetGroupBinding: the LangSmith frontend in plain ALB mode, the gateway's proxy
otherwise. So WAF, access logs and DNS always sit on the load balancer that really
serves (in the reference, plain ALB mode serves from a second, controller-made ALB),
and destroy has no controller-made load balancer to chase.
"""

from __future__ import annotations

from provisioner.aws import if_exists
from provisioner.errors import StepError
from provisioner.reaping import delete_with_retry
from provisioner.retry import LOG_BUCKET_POLICY_NOT_SEEN_YET, until_accepted
from provisioner.waiting import wait_until

from ._network import delete_security_group, ensure_security_group, security_group_findings
from .base import Finding, Step, register

# gateway -> (namespace, Service, pod port the targets listen on)
TARGETS = {"alb": ("langsmith", "langsmith-frontend", 8080), "nginx": ("ingress-nginx", "ingress-nginx-controller", 80),
           "istio": ("istio-system", "istio-ingressgateway", 80),
           "envoy": ("envoy-gateway-system", "envoy-langsmith-gateway", 10080)}
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
NODE_RULE = "from the LangSmith ALB"
LB_EXPECTED_SECONDS = 120


def load_balancer_name(config) -> str:
    return f"{config.deployment}-alb"


def target_group_name(config) -> str:
    return f"{config.deployment}-{config.gateway}"[:32]


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
        group_id = ensure_security_group(ctx, "alb-sg", "LangSmith ALB: HTTP/HTTPS in, VPC out", vpc["vpc_id"],
                                         _ingress_rules(cfg), vpc["vpc_cidr"])
        _, _, port = TARGETS[cfg.gateway]
        self._allow_alb_to_pods(ctx, eks.get("cluster_security_group_id"), group_id, port)
        name = load_balancer_name(cfg)
        internal = cfg["alb_scheme"] == "internal"
        lb_arn = ctx.ensure("load_balancer", lambda: (find_load_balancer(elbv2, name) or {}).get("LoadBalancerArn"),
                            lambda: elbv2.create_load_balancer(
                                Name=name, Type="application", Scheme=cfg["alb_scheme"], SecurityGroups=[group_id],
                                Subnets=vpc["private_subnet_ids" if internal else "public_subnet_ids"],
                                Tags=ctx.tags.as_list("alb"))["LoadBalancers"][0]["LoadBalancerArn"])
        self._converge_attributes(ctx, lb_arn)
        tg_name = target_group_name(cfg)
        tg_arn = ctx.ensure("target_group", lambda: (find_target_group(elbv2, tg_name) or {}).get("TargetGroupArn"),
                            lambda: elbv2.create_target_group(
                                Name=tg_name, Protocol="HTTP", Port=port, VpcId=vpc["vpc_id"], TargetType="ip",
                                HealthCheckPath="/", HealthCheckIntervalSeconds=15, HealthCheckTimeoutSeconds=5,
                                HealthyThresholdCount=2, UnhealthyThresholdCount=3, Matcher={"HttpCode": "200-404"},
                                Tags=ctx.tags.as_list("alb-targets"))["TargetGroups"][0]["TargetGroupArn"])
        listeners = self._converge_listeners(ctx, lb_arn, tg_arn)
        described = self._wait_active(ctx, name)
        zone_id = ctx.upstream("dns").get("zone_id") if cfg["langsmith_domain"] and not cfg["acm_certificate_arn"] else None
        if zone_id:
            self._ensure_alias(ctx, zone_id, described)
        return {"load_balancer_arn": lb_arn, "dns_name": described["DNSName"],
                "zone_id": described["CanonicalHostedZoneId"], "security_group_id": group_id,
                "target_group_arn": tg_arn, "target_port": port, "listeners": listeners,
                "scheme": cfg["alb_scheme"]}

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
    def _allow_alb_to_pods(ctx, cluster_group: str | None, alb_group: str, port: int) -> None:
        """Targets are pod IPs behind the EKS cluster security group: let the ALB reach
        them on the target port, and nothing else."""
        if not cluster_group:
            return
        ec2 = ctx.client("ec2")
        group = ec2.describe_security_groups(GroupIds=[cluster_group])["SecurityGroups"][0]
        allowed = any(p.get("FromPort") == port and any(g.get("GroupId") == alb_group for g in p.get("UserIdGroupPairs", []))
                      for p in group.get("IpPermissions", []))
        if not allowed:
            ec2.authorize_security_group_ingress(GroupId=cluster_group, IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                "UserIdGroupPairs": [{"GroupId": alb_group, "Description": NODE_RULE}]}])

    @staticmethod
    def _wanted_attributes(ctx) -> dict[str, str]:
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
    def _wanted_listeners(ctx, tg_arn: str) -> dict[int, dict]:
        forward = [{"Type": "forward", "TargetGroupArn": tg_arn}]
        certificate = certificate_arn(ctx)
        if certificate is None:
            return {80: {"Protocol": "HTTP", "DefaultActions": forward}}
        redirect = [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443",
                                                            "StatusCode": "HTTP_301"}}]
        return {80: {"Protocol": "HTTP", "DefaultActions": redirect},
                443: {"Protocol": "HTTPS", "DefaultActions": forward, "SslPolicy": TLS_POLICY,
                      "Certificates": [{"CertificateArn": certificate}]}}

    def _converge_listeners(self, ctx, lb_arn: str, tg_arn: str) -> dict[str, str]:
        elbv2 = ctx.client("elbv2")
        existing = {l["Port"]: l for l in elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]}
        wanted = self._wanted_listeners(ctx, tg_arn)
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
        group = find_target_group(elbv2, target_group_name(cfg))
        if group is None:
            return findings + [Finding(f"target group {target_group_name(cfg)}", "missing", missing=True)]
        health = [t["TargetHealth"]["State"] for t in
                  elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]]
        ctx.fact(f"{lb['LoadBalancerName']} {lb['State']['Code']} at {lb['DNSName']}; "
                 f"{health.count('healthy')}/{len(health)} targets healthy on port {group['Port']}")
        if health and "healthy" not in health:
            findings.append(Finding(f"target group {group['TargetGroupName']}", "no healthy target: LangSmith is "
                                    "unreachable through the ALB (check the pods and the TargetGroupBinding)"))
        existing = {l["Port"]: l for l in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]}
        wanted = self._wanted_listeners(ctx, group["TargetGroupArn"])
        for port, spec in wanted.items():
            if port not in existing:
                findings.append(Finding(f"listener :{port}", "missing", missing=True))
            elif _listener_differs(existing[port], spec):
                findings.append(Finding(f"listener :{port}", f"not {spec['Protocol']} with the configured action"))
        findings += [Finding(f"listener :{port}", "not wanted by the config") for port in existing if port not in wanted]
        return findings

    def destroy(self, ctx) -> None:
        elbv2, cfg, ec2 = ctx.client("elbv2"), ctx.config, ctx.client("ec2")
        lb = find_load_balancer(elbv2, load_balancer_name(cfg))
        if lb is not None:
            for listener in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
                elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
            elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        ctx.record("load_balancer", None)
        for gateway in TARGETS:  # the config may have switched gateways since the last apply
            group = find_target_group(elbv2, f"{cfg.deployment}-{gateway}"[:32])
            if group is not None:
                delete_with_retry(lambda g=group: elbv2.delete_target_group(TargetGroupArn=g["TargetGroupArn"]),
                                  f"target group {group['TargetGroupName']}", lambda: "", ctx.progress)
        ctx.record("target_group", None)
        alb_group = ctx.state.step(self.name).get("physical_ids", {}).get("security_group/alb-sg")
        for group in ec2.describe_security_groups(Filters=[{"Name": "tag:aws:eks:cluster-name",
                                                            "Values": [cfg.cluster_name]}])["SecurityGroups"]:
            stale = [p for p in group.get("IpPermissions", []) if any(
                g.get("Description") == NODE_RULE or g.get("GroupId") == alb_group for g in p.get("UserIdGroupPairs", []))]
            if stale:
                ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=stale)
        delete_security_group(ctx, "alb-sg")


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
