"""Day two: changing a running deployment's config and applying again with the same state
converges AWS and the cluster: steps switched off are torn down, data is never deleted
without being told so, and a no-op re-apply afterwards still changes nothing."""

from __future__ import annotations

import io
import json

import boto3

from provisioner.cli import main

from tests.census import census, cluster_changes
from tests.conftest import REGION, run_cli, write_config
from tests.faults import AwsCalls
from tests.test_cli import Terminal

DEPLOYMENT = "acme-test"
DOMAIN = "langsmith.example.com"


def client(service):
    return boto3.client(service, region_name=REGION)


def pod_ports_open_to_the_load_balancer() -> list[int]:
    """Ports on which the EKS cluster security group (in front of the pods) admits the
    load balancer's security group, read from EC2."""
    ec2 = client("ec2")
    lb_group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{DEPLOYMENT}-alb-sg"]}])
    lb_group_id = lb_group["SecurityGroups"][0]["GroupId"]
    cluster_groups = ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": ["aws:eks:cluster-name"]}])
    return sorted(rule["FromPort"] for group in cluster_groups["SecurityGroups"] for rule in group["IpPermissions"]
                  if any(pair["GroupId"] == lb_group_id for pair in rule.get("UserIdGroupPairs", [])))


def reapply_changes_nothing(config, kube_server, monkeypatch) -> None:
    kube_server.cluster.requests.clear()
    with AwsCalls() as seen:
        again = run_cli("apply", config, "--yes")
    assert again.code == 0, again
    assert seen.calls and seen.mutating == [] and kube_server.cluster.mutations == []


def test_switching_add_ons_off_removes_them_in_reverse_order(aws, tmp_path, kube_server, monkeypatch):
    extra = {"tls_certificate_source": "acm", "langsmith_domain": DOMAIN}
    config = write_config(tmp_path / "config.yaml", create_waf=True, alb_access_logs_enabled=True,
                          create_cloudtrail=True, **extra)
    assert run_cli("apply", config, "--yes").code == 0
    waf = client("wafv2")
    assert len(waf.list_web_acls(Scope="REGIONAL")["WebACLs"]) == 1
    buckets_before = {b["Name"] for b in client("s3").list_buckets()["Buckets"]}

    config = write_config(tmp_path / "config.yaml", **extra)
    plan = run_cli("plan", config, "--json")
    assert plan.code == 0, plan
    actions = {name: entry["action"] for name, entry in json.loads(plan.out).items()}
    assert {name: actions[name] for name in ("waf", "alb_access_logs", "cloudtrail")} == dict.fromkeys(
        ("waf", "alb_access_logs", "cloudtrail"), "delete")
    asked = io.StringIO()
    assert main(["apply", config], stdin=Terminal("no\n"), stdout=asked, stderr=io.StringIO()) == 2
    removing = [line for line in asked.getvalue().splitlines() if line.startswith("remove (no longer enabled")]
    assert removing and all(name in removing[0] for name in ("waf", "alb_access_logs", "cloudtrail"))

    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert waf.list_web_acls(Scope="REGIONAL")["WebACLs"] == []
    assert client("cloudtrail").describe_trails()["trailList"] == []
    [lb] = client("elbv2").describe_load_balancers(Names=[f"{DEPLOYMENT}-alb"])["LoadBalancers"]
    attributes = {a["Key"]: a["Value"] for a in client("elbv2").describe_load_balancer_attributes(
        LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    assert attributes["access_logs.s3.enabled"] == "false"  # the ALB stopped logging before its bucket went
    remaining = {b["Name"] for b in client("s3").list_buckets()["Buckets"]}
    assert {b for b in buckets_before - remaining} and all("traces" not in b for b in buckets_before - remaining)
    assert not any("cloudtrail" in b or "alb-logs" in b for b in remaining)
    state = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())
    assert {state["steps"][n]["status"] for n in ("waf", "alb_access_logs", "cloudtrail")} == {"destroyed"}

    reapply_changes_nothing(config, kube_server, monkeypatch)
    assert run_cli("destroy", config, "--yes").code == 0
    assert census() == {} and cluster_changes(kube_server.cluster) == {}


def test_apply_never_deletes_data_unless_told(aws, tmp_path, kube_server):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    config = write_config(tmp_path / "config.yaml", postgres_source="in-cluster")

    refused = run_cli("apply", config, "--yes")
    assert refused.code == 2, refused
    assert "postgres: the RDS instance and its databases" in refused.err and "--allow-data-loss" in refused.err
    rds = client("rds")
    assert [i["DBInstanceStatus"] for i in rds.describe_db_instances()["DBInstances"]] == ["available"]
    plan = run_cli("plan", config)
    assert "postgres" in plan.out and "delete" in plan.out and "--allow-data-loss" in plan.out

    allowed = run_cli("apply", config, "--yes", "--allow-data-loss")
    assert allowed.code == 0, allowed
    assert rds.describe_db_instances()["DBInstances"] == []
    assert [s["DBSnapshotIdentifier"].startswith(f"{DEPLOYMENT}-pg-final-")
            for s in rds.describe_db_snapshots()["DBSnapshots"]] == [True]
    assert postgres_secret_in_use(kube_server) == "langsmith-incluster-postgres"

    back = run_cli("apply", write_config(tmp_path / "config.yaml"), "--yes")  # and back to RDS
    assert back.code == 0, back
    assert [i["DBInstanceStatus"] for i in rds.describe_db_instances()["DBInstances"]] == ["available"]
    assert postgres_secret_in_use(kube_server) == "langsmith-external-postgres"
    assert run_cli("destroy", config, "--yes").code == 0
    assert census() == {} and cluster_changes(kube_server.cluster) == {}


def postgres_secret_in_use(kube_server) -> str:
    """The Postgres Secret LangSmith's release names, once it is the only store Secret of ours
    left in the cluster (the other mode's went after the switch)."""
    from tests.test_kubernetes import helm_values
    named = helm_values("langsmith", "langsmith")["postgres"]["external"]["existingSecretName"]
    ours = {s["metadata"]["name"] for s in kube_server.cluster.items("", "secrets", "langsmith")} & {
        "langsmith-external-postgres", "langsmith-incluster-postgres"}
    assert ours == {named}, ours
    return named


def release_revisions(kube_server) -> dict[str, int]:
    """Each helm release's latest revision, read from helm's own release Secrets in the cluster."""
    latest: dict[str, int] = {}
    for secret in kube_server.cluster.items("", "secrets"):
        labels = secret["metadata"].get("labels", {})
        if labels.get("owner") == "helm":
            latest[labels["name"]] = max(latest.get(labels["name"], 0), int(labels["version"]))
    return latest


def eks_history():
    """The update history the EKS double keeps (what AWS's ListUpdates/DescribeUpdate would show)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.eks.models import eks_backends
    from provisioner.simulation.eks_versions import history
    return history(eks_backends[DEFAULT_ACCOUNT_ID][REGION])


def test_kubernetes_upgrade_walks_one_minor_version_at_a_time(aws, tmp_path, kube_server, monkeypatch):
    config = write_config(tmp_path / "config.yaml", eks_cluster_version="1.32")
    assert run_cli("apply", config, "--yes").code == 0
    eks = client("eks")
    addon_before = eks.describe_addon(clusterName=f"{DEPLOYMENT}-eks", addonName="aws-ebs-csi-driver")["addon"]
    revisions_before = release_revisions(kube_server)
    eks_history().clear()

    config = write_config(tmp_path / "config.yaml", eks_cluster_version="1.34")
    plan = json.loads(run_cli("plan", config, "--json").out)
    assert plan["eks"]["action"] == "upgrade" and "1.33, then 1.34" in plan["eks"]["findings"][0]
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    cluster = eks.describe_cluster(name=f"{DEPLOYMENT}-eks")["cluster"]
    [group] = [eks.describe_nodegroup(clusterName=cluster["name"], nodegroupName=n)["nodegroup"]
               for n in eks.list_nodegroups(clusterName=cluster["name"])["nodegroups"]]
    addon = eks.describe_addon(clusterName=cluster["name"], addonName="aws-ebs-csi-driver")["addon"]
    assert (cluster["version"], group["version"]) == ("1.34", "1.34")
    versions = eks.describe_addon_versions(addonName="aws-ebs-csi-driver", kubernetesVersion="1.34")["addons"][0]
    assert addon["addonVersion"] in [v["addonVersion"] for v in versions["addonVersions"]]
    assert addon["addonVersion"] != addon_before["addonVersion"]
    assert eks_history() == [("cluster", cluster["name"], "1.32", "1.33"),
                             ("nodegroup", group["nodegroupName"], "1.32", "1.33"),
                             ("cluster", cluster["name"], "1.33", "1.34"),
                             ("nodegroup", group["nodegroupName"], "1.33", "1.34"),
                             ("addon", "aws-ebs-csi-driver", addon_before["addonVersion"], addon["addonVersion"])]
    revisions = release_revisions(kube_server)
    assert {r for r in revisions if revisions[r] != revisions_before[r]} == {"cluster-autoscaler"}  # follows the version
    reapply_changes_nothing(config, kube_server, monkeypatch)

    lower = write_config(tmp_path / "config.yaml", eks_cluster_version="1.33")
    refused = run_cli("apply", lower, "--yes")
    assert refused.code == 2 and "eks_cluster_version" in refused.err and "cannot downgrade" in refused.err
    assert eks.describe_cluster(name=cluster["name"])["cluster"]["version"] == "1.34"


def test_an_upgrade_killed_midway_resumes_where_it_stopped(aws, tmp_path, monkeypatch):
    from tests.faults import run_until_crash
    config = write_config(tmp_path / "config.yaml", eks_cluster_version="1.32")
    assert run_cli("apply", config, "--yes").code == 0
    eks_history().clear()
    config = write_config(tmp_path / "config.yaml", eks_cluster_version="1.34")
    run_until_crash(monkeypatch, 2, "apply", config, "--yes")  # after the node group's first upgrade call
    assert [h[0] for h in eks_history()] == ["cluster"]
    assert run_cli("apply", config, "--yes").code == 0
    assert [(h[0], h[3]) for h in eks_history()[:4]] == [("cluster", "1.33"), ("nodegroup", "1.33"),
                                                         ("cluster", "1.34"), ("nodegroup", "1.34")]


def test_a_new_instance_type_replaces_the_node_group_without_leaving_the_cluster_empty(aws, tmp_path, kube_server,
                                                                                      monkeypatch):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    eks_history().clear()
    config = write_config(tmp_path / "config.yaml", node_instance_type="m5.2xlarge")
    plan = json.loads(run_cli("plan", config, "--json").out)
    assert plan["eks"]["action"] == "replace"
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    eks = client("eks")
    groups = eks.list_nodegroups(clusterName=f"{DEPLOYMENT}-eks")["nodegroups"]
    assert groups == [f"{DEPLOYMENT}-m5-2xlarge"]
    described = eks.describe_nodegroup(clusterName=f"{DEPLOYMENT}-eks", nodegroupName=groups[0])["nodegroup"]
    assert described["instanceTypes"] == ["m5.2xlarge"] and described["scalingConfig"]["desiredSize"] == 3
    assert eks_history() == [("create", f"{DEPLOYMENT}-m5-2xlarge"), ("delete", f"{DEPLOYMENT}-default")]
    reapply_changes_nothing(config, kube_server, monkeypatch)
    assert run_cli("destroy", config, "--yes").code == 0
    assert census() == {} and cluster_changes(kube_server.cluster) == {}


def test_changed_values_upgrade_only_their_release(aws, tmp_path, kube_server, monkeypatch):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    before = release_revisions(kube_server)
    config = write_config(tmp_path / "config.yaml", langsmith_sizing="dev")
    with AwsCalls() as seen:
        result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    after = release_revisions(kube_server)
    assert {r: (before[r], after[r]) for r in after if after[r] != before[r]} == {"langsmith": (1, 2)}
    assert seen.mutating == []
    reapply_changes_nothing(config, kube_server, monkeypatch)


def test_switching_gateway_and_tls_mode_moves_traffic_and_retires_the_old_path(aws, tmp_path, kube_server,
                                                                                monkeypatch):
    """NGINX behind an HTTPS ALB becomes Envoy behind a TCP Network Load Balancer: the new
    path serves, then the old load balancer, target group, binding and release go."""
    from tests.test_edge import assert_clients_reach_the_serving_pods
    config = write_config(tmp_path / "config.yaml", enable_nginx_ingress=True, tls_certificate_source="acm",
                          langsmith_domain=DOMAIN)
    assert run_cli("apply", config, "--yes").code == 0
    assert pod_ports_open_to_the_load_balancer() == [80]
    config = write_config(tmp_path / "config.yaml", enable_envoy_gateway=True, tls_certificate_source="letsencrypt",
                          langsmith_domain=DOMAIN, letsencrypt_email="ops@example.com")
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert_clients_reach_the_serving_pods("envoy-letsencrypt", kube_server)
    elbv2 = client("elbv2")
    assert [lb["LoadBalancerName"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]] == [f"{DEPLOYMENT}-nlb"]
    assert sorted(g["TargetGroupName"] for g in elbv2.describe_target_groups()["TargetGroups"]) == [
        f"{DEPLOYMENT}-pt443", f"{DEPLOYMENT}-pt80"]
    assert [(b["metadata"]["namespace"], b["metadata"]["name"])
            for b in kube_server.cluster.items("elbv2.k8s.aws", "targetgroupbindings")] == [
        ("envoy-gateway-system", "langsmith-tgb"), ("envoy-gateway-system", "langsmith-tgb-443")]
    assert "ingress-nginx" not in release_revisions(kube_server)
    assert pod_ports_open_to_the_load_balancer() == [10080, 10443]  # NGINX's port 80 closed again
    reapply_changes_nothing(config, kube_server, monkeypatch)
    assert run_cli("destroy", config, "--yes").code == 0
    assert census() == {} and cluster_changes(kube_server.cluster) == {}
