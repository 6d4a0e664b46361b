"""The LangSmith release: values generated from the other steps' outputs, installed with
helm, and waited for until the migrations and bootstrap jobs completed and every
deployment is available.

Credentials never appear in a values file: the data stores' connection secrets are
built inside the cluster by External Secrets from SSM parameters (store_secrets: RDS and
ElastiCache, and generated passwords for the stores the chart runs itself), and the app
secrets come from langsmith-config.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.charts import chart_source
from provisioner.errors import StepError
from provisioner.kube import ClusterMissing
from provisioner.waiting import wait_until

from ._releases import install_release, uninstall_release
from .base import Finding, Step, register
from .k8s_bootstrap import CONFIG_SECRET, IRSA_ANNOTATION, NAMESPACE, SECRET_STORE
from .ingress import GATEWAY_NAME

RELEASE = "langsmith"
READY_SECONDS = 1800
AGENTS_NAMESPACE = "langsmith-agents"
# The operator's custom resource, one per LangGraph deployment (the chart's templates/operator/crds.yaml:
# CRD lgps.apps.langchain.ai, kind LGP, version v1alpha1).
LGP_API, LGP_KIND = "apps.langchain.ai/v1alpha1", "LGP"
# component -> (min replicas, max replicas)
AUTOSCALING = {"frontend": (1, 10), "backend": (3, 10), "platformBackend": (1, 10), "playground": (1, 10),
               "queue": (3, 10), "ingestQueue": (3, 10), "aceBackend": (1, 5)}
# These scale on Redis queue depth (KEDA) instead of an HPA: the chart's validate.yaml refuses both at once.
KEDA_SCALED = ("queue", "ingestQueue")
# Workloads the chart gives the traces bucket (config.blobStorage), by values path, with the service
# account the chart names for each ({release}-{name}, or {release}-{namePrefix}-{name} for the agents);
# each gets the IRSA annotation, and the storage step's role trusts exactly these.
S3_WORKLOADS = {
    ("backend",): "langsmith-backend", ("platformBackend",): "langsmith-platform-backend",
    ("queue",): "langsmith-queue", ("ingestQueue",): "langsmith-ingest-queue",
    ("hostBackend",): "langsmith-host-backend", ("listener",): "langsmith-listener",
    ("engineInsightsAgent", "apiServer"): "langsmith-standalone-insights-api-server",
    ("engineInsightsAgent", "queue"): "langsmith-standalone-insights-queue",
    ("polly", "apiServer"): "langsmith-standalone-polly-api-server",
    ("polly", "queue"): "langsmith-standalone-polly-queue",
}
DEPLOYMENTS_COMPONENTS = ("hostBackend", "listener", "operator")
# profile -> component -> (cpu, memory) requests
SIZING = {
    "dev": {"frontend": ("100m", "256Mi"), "backend": ("250m", "1Gi"), "platformBackend": ("100m", "512Mi"),
            "playground": ("100m", "256Mi"), "queue": ("250m", "1Gi"), "ingestQueue": ("250m", "1Gi"),
            "aceBackend": ("100m", "256Mi"), "clickhouse": ("1", "4Gi")},
    "production": {"frontend": ("500m", "1Gi"), "backend": ("1", "2Gi"), "platformBackend": ("500m", "1Gi"),
                   "playground": ("500m", "1Gi"), "queue": ("1", "2Gi"), "ingestQueue": ("1", "2Gi"),
                   "aceBackend": ("500m", "1Gi"), "clickhouse": ("3500m", "15Gi")},
    "production-large": {"frontend": ("1", "2Gi"), "backend": ("2", "4Gi"), "platformBackend": ("1", "2Gi"),
                         "playground": ("1", "2Gi"), "queue": ("2", "4Gi"), "ingestQueue": ("2", "4Gi"),
                         "aceBackend": ("1", "2Gi"), "clickhouse": ("8", "32Gi")},
}


def admin_email(cfg) -> str:
    return cfg["langsmith_admin_email"] or f"admin@{cfg['langsmith_domain'] or 'langsmith.local'}"


def hostname(ctx) -> str:
    return ctx.config["langsmith_domain"] or ctx.upstream("alb").get("dns_name", "")


def url(ctx) -> str:
    scheme = "http" if ctx.config["tls_certificate_source"] == "none" else "https"
    return f"{scheme}://{hostname(ctx)}"


CREDENTIAL = "{{ .credential }}"  # where the External Secrets operator puts the SSM value
IN_CLUSTER = "langsmith.svc.cluster.local"


@dataclass(frozen=True)
class StoreSecret:
    """A Secret of ours that a data store's chart values name in `existingSecretName`, so the
    chart renders none of its own and no password passes through a values file, the state or
    this process: External Secrets assembles it in the cluster from an SSM parameter."""
    name: str  # ours, never the chart's own name: helm refuses to adopt a Secret it did not make
    values_path: tuple[str, ...]  # where the store's `external` block sits in the chart values
    parameter: str  # the SSM leaf holding the password
    data: dict[str, str]  # the keys the chart's own Secret would hold, the password as CREDENTIAL
    external: bool = False  # a store outside the cluster (the chart then runs none of its own)


def store_secrets(ctx) -> list[StoreSecret]:
    """What the langsmith chart (0.16.0) connects to, each with a password we generated.

    External stores: connection_url as the chart's external mode writes it, without a scheme
    (values.yaml: "Do not include the driver name"; LangSmith docs, external Postgres:
    username:password@host:port/database?params), and Redis with its rediss:// scheme
    (templates/redis/secrets.yaml). Generated passwords are URL-safe, so none is encoded.
    Stores the chart runs itself (in-cluster Postgres, ClickHouse, the Insights and Polly
    Postgres): left to the chart they start with the values' default passwords ("postgres",
    "password"); ours hold the keys of the chart's own Secret (templates/postgres/secrets.yaml,
    clickhouse/secrets.yaml, agent-features/*/postgres/secrets.yaml) with a generated one.
    tests/test_chart_contracts.py renders the chart's own to compare."""
    cfg, found = ctx.config, []
    if cfg["postgres_source"] == "external":
        pg = ctx.upstream("postgres")
        found.append(StoreSecret("langsmith-external-postgres", ("postgres",), "postgres-password", {
            "connection_url": f"{pg['username']}:{CREDENTIAL}@{pg['address']}:{pg['port']}/{pg['database']}"
                              "?sslmode=require"}, external=True))
    else:
        found.append(StoreSecret("langsmith-incluster-postgres", ("postgres",), "postgres-password", {
            **_postgres_init(),
            "connection_url": f"postgres:{CREDENTIAL}@langsmith-postgres.{IN_CLUSTER}:5432/postgres"}))
    if cfg["redis_source"] == "external":
        redis = ctx.upstream("redis")
        found.append(StoreSecret("langsmith-external-redis", ("redis",), "redis-auth-token", {
            "connection_url": f"rediss://:{CREDENTIAL}@{redis['address']}:{redis['port']}"}, external=True))
    found.append(StoreSecret("langsmith-incluster-clickhouse", ("clickhouse",), "clickhouse-password", {
        "clickhouse_user": "default", "clickhouse_password": CREDENTIAL, "clickhouse_db": "default",
        "clickhouse_host": f"langsmith-clickhouse.{IN_CLUSTER}", "clickhouse_port": "8123",
        "clickhouse_native_port": "9000", "clickhouse_tls": "false"}))
    for product, feature in (("engineInsightsAgent", "insights"), ("polly", "polly")):
        found.append(StoreSecret(f"langsmith-{feature}-incluster-postgres", (product, "postgres"),
                                 f"{feature}-postgres-password", {
                                     **_postgres_init(),
                                     "postgres_connection_url": f"postgres://postgres:{CREDENTIAL}@langsmith-standalone-"
                                                                f"{feature}-postgres.{IN_CLUSTER}:5432/postgres"
                                                                "?sslmode=disable"}))
    return found


def _postgres_init() -> dict[str, str]:
    """What the chart's Postgres StatefulSets read to initialise the database (its default user and database)."""
    return {"postgres_user": "postgres", "postgres_password": CREDENTIAL, "postgres_db": "postgres"}


# Every name a store secret of ours may have had, whatever the modes since.
EVERY_STORE_SECRET = ("langsmith-external-postgres", "langsmith-incluster-postgres", "langsmith-external-redis",
                      "langsmith-incluster-clickhouse", "langsmith-insights-incluster-postgres",
                      "langsmith-polly-incluster-postgres")


def connection_secrets(ctx) -> list[dict]:
    """The ExternalSecrets behind store_secrets."""
    return [{"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
             "metadata": {"name": store.name, "namespace": NAMESPACE},
             "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": SECRET_STORE, "kind": "ClusterSecretStore"},
                      "target": {"name": store.name, "creationPolicy": "Owner",
                                 "template": {"engineVersion": "v2", "data": store.data}},
                      "data": [{"secretKey": "credential",
                                "remoteRef": {"key": ctx.config.ssm_prefix + store.parameter}}]}}
            for store in store_secrets(ctx)]


def _component(cfg, name: str) -> dict:
    cpu, memory = SIZING[cfg["langsmith_sizing"]][name]
    values: dict = {"deployment": {"resources": {"requests": {"cpu": cpu, "memory": memory}}}}
    if name in AUTOSCALING:
        low, high = AUTOSCALING[name]
        values["deployment"]["replicas"] = low
        # KEDA's ScaledObject keys are minReplicaCount/maxReplicaCount (the chart's
        # templates/queue/scaled-object.yaml); the HPA's are minReplicas/maxReplicas.
        values["autoscaling"] = ({"keda": {"enabled": True, "minReplicaCount": low, "maxReplicaCount": high}}
                                 if name in KEDA_SCALED else
                                 {"hpa": {"enabled": True, "minReplicas": low, "maxReplicas": high}})
    return values


def _irsa(values: dict, role: str, enabled_components: set[str]) -> None:
    """The IRSA annotation on the service account of every workload given the bucket."""
    for path in S3_WORKLOADS:
        if path[0] in enabled_components:
            node = values
            for key in path:
                node = node.setdefault(key, {})
            node["serviceAccount"] = {"annotations": {IRSA_ANNOTATION: role}}


def langsmith_values(ctx) -> dict:
    cfg = ctx.config
    storage = ctx.upstream("storage")
    tls = cfg["tls_certificate_source"] != "none"
    values: dict = {
        # config.hostname carries its scheme: the chart uses it verbatim for the public URLs
        # (HOST_BACKEND_ENDPOINT_PUBLIC) and adds https:// to a bare name (_helpers.tpl hostnameWithProtocol).
        # authType mixed: the only one basic auth (the initial admin password) works with (validate.yaml).
        "config": {"existingSecretName": CONFIG_SECRET, "hostname": url(ctx), "authType": "mixed",
                   "initialOrgAdminEmail": admin_email(cfg), "basicAuth": {"enabled": True},
                   "blobStorage": {"enabled": True, "engine": "S3", "bucketName": storage["bucket_name"],
                                   "apiURL": f"https://s3.{cfg['region']}.amazonaws.com"}},
        "clickhouse": {"statefulSet": {"persistence": {"storageClassName": "gp3", "size": "50Gi"},
                                       "resources": {"requests": dict(zip(("cpu", "memory"), SIZING[
                                           cfg["langsmith_sizing"]]["clickhouse"]))}}},
    }
    for name in AUTOSCALING:
        values[name] = _component(cfg, name)
    # Our ALB (through its TargetGroupBinding) serves: the chart's LoadBalancer default would make another.
    values["frontend"]["service"] = {"type": "ClusterIP"}
    for store in store_secrets(ctx):
        node = values
        for key in store.values_path:
            node = node.setdefault(key, {})
        node["external"] = {"existingSecretName": store.name, **({"enabled": True} if store.external else {})}
    gateway = cfg.gateway
    if gateway == "nginx":
        values["ingress"] = {"enabled": True, "ingressClassName": "nginx"}
    elif gateway == "envoy":
        values["gateway"] = {"enabled": True, "name": GATEWAY_NAME, "namespace": NAMESPACE}
    elif gateway == "istio":
        values["istioGateway"] = {"enabled": True, "name": GATEWAY_NAME, "namespace": "istio-system"}
    enabled = {*AUTOSCALING, "engineInsightsAgent", "polly"}  # insights and polly are on in the chart
    if cfg["enable_langsmith_deployments"]:
        # This alone turns on host-backend, listener and operator (their templates check it).
        values["config"]["deployment"] = {"enabled": True, "tlsEnabled": tls}
        enabled.update(DEPLOYMENTS_COMPONENTS)
        if cfg["enable_split_dataplane"]:
            # The operator reconciles LangGraph deployments in both namespaces (a Role in each).
            values["operator"] = {"watchNamespaces": f"{NAMESPACE},{AGENTS_NAMESPACE}"}
    _irsa(values, storage["langsmith_role_arn"], enabled)
    return values


@register
class Langsmith(Step):
    name = "langsmith"
    requires = ("k8s_bootstrap", "ingress", "storage", "postgres", "redis", "alb", "firewall")
    data_loss = "the in-cluster ClickHouse volume with every trace's runs (and in-cluster Postgres and Redis)"

    @staticmethod
    def enabled(config) -> bool:
        return config["deploy_langsmith"]

    def create(self, ctx) -> dict:
        kube, helm = ctx.cluster()
        cfg = ctx.config
        wanted = connection_secrets(ctx)
        for external in wanted:
            kube.apply(external)
            ctx.record(f"externalsecret/{external['metadata']['name']}", external["metadata"]["name"])
        self._wait_for(ctx, lambda: all(kube.get("v1", "Secret", e["metadata"]["name"], NAMESPACE)
                                        for e in wanted), "connection secrets from SSM", 120)
        if cfg["enable_split_dataplane"]:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENTS_NAMESPACE}})
        release = install_release(ctx, helm, RELEASE, langsmith_values(ctx))
        # Only now that no workload names them: the secrets of a data store the config moved.
        for name in sorted(set(EVERY_STORE_SECRET) - {e["metadata"]["name"] for e in wanted}):
            if kube.get("external-secrets.io/v1", "ExternalSecret", name, NAMESPACE) is None:
                continue  # a look, not a delete: a re-apply writes nothing
            if self._delete_connection_secret(kube, name):
                ctx.progress(f"deleted ExternalSecret {name}: the data store it connected to moved")
                ctx.record(f"externalsecret/{name}", None)
        self._wait_for(ctx, lambda: not self._not_ready(kube), "LangSmith jobs and deployments", READY_SECONDS)
        return {"url": url(ctx), "hostname": hostname(ctx), "release": RELEASE, "namespace": NAMESPACE,
                "chart": release["chart"], "admin_email": admin_email(cfg), "releases": {RELEASE: release},
                "admin_password_parameter": cfg.ssm_prefix + "langsmith-admin-password"}

    @staticmethod
    def _wait_for(ctx, check, what: str, timeout: float) -> None:
        wait_until(check, what=what, expected_seconds=30, timeout_seconds=timeout, progress=ctx.progress)

    @staticmethod
    def _not_ready(kube) -> list[str]:
        """Jobs (migrations, auth bootstrap) not complete and deployments not available."""
        waiting = []
        for job in kube.list("batch/v1", "Job", NAMESPACE):
            conditions = {c["type"]: c["status"] for c in job.get("status", {}).get("conditions", [])}
            if conditions.get("Failed") == "True":
                raise StepError(f"job {job['metadata']['name']} failed; see `kubectl logs -n {NAMESPACE} "
                                f"job/{job['metadata']['name']}`, fix, and apply again")
            if conditions.get("Complete") != "True":
                waiting.append(f"job {job['metadata']['name']}")
        for deployment in kube.list("apps/v1", "Deployment", NAMESPACE):
            status = deployment.get("status", {})
            if status.get("availableReplicas", 0) < deployment["spec"].get("replicas", 1):
                waiting.append(f"deployment {deployment['metadata']['name']}")
        return waiting

    def verify(self, ctx) -> list[Finding]:
        try:
            kube, helm = ctx.cluster()
        except ClusterMissing:
            return [Finding("cluster", "not there yet", missing=True)]
        source = chart_source(ctx.config, RELEASE)
        found = helm.release(RELEASE, NAMESPACE)
        wanted = f"{source.chart_name}-{source.pinned_version}"
        if found is None:
            return [Finding(f"release {RELEASE}", "not installed", missing=True)]
        findings = []
        if found["status"] != "deployed" or found["chart"] != wanted:
            findings.append(Finding(f"release {RELEASE}", f"{found['status']} at {found['chart']}, config wants "
                                                          f"deployed at {wanted}"))
        findings += [Finding(f"release {RELEASE}", f"{item} not ready") for item in self._not_ready(kube)]
        ctx.fact(f"release {RELEASE} {found['status']} ({found['chart']}); LangSmith at {url(ctx)}")
        for external in connection_secrets(ctx):
            if kube.get("v1", "Secret", external["metadata"]["name"], NAMESPACE) is None:
                findings.append(Finding(f"secret {NAMESPACE}/{external['metadata']['name']}", "missing", missing=True))
        return findings

    def destroy(self, ctx) -> None:
        """LangGraph deployments (their custom resources, which the operator turns into pods)
        go before the release; then Ingresses, while the load balancer controller still runs."""
        try:
            kube, helm = ctx.cluster()
        except ClusterMissing:
            return
        for namespace in (NAMESPACE, AGENTS_NAMESPACE):
            for lgp in kube.list(LGP_API, LGP_KIND, namespace):
                kube.delete(LGP_API, LGP_KIND, lgp["metadata"]["name"], namespace)
            for ingress in kube.list("networking.k8s.io/v1", "Ingress", namespace):
                kube.delete("networking.k8s.io/v1", "Ingress", ingress["metadata"]["name"], namespace)
        uninstall_release(ctx, kube, helm, RELEASE, NAMESPACE)
        # The chart's StatefulSets (ClickHouse, in-cluster Postgres and Redis, the Insights and
        # Polly stores) leave their claims behind: persistentVolumeClaimRetentionPolicy defaults
        # to Retain, and each claim's EBS volume bills on until the claim goes.
        for claim in kube.list("v1", "PersistentVolumeClaim", NAMESPACE):
            kube.delete("v1", "PersistentVolumeClaim", claim["metadata"]["name"], NAMESPACE)
        for name in EVERY_STORE_SECRET:
            self._delete_connection_secret(kube, name)
        ctx.forget_all()

    @staticmethod
    def _delete_connection_secret(kube, name: str) -> bool:
        """The ExternalSecret and its Secret: the Secret's owner reference would have it
        garbage-collected, but only a moment later."""
        deleted = kube.delete("external-secrets.io/v1", "ExternalSecret", name, NAMESPACE)
        kube.delete("v1", "Secret", name, NAMESPACE)
        return deleted
