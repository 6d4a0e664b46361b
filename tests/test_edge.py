"""The edge and the LangSmith release: every ingress x TLS permutation the spec allows,
each through apply, re-apply (no change in AWS or the cluster) and destroy (nothing left);
the optional add-ons; and the values the chart gets."""

from __future__ import annotations

import base64
import json

import boto3
import pytest

from steps.ingress import RELEASES
from steps.postgres import DATABASE
from tests.census import census, cluster_census, cluster_changes
from tests.conftest import REGION, installed_charts, mirrored_chart, run_cli, write_config
from tests.faults import AwsCalls
from tests.test_kubernetes import helm_values

DEPLOYMENT = "acme-test"
DOMAIN = "langsmith.example.com"
PERMUTATIONS = {  # id -> config; the spec's ingress table x its TLS table, allowed pairs only
    "alb-none": {},
    "alb-acm": {"tls_certificate_source": "acm", "langsmith_domain": DOMAIN},
    "nginx-none": {"enable_nginx_ingress": True},
    "nginx-acm": {"enable_nginx_ingress": True, "tls_certificate_source": "acm", "langsmith_domain": DOMAIN},
    "envoy-none": {"enable_envoy_gateway": True},
    "envoy-letsencrypt": {"enable_envoy_gateway": True, "tls_certificate_source": "letsencrypt",
                          "langsmith_domain": DOMAIN, "letsencrypt_email": "ops@example.com",
                          "enable_split_dataplane": True},
    "istio-none": {"enable_istio_gateway": True},
    "istio-letsencrypt": {"enable_istio_gateway": True, "tls_certificate_source": "letsencrypt",
                          "langsmith_domain": DOMAIN, "letsencrypt_email": "ops@example.com"},
}
# gateway -> namespace, Service, {Service port: pod port}: Envoy Gateway shifts privileged
# ports by 10000 (envoyproxy/gateway servicePortToContainerPort); Istio's gateway chart
# serves 80 and 443 as they are.
SERVING = {"alb": ("langsmith", "langsmith-frontend", {80: 8080}),
           "nginx": ("ingress-nginx", "ingress-nginx-controller", {80: 80}),
           "envoy": ("envoy-gateway-system", "envoy-langsmith-gateway", {80: 10080, 443: 10443}),
           "istio": ("istio-system", "istio-ingressgateway", {80: 80, 443: 443})}


def client(service):
    return boto3.client(service, region_name=REGION)


def our_load_balancer(kind: str = "alb"):
    elbv2 = client("elbv2")
    [lb] = elbv2.describe_load_balancers(Names=[f"{DEPLOYMENT}-{kind}"])["LoadBalancers"]
    listeners = {l["Port"]: l for l in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]}
    return lb, listeners


def assert_clients_reach_the_serving_pods(permutation, kube_server):
    """Follow a client of the published URL: the listener on its port, the target group it
    forwards to, the binding that fills that group from a Service port, and the pod port
    the group targets. TLS is terminated exactly once: by the ALB with ACM, or by the
    gateway behind a TCP Network Load Balancer with Let's Encrypt."""
    gateway, tls = permutation.split("-")
    namespace, service, pod_ports = SERVING[gateway]
    lb, listeners = our_load_balancer("nlb" if tls == "letsencrypt" else "alb")
    elbv2 = client("elbv2")
    groups = {g["TargetGroupArn"]: g for g in elbv2.describe_target_groups(
        LoadBalancerArn=lb["LoadBalancerArn"])["TargetGroups"]}
    bindings = {b["spec"]["targetGroupARN"]: b for b in kube_server.cluster.items("elbv2.k8s.aws", "targetgroupbindings")}
    client_port = 80 if tls == "none" else 443
    action = listeners[client_port]["DefaultActions"][0]
    assert action["Type"] == "forward"
    group, binding = groups[action["TargetGroupArn"]], bindings[action["TargetGroupArn"]]
    assert group["TargetType"] == "ip" and binding["metadata"]["namespace"] == namespace
    assert binding["spec"]["serviceRef"]["name"] == service
    service_port = binding["spec"]["serviceRef"]["port"]
    assert group["Port"] == pod_ports[service_port]
    if tls == "letsencrypt":
        assert lb["Type"] == "network" and {l["Protocol"] for l in listeners.values()} == {"TCP"}
        assert service_port == 443  # TLS goes through untouched to the gateway's HTTPS listener
        http = listeners[80]["DefaultActions"][0]["TargetGroupArn"]
        assert bindings[http]["spec"]["serviceRef"]["port"] == 80 and groups[http]["Port"] == pod_ports[80]
    else:
        assert lb["Type"] == "application" and service_port == 80
        assert listeners[client_port]["Protocol"] == ("HTTPS" if tls == "acm" else "HTTP")


@pytest.mark.parametrize("permutation", PERMUTATIONS)
def test_permutation_applies_reapplies_without_change_and_destroys_clean(permutation, aws, tmp_path, kube_server,
                                                                          monkeypatch):
    settings = PERMUTATIONS[permutation]
    gateway, tls = permutation.split("-")
    config = write_config(tmp_path / "config.yaml", **settings)
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result

    assert_clients_reach_the_serving_pods(permutation, kube_server)
    charts = installed_charts()
    assert set(RELEASES.get(gateway, [])) <= set(charts)
    assert charts == {r: mirrored_chart(r) for r in charts}  # the real charts, from the mirror
    elbv2 = client("elbv2")
    lb, _ = our_load_balancer("nlb" if tls == "letsencrypt" else "alb")
    for group in elbv2.describe_target_groups(LoadBalancerArn=lb["LoadBalancerArn"])["TargetGroups"]:
        health = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
        assert health and {(t["Target"]["Port"], t["TargetHealth"]["State"]) for t in health} == {
            (group["Port"], "healthy")}
    if tls == "acm":
        lb, listeners = our_load_balancer()
        assert listeners[443]["Protocol"] == "HTTPS" and listeners[443]["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
        assert listeners[80]["DefaultActions"][0]["Type"] == "redirect"
        certificate = listeners[443]["Certificates"][0]["CertificateArn"]
        assert client("acm").describe_certificate(CertificateArn=certificate)["Certificate"]["DomainName"] == DOMAIN
    elif tls == "none":
        lb, listeners = our_load_balancer()
        assert set(listeners) == {80}
    if tls == "letsencrypt":
        issuer = kube_server.cluster.find("cert-manager.io", "clusterissuers", "", "letsencrypt-prod")
        zone = client("route53").list_hosted_zones_by_name(DNSName=DOMAIN)["HostedZones"][0]["Id"].split("/")[-1]
        assert issuer["spec"]["acme"]["solvers"][0]["dns01"]["route53"]["hostedZoneID"] == zone
        tls_namespace = "istio-system" if gateway == "istio" else "langsmith"
        assert kube_server.cluster.find("cert-manager.io", "certificates", tls_namespace, "langsmith-tls")
    if gateway == "envoy":
        gw = kube_server.cluster.find("gateway.networking.k8s.io", "gateways", "langsmith", "langsmith-gateway")
        assert gw["spec"]["gatewayClassName"] == "eg"
        assert all(l["allowedRoutes"]["namespaces"]["from"] == "All" for l in gw["spec"]["listeners"])
    if gateway == "istio":
        assert kube_server.cluster.find("networking.istio.io", "gateways", "istio-system", "langsmith-gateway")
    if settings.get("enable_split_dataplane"):
        assert kube_server.cluster.find("", "namespaces", "", "langsmith-agents")
    assert cluster_census(kube_server.cluster)[("helm-release", "langsmith/langsmith: deployed")] == 1
    assert run_cli("verify", config).code == 0

    kube_server.cluster.requests.clear()
    with AwsCalls() as seen:
        again = run_cli("apply", config, "--yes")
    assert again.code == 0, again
    assert seen.calls and seen.mutating == [] and kube_server.cluster.mutations == []

    gone = run_cli("destroy", config, "--yes")
    assert gone.code == 0, gone
    assert census() == {}
    assert cluster_changes(kube_server.cluster) == {}
    assert client("elbv2").describe_load_balancers()["LoadBalancers"] == []
    assert client("route53").list_hosted_zones()["HostedZones"] == []
    assert client("acm").list_certificates()["CertificateSummaryList"] == []


@pytest.mark.parametrize("settings,problem", [
    ({"enable_nginx_ingress": True, "tls_certificate_source": "letsencrypt", "langsmith_domain": DOMAIN,
      "letsencrypt_email": "ops@example.com"}, "tls_certificate_source: letsencrypt does not work with the nginx"),
    ({"tls_certificate_source": "letsencrypt", "langsmith_domain": DOMAIN, "letsencrypt_email": "ops@example.com"},
     "tls_certificate_source: letsencrypt does not work with the alb"),
    ({"enable_envoy_gateway": True, "tls_certificate_source": "acm", "langsmith_domain": DOMAIN},
     "tls_certificate_source: acm does not work with the envoy"),
    ({"enable_istio_gateway": True, "tls_certificate_source": "acm", "langsmith_domain": DOMAIN},
     "tls_certificate_source: acm does not work with the istio"),
    ({"enable_nginx_ingress": True, "enable_split_dataplane": True}, "enable_split_dataplane: needs"),
    ({"enable_split_dataplane": True}, "enable_split_dataplane: needs"),
    ({"enable_envoy_gateway": True, "enable_istio_gateway": True}, "at most one gateway"),
])
def test_disallowed_permutations_fail_validation_before_any_call(settings, problem, aws, tmp_path, kube_server):
    config = write_config(tmp_path / "config.yaml", **settings)
    kube_server.cluster.requests.clear()
    result = run_cli("apply", config, "--yes")
    assert result.code == 2 and problem in result.err
    assert census() == {} and kube_server.cluster.requests == []


def assert_egress_through_firewall(allowed_extra: str):
    """Private subnets leave through the firewall endpoint, the firewall subnet through the
    NAT, and the NAT's answers come back through the firewall (symmetric routing)."""
    ec2, nfw = client("ec2"), client("network-firewall")
    firewall = nfw.describe_firewall(FirewallName=f"{DEPLOYMENT}-fw-egress")
    assert firewall["FirewallStatus"]["Status"] == "READY"
    [sync] = firewall["FirewallStatus"]["SyncStates"].values()
    endpoint = sync["Attachment"]["EndpointId"]
    [subnet] = ec2.describe_subnets(SubnetIds=[sync["Attachment"]["SubnetId"]])["Subnets"]
    assert subnet["CidrBlock"] == "10.0.64.0/21"

    def routes(name):
        [table] = ec2.describe_route_tables(Filters=[{"Name": "tag:Name", "Values": [f"{DEPLOYMENT}-{name}"]}])[
            "RouteTables"]
        return {r["DestinationCidrBlock"]: r.get("GatewayId") or r.get("NatGatewayId") for r in table["Routes"]
                if "DestinationCidrBlock" in r}  # (the S3 endpoint routes by prefix list)
    assert routes("private")["0.0.0.0/0"] == endpoint
    assert routes("firewall")["0.0.0.0/0"].startswith("nat-")
    assert {cidr: routes("public")[cidr] for cidr in ("10.0.0.0/21", "10.0.8.0/21")} == {
        "10.0.0.0/21": endpoint, "10.0.8.0/21": endpoint}
    policy = nfw.describe_firewall_policy(FirewallPolicyArn=firewall["Firewall"]["FirewallPolicyArn"])["FirewallPolicy"]
    assert policy["StatefulDefaultActions"] == ["aws:drop_established"]
    group = nfw.describe_rule_group(RuleGroupArn=policy["StatefulRuleGroupReferences"][0]["ResourceArn"])["RuleGroup"]
    source = group["RulesSource"]["RulesSourceList"]
    assert source["GeneratedRulesType"] == "ALLOWLIST" and source["TargetTypes"] == ["TLS_SNI", "HTTP_HOST"]
    assert {"beacon.langchain.com", allowed_extra, ".eks.amazonaws.com", f".{REGION}.amazonaws.com"} <= set(
        source["Targets"])


def test_largest_permutation_all_add_ons_reapply_and_destroy(aws, tmp_path, kube_server, monkeypatch):
    """WAF, access logs, CloudTrail, bastion, DNS and ACM, and the Network Firewall, all at once."""
    extra = {"tls_certificate_source": "acm", "langsmith_domain": DOMAIN, "create_waf": True,
             "create_cloudtrail": True, "alb_access_logs_enabled": True, "create_bastion": True,
             "create_firewall": True}
    config = write_config(tmp_path / "config.yaml", firewall_allowed_fqdns=["beacon.langchain.com"], **extra)
    assert run_cli("apply", config, "--yes").code == 0
    assert_egress_through_firewall("beacon.langchain.com")
    lb, _ = our_load_balancer()
    wafv2 = client("wafv2")
    acl = wafv2.get_web_acl_for_resource(ResourceArn=lb["LoadBalancerArn"])["WebACL"]
    assert [r["Statement"]["ManagedRuleGroupStatement"]["Name"] for r in acl["Rules"]] == [
        "AWSManagedRulesCommonRuleSet", "AWSManagedRulesAmazonIpReputationList", "AWSManagedRulesKnownBadInputsRuleSet"]
    attributes = {a["Key"]: a["Value"] for a in client("elbv2").describe_load_balancer_attributes(
        LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    s3 = client("s3")
    logs = attributes["access_logs.s3.bucket"]
    policy = json.loads(s3.get_bucket_policy(Bucket=logs)["Policy"])
    assert policy["Statement"][0]["Principal"] == {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}
    assert s3.get_public_access_block(Bucket=logs)["PublicAccessBlockConfiguration"]["BlockPublicPolicy"]
    [trail] = client("cloudtrail").describe_trails()["trailList"]
    assert trail["IsMultiRegionTrail"] and trail["LogFileValidationEnabled"]
    assert client("cloudtrail").get_trail_status(Name=trail["Name"])["IsLogging"]
    ec2 = client("ec2")
    [instance] = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:Name", "Values": [f"{DEPLOYMENT}-bastion"]},
        {"Name": "instance-state-name", "Values": ["running", "pending"]}])["Reservations"] for i in r["Instances"]]
    assert instance["MetadataOptions"]["HttpTokens"] == "required" and "PublicIpAddress" not in instance
    [group] = ec2.describe_security_groups(Filters=[{"Name": "tag:Name", "Values": [f"{DEPLOYMENT}-bastion-sg"]}])[
        "SecurityGroups"]
    assert group["GroupId"] in [g["GroupId"] for n in instance["NetworkInterfaces"] for g in n["Groups"]]
    assert group["IpPermissions"] == []  # no SSH unless bastion_ssh_cidrs
    role = f"arn:aws:iam::123456789012:role/{DEPLOYMENT}-bastion"
    assert role in client("eks").list_access_entries(clusterName=f"{DEPLOYMENT}-eks")["accessEntries"]
    route53 = client("route53")
    zone = route53.list_hosted_zones_by_name(DNSName=DOMAIN)["HostedZones"][0]["Id"]
    records = {(r["Name"], r["Type"]): r for r in route53.list_resource_record_sets(HostedZoneId=zone)[
        "ResourceRecordSets"]}
    assert records[(f"{DOMAIN}.", "A")]["AliasTarget"]["DNSName"].rstrip(".") == lb["DNSName"]
    assert any(kind == "CNAME" for _, kind in records)  # the certificate's validation record
    assert run_cli("verify", config).code == 0

    with AwsCalls() as seen:
        assert run_cli("apply", config, "--yes").code == 0
    assert seen.mutating == []  # the vpc step leaves the firewall's route alone

    widened = write_config(tmp_path / "config.yaml", firewall_allowed_fqdns=["beacon.langchain.com", "api.openai.com"],
                           **extra)
    assert run_cli("apply", widened, "--yes").code == 0
    assert_egress_through_firewall("api.openai.com")

    (tmp_path / "state" / f"{DEPLOYMENT}.json").unlink()  # lost state: destroy finds it all by name and tags
    assert run_cli("destroy", widened, "--yes").code == 0
    assert census() == {}
    assert client("cloudtrail").describe_trails()["trailList"] == []
    assert wafv2.list_web_acls(Scope="REGIONAL")["WebACLs"] == []
    assert client("network-firewall").list_firewalls()["Firewalls"] == []


def test_staged_dns_certificate_then_https(aws, tmp_path):
    """The spec's staged pattern: tls none first (zone and certificate, nothing waits),
    then acm (waits for the certificate, then wires the HTTPS listener)."""
    first = write_config(tmp_path / "config.yaml", langsmith_domain=DOMAIN)
    result = run_cli("apply", first, "--yes")
    assert result.code == 0, result
    _, listeners = our_load_balancer()
    assert set(listeners) == {80}
    assert client("acm").list_certificates()["CertificateSummaryList"][0]["DomainName"] == DOMAIN
    outputs = json.loads(run_cli("outputs", first, "--json").out)
    assert len(outputs["dns"]["name_servers"]) >= 1
    second = write_config(tmp_path / "config.yaml", langsmith_domain=DOMAIN, tls_certificate_source="acm")
    result = run_cli("apply", second, "--yes")
    assert result.code == 0, result
    _, listeners = our_load_balancer()
    assert listeners[443]["Certificates"][0]["CertificateArn"] == outputs["dns"]["certificate_arn"]


def test_langsmith_values_carry_outputs_and_no_secret(aws, tmp_path, kube_server):
    config = write_config(tmp_path / "config.yaml", enable_langsmith_deployments=True, langsmith_sizing="dev",
                          langsmith_domain=DOMAIN)
    assert run_cli("apply", config, "--yes").code == 0
    values = helm_values("langsmith", "langsmith")  # what helm stored for the real chart's release
    state = json.loads(open(f"state/{DEPLOYMENT}.json").read())["steps"]
    bucket = state["storage"]["outputs"]["bucket_name"]
    role = state["storage"]["outputs"]["langsmith_role_arn"]
    assert values["config"]["blobStorage"]["bucketName"] == bucket and values["config"]["hostname"] == f"http://{DOMAIN}"
    assert values["config"]["existingSecretName"] == "langsmith-config"
    assert values["backend"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == role
    assert values["backend"]["autoscaling"]["hpa"] == {"enabled": True, "minReplicas": 3, "maxReplicas": 10}
    assert values["queue"]["autoscaling"]["keda"]["enabled"] is True
    assert values["aceBackend"]["autoscaling"]["hpa"]["maxReplicas"] == 5
    assert values["clickhouse"]["statefulSet"]["persistence"]["storageClassName"] == "gp3"
    assert values["config"]["deployment"] == {"enabled": True, "tlsEnabled": False}
    assert values["postgres"]["external"]["existingSecretName"] == "langsmith-external-postgres"
    secret = kube_server.cluster.find("", "secrets", "langsmith", "langsmith-external-postgres")
    url = base64.b64decode(secret["data"]["connection_url"]).decode()
    password = client("ssm").get_parameter(Name=f"/langsmith/{DEPLOYMENT}/postgres-password",
                                           WithDecryption=True)["Parameter"]["Value"]
    assert url.startswith(f"langsmith:{password}@acme-test-pg") and url.endswith(f":5432/{DATABASE}?sslmode=require")
    assert password not in json.dumps(values) and password not in open(f"state/{DEPLOYMENT}.json").read()
    outputs = run_cli("outputs", config).out
    assert f"https://{DOMAIN}" not in outputs and f"http://{DOMAIN}" in outputs
