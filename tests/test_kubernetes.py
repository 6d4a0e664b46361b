"""The cluster side: access, the bootstrap releases through the real helm binary against
the fake API server, the SSM -> langsmith-config flow, recovery and teardown."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import yaml

from provisioner import kube
from provisioner.charts import HELM_RELEASES
from provisioner.simulation.fakekube import STANDIN_CHART
from tests.census import cluster_census, cluster_changes
from tests.conftest import LICENSE, REGION, run_cli, write_config

DEPLOYMENT = "acme-test"
BOOTSTRAP = ["aws-load-balancer-controller", "cluster-autoscaler", "metrics-server", "keda", "external-secrets",
             "cert-manager"]


@pytest.fixture
def applied(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    return config


def obj(kube_server, group, plural, namespace, name):
    return kube_server.cluster.find(group, plural, namespace, name)


def recorded_values(kube_server, release, namespace):
    """The stand-in chart writes the values helm gave it into a ConfigMap."""
    config_map = obj(kube_server, "", "configmaps", namespace, f"{release}-standin-values")
    return yaml.safe_load(config_map["data"]["values.yaml"])


def test_apply_installs_the_bootstrap_releases_with_their_irsa_roles(shared_deployment, kube_server):
    found = cluster_census(kube_server.cluster)
    expected_namespaces = {"kube-system": ["aws-load-balancer-controller", "cluster-autoscaler", "metrics-server"],
                           "keda": ["keda"], "external-secrets": ["external-secrets"], "cert-manager": ["cert-manager"]}
    for namespace, releases in expected_namespaces.items():
        for release in releases:
            assert found[("helm-release", f"{namespace}/{release}: deployed")] == 1
    roles = {r["RoleName"]: r["Arn"] for r in boto3.client("iam", region_name=REGION).list_roles()["Roles"]}
    lbc = recorded_values(kube_server, "aws-load-balancer-controller", "kube-system")
    assert lbc["clusterName"] == "acme-test-eks" and lbc["region"] == REGION and lbc["vpcId"].startswith("vpc-")
    sa = obj(kube_server, "", "serviceaccounts", "kube-system", "aws-load-balancer-controller")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == roles["acme-test-irsa-load-balancer-controller"]
    eso = obj(kube_server, "", "serviceaccounts", "external-secrets", "external-secrets")
    assert eso["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == roles["acme-test-irsa-external-secrets"]
    autoscaler = recorded_values(kube_server, "cluster-autoscaler", "kube-system")
    assert autoscaler["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == \
        roles["acme-test-irsa-cluster-autoscaler"]
    assert recorded_values(kube_server, "cert-manager", "cert-manager")["serviceAccount"]["annotations"] == {}


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


def test_verify_reports_a_release_and_the_secret_gone_missing(applied, kube_server):
    assert run_cli("verify", applied).code == 0
    subprocess.run(["helm", "uninstall", "keda", "-n", "keda", "--kubeconfig", "kubeconfig"], check=True,
                   capture_output=True)
    kube_server.cluster.delete(kube_server.cluster_kind("externalsecrets"), "langsmith", "langsmith-config")
    assert obj(kube_server, "", "secrets", "langsmith", "langsmith-config") is None  # owned by it
    result = run_cli("verify", applied)
    assert result.code == 1
    assert "release keda: not installed" in result.out
    assert "secret langsmith/langsmith-config" in result.out
    assert run_cli("apply", applied, "--yes").code == 0
    assert run_cli("verify", applied).code == 0


def test_a_changed_chart_version_upgrades_only_that_release(applied, kube_server, tmp_path):
    chart = tmp_path / "keda-chart"
    subprocess.run(["cp", "-r", STANDIN_CHART, str(chart)], check=True)
    (chart / "Chart.yaml").write_text((chart / "Chart.yaml").read_text().replace("version: 0.1.0", "version: 0.2.0"))
    charts = {r: {"chart": STANDIN_CHART} for r in HELM_RELEASES}
    charts["keda"] = {"chart": str(chart)}
    config = write_config(tmp_path / "config.yaml", charts=charts)
    result = run_cli("apply", config, "--yes")
    assert result.code == 0, result
    assert result.out.count("helm upgrade --install") == 1 and "keda (standin-0.2.0)" in result.out
    assert cluster_census(kube_server.cluster)[("helm-release", "keda/keda: deployed")] == 1


def _run_helm_until_pending(kube_server, release, namespace, status):
    """Start helm with its workloads held unready, and kill it mid-wait: the release is
    left in a pending state, as after a crash or a lost connection."""
    kube_server.cluster.hold_readiness = True
    process = subprocess.Popen(["helm", "upgrade", "--install", release, STANDIN_CHART, "-n", namespace,
                                "--create-namespace", "--wait", "--timeout", "60s", "--set", "changed=true",
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
    assert "changed" not in recorded_values(kube_server, "keda", "keda")  # back to the provisioner's values


def test_destroy_removes_everything_in_the_cluster(applied, kube_server):
    result = run_cli("destroy", applied, "--yes")
    assert result.code == 0, result
    assert cluster_changes(kube_server.cluster) == {}
    out = result.out
    assert out.index("helm uninstall langsmith") < out.index("APIService v1beta1.external.metrics.k8s.io")
    assert out.index("APIService v1beta1.external.metrics.k8s.io") < out.index("helm uninstall keda")
    assert out.index("helm uninstall keda") < out.index("helm uninstall aws-load-balancer-controller")


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


def test_eks_connection_writes_no_token_to_disk(applied):
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
