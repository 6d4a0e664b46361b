"""Kubernetes bootstrap: the langsmith namespace, a default gp3 StorageClass, the cluster
services LangSmith relies on, and the SSM -> langsmith-config secret flow.

The load balancer controller goes first: its webhook intercepts Services, so charts
installed before it is ready can fail. The other releases do not depend on each other
and install at the same time. Teardown clears the known blockers itself: the KEDA
metrics APIService goes before any namespace (a stale one keeps every namespace
Terminating), and the load balancer controller is uninstalled last so it can release
what it made.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from provisioner.aws import attributed_to
from provisioner.charts import DEFAULT_CHARTS, chart_source
from provisioner.errors import StepError
from provisioner.kube import ClusterMissing
from provisioner.waiting import wait_until

from ._releases import install_release, uninstall_releases
from .base import Finding, Step, register

NAMESPACE = "langsmith"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
FIRST_RELEASE = "aws-load-balancer-controller"
PARALLEL_RELEASES = ("cluster-autoscaler", "metrics-server", "keda", "external-secrets", "cert-manager")
# Uninstalled in this order: the application and gateways first, the load balancer controller last.
# Releases of later steps a destroy without state may still find, before this step's own.
LATER_RELEASES = ("langsmith", "ingress-nginx", "istio-ingressgateway", "istiod", "istio-base", "envoy-gateway")
KEDA_APISERVICE = "v1beta1.external.metrics.k8s.io"
SECRET_STORE = "langsmith-ssm"
CONFIG_SECRET = "langsmith-config"
# SSM leaf -> key in the langsmith-config secret (the chart's config.existingSecretName contract)
CONFIG_KEYS = {"langsmith-license-key": "langsmith_license_key", "langsmith-api-key-salt": "api_key_salt",
               "langsmith-jwt-secret": "jwt_secret", "langsmith-admin-password": "initial_org_admin_password",
               "langsmith-insights-encryption-key": "insights_encryption_key",
               "langsmith-polly-encryption-key": "polly_encryption_key"}
# The chart's defaultArgs (metrics-server 3.13.0 values.yaml) with the kubelet reached on its InternalIP only.
METRICS_SERVER_ARGS = ["--cert-dir=/tmp", "--kubelet-preferred-address-types=InternalIP",
                       "--kubelet-use-node-status-port", "--metric-resolution=15s"]
SECRET_WAIT_SECONDS = 120
NAMESPACE_WAIT_SECONDS = 600
EBS_CSI_DRIVER = "ebs.csi.aws.com"
VOLUME_WAIT_SECONDS = 600


def _service_account(name: str, role_arn: str | None) -> dict:
    return {"create": True, "name": name, "annotations": {IRSA_ANNOTATION: role_arn} if role_arn else {}}


def autoscaler_tag(kubernetes_version: str) -> str:
    """Cluster Autoscaler is released per Kubernetes minor version and meant to run with that
    control plane version (kubernetes/autoscaler README, "Releases"); the chart's default
    image follows the newest. So an upgrade of the cluster upgrades this release too."""
    return f"v{kubernetes_version}.0"


def release_values(ctx) -> dict[str, dict]:
    """The values each bootstrap release is installed with; IRSA roles from the eks step."""
    cfg, eks, vpc = ctx.config, ctx.upstream("eks"), ctx.upstream("vpc")
    roles = eks["irsa_roles"]
    return {
        FIRST_RELEASE: {"clusterName": eks["cluster_name"], "region": cfg["region"], "vpcId": vpc["vpc_id"],
                        "serviceAccount": _service_account(FIRST_RELEASE, roles["load-balancer-controller"])},
        "cluster-autoscaler": {"autoDiscovery": {"clusterName": eks["cluster_name"]}, "awsRegion": cfg["region"],
                               "image": {"tag": autoscaler_tag(eks.get("kubernetes_version")
                                                               or cfg["eks_cluster_version"])},
                               "rbac": {"serviceAccount": _service_account("cluster-autoscaler",
                                                                           roles["cluster-autoscaler"])}},
        # `args` are appended after the chart's defaultArgs, which already set the address types:
        # replace that one entry instead of adding a second flag.
        "metrics-server": {"defaultArgs": METRICS_SERVER_ARGS},
        "keda": {"resources": {"operator": {"requests": {"cpu": "100m", "memory": "100Mi"}}}},
        "external-secrets": {"installCRDs": True,
                             "serviceAccount": _service_account("external-secrets", roles["external-secrets"])},
        "cert-manager": {"crds": {"enabled": True},
                         "serviceAccount": _service_account("cert-manager", roles.get("cert-manager"))},
    }


def _storage_classes() -> list[dict]:
    gp3 = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
           "metadata": {"name": "gp3", "annotations": {DEFAULT_CLASS: "true"}},
           "provisioner": "ebs.csi.aws.com", "parameters": {"type": "gp3", "encrypted": "true", "fsType": "ext4"},
           "allowVolumeExpansion": True, "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}
    return [gp3]


def _external_secrets(ctx) -> list[dict]:
    parameters = ctx.upstream("secrets")["parameters"]
    store = {"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
             "metadata": {"name": SECRET_STORE},
             "spec": {"provider": {"aws": {"service": "ParameterStore", "region": ctx.config["region"]}}}}
    external = {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": CONFIG_SECRET, "namespace": NAMESPACE},
                "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": SECRET_STORE, "kind": "ClusterSecretStore"},
                         "target": {"name": CONFIG_SECRET, "creationPolicy": "Owner"},
                         "data": [{"secretKey": key, "remoteRef": {"key": parameters[leaf]}}
                                  for leaf, key in CONFIG_KEYS.items() if leaf in parameters]}}
    return [store, external]


@register
class K8sBootstrap(Step):
    name = "k8s_bootstrap"
    requires = ("eks", "secrets", "vpc")

    def create(self, ctx) -> dict:
        kube, helm = ctx.cluster()
        kube.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": NAMESPACE, "labels": {"app": "langsmith", "managed-by": "provisioner"}}})
        ctx.record("namespace", NAMESPACE)
        for storage_class in _storage_classes():
            kube.apply(storage_class)
            ctx.record(f"storageclass/{storage_class['metadata']['name']}", storage_class["metadata"]["name"])
        if kube.get("storage.k8s.io/v1", "StorageClass", "gp2") is not None:
            kube.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                        "metadata": {"name": "gp2", "annotations": {DEFAULT_CLASS: "false"}}})
        values = release_values(ctx)
        releases, listed = {}, helm.all_releases()

        def install(release: str) -> None:
            releases[release] = install_release(ctx, helm, release, values[release], listed)

        install(FIRST_RELEASE)
        _all_at_once(install, PARALLEL_RELEASES)
        for obj in _external_secrets(ctx):
            kube.apply(obj)
            ctx.record(obj["kind"].lower(), obj["metadata"]["name"])
        self._wait_for_config_secret(ctx, kube)
        return {"namespace": NAMESPACE, "storage_class": "gp3", "config_secret": CONFIG_SECRET,
                "releases": dict(sorted(releases.items()))}

    @staticmethod
    def _wait_for_config_secret(ctx, kube) -> None:
        """The operator validates a new ClusterSecretStore before using it, and until then
        reports the ExternalSecret Ready=False ("ClusterSecretStore ... is not ready"): a
        normal first state on EKS, not a failure. So wait for the store Ready=True, then
        the secret; Ready=False counts as still starting until the timeout, whose error
        carries the operator's last message."""
        last = {}

        def ready(api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
            found = kube.get(api_version, kind, name, namespace) or {}
            condition = next((c for c in found.get("status", {}).get("conditions", []) if c.get("type") == "Ready"),
                             {})
            if condition.get("status") == "False":
                last[kind] = condition.get("message") or condition.get("reason")
            return condition.get("status") == "True"

        def synced():
            store_ready = ready("external-secrets.io/v1", "ClusterSecretStore", SECRET_STORE)
            ready("external-secrets.io/v1", "ExternalSecret", CONFIG_SECRET, NAMESPACE)  # for its message
            return store_ready and kube.get("v1", "Secret", CONFIG_SECRET, NAMESPACE) is not None
        try:
            wait_until(synced, what=f"secret {NAMESPACE}/{CONFIG_SECRET} from SSM", expected_seconds=10,
                       timeout_seconds=SECRET_WAIT_SECONDS, progress=ctx.progress)
        except StepError as error:
            said = "; ".join(f"{kind}: {message}" for kind, message in last.items())
            raise StepError(f"{error} ({said or 'the External Secrets operator reported nothing'}); check the "
                            f"SSM parameters under {ctx.config.ssm_prefix} and the external-secrets IRSA role") \
                from None

    def verify(self, ctx) -> list[Finding]:
        try:
            kube, helm = ctx.cluster()
        except ClusterMissing:
            return [Finding(f"cluster {ctx.config.cluster_name}", "not there yet", missing=True)]
        findings = []
        nodes = kube.list("v1", "Node")
        ready = [n for n in nodes if any(c.get("type") == "Ready" and c.get("status") == "True"
                                         for c in n.get("status", {}).get("conditions", []))]
        ctx.fact(f"{len(ready)}/{len(nodes)} nodes Ready")
        if not ready:
            findings.append(Finding("nodes", "none Ready: pods cannot run (check the node group and the VPC egress)"))
        for release in (FIRST_RELEASE, *PARALLEL_RELEASES):
            source = chart_source(ctx.config, release)
            found = helm.release(release, source.namespace)
            wanted = f"{source.chart_name}-{source.pinned_version}"
            if found is None:
                findings.append(Finding(f"release {release}", "not installed", missing=True))
            elif found["status"] != "deployed" or found["chart"] != wanted:
                findings.append(Finding(f"release {release}", f"{found['status']} at {found['chart']}, config "
                                                              f"wants deployed at {wanted}"))
            else:
                ctx.fact(f"release {release} deployed ({found['chart']})")
        if kube.get("v1", "Namespace", NAMESPACE) is None:
            findings.append(Finding(f"namespace {NAMESPACE}", "missing", missing=True))
        gp3 = kube.get("storage.k8s.io/v1", "StorageClass", "gp3")
        if gp3 is None or gp3["metadata"].get("annotations", {}).get(DEFAULT_CLASS) != "true":
            findings.append(Finding("StorageClass gp3", "missing" if gp3 is None else "not the default",
                                    missing=gp3 is None))
        if kube.get("v1", "Secret", CONFIG_SECRET, NAMESPACE) is None:
            findings.append(Finding(f"secret {NAMESPACE}/{CONFIG_SECRET}", "missing (not synced from SSM)",
                                    missing=True))
        return findings

    def destroy(self, ctx) -> None:
        try:
            kube, helm = ctx.cluster()
        except ClusterMissing:
            ctx.progress("no cluster: nothing to remove inside it")
        else:
            self._teardown_in_cluster(ctx, kube, helm)
        ctx.forget_all()

    @staticmethod
    def _teardown_in_cluster(ctx, kube, helm) -> None:
        kube.delete("external-secrets.io/v1", "ExternalSecret", CONFIG_SECRET, NAMESPACE)
        kube.delete("external-secrets.io/v1", "ClusterSecretStore", SECRET_STORE)
        if kube.delete("apiregistration.k8s.io/v1", "APIService", KEDA_APISERVICE):
            ctx.progress(f"deleted APIService {KEDA_APISERVICE} (a stale one blocks namespace deletion)")
        uninstall_releases(ctx, kube, helm, LATER_RELEASES)
        _all_at_once(lambda release: uninstall_releases(ctx, kube, helm, [release]), PARALLEL_RELEASES)
        uninstall_releases(ctx, kube, helm, [FIRST_RELEASE])  # last: its finalizers must be served to the end
        namespaces = sorted({NAMESPACE, "langsmith-agents", *(c.namespace for c in DEFAULT_CHARTS.values())}
                            - {"kube-system"})
        for namespace in namespaces:
            kube.delete("v1", "Namespace", namespace)
        kube.delete("storage.k8s.io/v1", "StorageClass", "gp3")
        gp2 = kube.get("storage.k8s.io/v1", "StorageClass", "gp2")
        if gp2 is not None and gp2["metadata"].get("annotations", {}).get(DEFAULT_CLASS) == "false":
            kube.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",  # EKS's default again, as
                        "metadata": {"name": "gp2", "annotations": {DEFAULT_CLASS: "true"}}})  # before the apply

        def all_gone():
            return not any(kube.get("v1", "Namespace", n) for n in namespaces)
        try:
            wait_until(all_gone, what="namespaces to finish terminating", expected_seconds=20,
                       timeout_seconds=NAMESPACE_WAIT_SECONDS, progress=ctx.progress)
        except StepError:
            raise StepError("namespaces still Terminating: " + "; ".join(
                f"{n}: " + ", ".join(c.get("message", c.get("type", "")) for c in
                                     (kube.get("v1", "Namespace", n) or {}).get("status", {}).get("conditions", []))
                for n in namespaces if kube.get("v1", "Namespace", n))) from None
        _wait_for_released_volumes(ctx, kube, namespaces)


def _wait_for_released_volumes(ctx, kube, namespaces: list[str]) -> None:
    """The claims in the deleted namespaces are gone, but the EBS CSI driver deletes their
    volumes (reclaimPolicy Delete) only afterwards, and only while it runs: the eks step
    removes the driver next, so its volumes must be gone first, or they stay behind in the
    account, untagged and billed."""
    def releasing() -> list[str]:
        return [pv["metadata"]["name"] for pv in kube.list("v1", "PersistentVolume")
                if pv.get("spec", {}).get("csi", {}).get("driver") == EBS_CSI_DRIVER
                and pv["spec"].get("persistentVolumeReclaimPolicy", "Delete") == "Delete"
                and pv["spec"].get("claimRef", {}).get("namespace") in namespaces]
    try:
        wait_until(lambda: not releasing(), what="EBS volumes of the deleted claims to be released",
                   expected_seconds=30, timeout_seconds=VOLUME_WAIT_SECONDS, progress=ctx.progress)
    except StepError:
        raise StepError(f"PersistentVolumes {', '.join(releasing())} still hold EBS volumes; check the "
                        "ebs-csi-controller logs in kube-system, then run destroy again") from None


def _all_at_once(action, releases) -> None:
    """Run action for each release in its own thread (they do not depend on each other); the
    threads' AWS calls still count for this step; the first failure is raised."""
    def attributed(release: str) -> None:
        with attributed_to(K8sBootstrap.name):
            action(release)
    with ThreadPoolExecutor(max_workers=len(releases)) as pool:
        for future in [pool.submit(attributed, release) for release in releases]:
            future.result()
