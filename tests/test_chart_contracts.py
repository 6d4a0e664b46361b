"""Contract tests: what the provisioner sends to the REAL upstream charts (../shared/charts),
for every ingress x TLS mode, the Deployments add-on, in-cluster Postgres/Redis and the split
dataplane. Each mode's values come from the step code; `helm template` renders the real
charts with them, and the tests check what a real cluster would do with the result.
"""

from __future__ import annotations

import base64
import copy
import json

import pytest

from provisioner.charts import DEFAULT_CHARTS
from provisioner.kube import resource_path
from steps import alb, ingress, k8s_bootstrap, langsmith, secrets, storage
from steps._iam import irsa_trust
from steps.eks import Eks
from steps.secrets import GENERATORS
from tests.chart_render import (BUCKET, CHARTS_DIR, LANGSMITH_ROLE, Recorder, Context, chart_file, containers,
                                chart_defaults, context, pod_specs, releases, render, unknown_keys)

DOMAIN = "langsmith.example.com"
ACM_ARN = "arn:aws:acm:us-west-2:123456789012:certificate/00000000-0000-0000-0000-000000000000"
LETSENCRYPT = {"tls_certificate_source": "letsencrypt", "langsmith_domain": DOMAIN,
               "letsencrypt_email": "platform@example.com"}
MODES = {
    "alb-none": {},
    "alb-acm": {"tls_certificate_source": "acm", "langsmith_domain": DOMAIN},
    "nginx-none": {"enable_nginx_ingress": True},
    "nginx-acm": {"enable_nginx_ingress": True, "tls_certificate_source": "acm", "acm_certificate_arn": ACM_ARN},
    "envoy-none": {"enable_envoy_gateway": True},
    "envoy-letsencrypt": {"enable_envoy_gateway": True, **LETSENCRYPT},
    "istio-none": {"enable_istio_gateway": True},
    "istio-letsencrypt": {"enable_istio_gateway": True, **LETSENCRYPT},
    "deployments-alb": {"enable_langsmith_deployments": True},
    "deployments-istio-letsencrypt": {"enable_istio_gateway": True, "enable_langsmith_deployments": True,
                                      **LETSENCRYPT},
    "in-cluster-data": {"postgres_source": "in-cluster", "redis_source": "in-cluster", "langsmith_sizing": "dev"},
    "split-dataplane-envoy": {"enable_envoy_gateway": True, "enable_langsmith_deployments": True,
                              "enable_split_dataplane": True, **LETSENCRYPT},
}
# The Kubernetes API groups a cluster serves without any chart (EKS 1.34).
BUILT_IN = {"v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "storage.k8s.io/v1", "apiregistration.k8s.io/v1",
            "rbac.authorization.k8s.io/v1", "policy/v1", "autoscaling/v2", "admissionregistration.k8s.io/v1",
            "apiextensions.k8s.io/v1", "scheduling.k8s.io/v1", "coordination.k8s.io/v1"}
# Secrets pods mount that a chart's own workload makes at run time (webhook certificates):
# (namespace, name) -> the rendered workload that writes it (keda-operator --cert-secret-name,
# ingress-nginx's admission-create hook --secret-name, Envoy Gateway's certgen hook, whose
# built-in name it is).
RUNTIME_SECRETS = {("keda", "kedaorg-certs"): "keda-operator",
                   ("ingress-nginx", "ingress-nginx-admission"): "ingress-nginx-admission-create",
                   ("envoy-gateway-system", "envoy-gateway"): "envoy-gateway-gateway-helm-certgen"}


@pytest.fixture(scope="module", autouse=True)
def real_charts():
    missing = [str(chart_file(r)) for r in DEFAULT_CHARTS if not chart_file(r).exists()]
    assert not missing, f"the real charts are expected in {CHARTS_DIR}: {missing}"


class Mode:
    """One config: the values each release gets, what the charts render, what we create."""

    def __init__(self, overrides: dict):
        self.ctx = context(overrides)
        self.cfg = self.ctx.config
        self.values = releases(self.ctx)
        self.rendered = {release: render(release, values) for release, values in self.values.items()}
        self.ours = (k8s_bootstrap._external_secrets(self.ctx) + langsmith.connection_secrets(self.ctx)
                     + ingress.gateway_objects(self.ctx) + ingress.target_group_bindings(self.ctx))

    def objects(self, kind: str | None = None) -> list[dict]:
        return [obj for objects in self.rendered.values() for obj in objects if kind in (None, obj["kind"])]

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return next((o for o in self.objects(kind) + self.ours if o["kind"] == kind and o["metadata"]["name"] == name
                     and namespace in (None, o["metadata"].get("namespace"))), None)

    def served(self) -> set[tuple[str, str]]:
        """(group/version, kind) of every version the charts' CRDs serve."""
        found = set()
        for crd in self.objects("CustomResourceDefinition"):
            spec = crd["spec"]
            found |= {(f"{spec['group']}/{v['name']}", spec["names"]["kind"]) for v in spec["versions"] if v["served"]}
        return found


_MODES: dict[str, Mode] = {}


def mode(name: str) -> Mode:
    if name not in _MODES:
        _MODES[name] = Mode(MODES[name])
    return _MODES[name]


@pytest.fixture(params=list(MODES), scope="module")
def deployed(request) -> Mode:
    return mode(request.param)


def test_every_release_renders_and_every_value_we_set_is_a_chart_key(deployed):
    """(a) and (b): the chart accepts our values (its validate.yaml and schema), and none is
    silently ignored."""
    assert set(deployed.rendered) >= {"aws-load-balancer-controller", "keda", "external-secrets", "langsmith"}
    ignored = {release: unknown_keys(release, values) for release, values in deployed.values.items()}
    assert {release: keys for release, keys in ignored.items() if keys} == {}


def test_every_secret_key_a_workload_needs_is_written(deployed):
    """(c) A pod whose secretKeyRef, envFrom or secret volume (not optional) names a missing
    Secret or key never starts, and `helm --wait` times out."""
    written: dict[tuple[str, str], set] = {}
    for secret in deployed.objects("Secret"):
        written[(secret["metadata"]["namespace"], secret["metadata"]["name"])] = {
            *(secret.get("data") or {}), *(secret.get("stringData") or {})}
    for external in (o for o in deployed.ours if o["kind"] == "ExternalSecret"):
        target = external["spec"]["target"]
        template = target.get("template", {}).get("data")  # a template replaces the fetched keys
        keys = set(template) if template else {item["secretKey"] for item in external["spec"].get("data", [])}
        written[(external["metadata"]["namespace"], target["name"])] = keys
    names = {(w["metadata"].get("namespace"), w["metadata"]["name"]) for w in deployed.objects()}

    def check(workload: str, namespace: str, name: str, keys) -> None:
        if (namespace, name) in RUNTIME_SECRETS and (namespace, RUNTIME_SECRETS[(namespace, name)]) in names:
            return
        absent = [key for key in keys if key not in written.get((namespace, name), ())]
        if (namespace, name) not in written or absent:
            missing.append(f"{workload}: {namespace}/{name} {absent}")
    missing: list[str] = []
    for workload in deployed.objects():
        namespace, name = workload["metadata"].get("namespace"), workload["metadata"]["name"]
        for pod in pod_specs(workload):
            for volume in pod.get("volumes") or []:
                source = volume.get("secret")
                if source and not source.get("optional"):
                    check(name, namespace, source["secretName"], [item["key"] for item in source.get("items", [])])
            for container in containers(pod):
                for env in container.get("env") or []:
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        check(name, namespace, ref["name"], [ref["key"]])
                for source in container.get("envFrom") or []:
                    ref = source.get("secretRef")
                    if ref and not ref.get("optional"):
                        check(name, namespace, ref["name"], [])
    assert missing == []


def test_config_secret_projects_every_generated_key_and_the_fernet_keys_are_fernet_keys():
    """(c, the other half) langsmith-config holds the insights and polly keys, generated as
    Fernet keys (32 url-safe base64 bytes) and never rotated."""
    external = next(o for o in mode("alb-none").ours if o["metadata"]["name"] == k8s_bootstrap.CONFIG_SECRET)
    keys = {item["secretKey"]: item["remoteRef"]["key"] for item in external["spec"]["data"]}
    assert keys["insights_encryption_key"].endswith("/langsmith-insights-encryption-key")
    assert keys["polly_encryption_key"].endswith("/langsmith-polly-encryption-key")
    for leaf in ("langsmith-insights-encryption-key", "langsmith-polly-encryption-key"):
        key = secrets.GENERATORS[leaf]()
        assert len(base64.urlsafe_b64decode(key)) == 32 and base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(key)).decode() == key


def _service_port(deployed: Mode, namespace: str, name: str, port: int) -> dict | None:
    service = deployed.find("Service", name, namespace)
    return next((p for p in (service or {}).get("spec", {}).get("ports", []) if p["port"] == port), None)


def _container_port(deployed: Mode, namespace: str, service_name: str, target) -> int | None:
    """The pod port a Service's targetPort reaches: a number as it is, a name through the
    container ports of the workload its selector matches."""
    if isinstance(target, int):
        return target
    service = deployed.find("Service", service_name, namespace)
    selector = service["spec"].get("selector", {})
    for workload in deployed.objects():
        labels = workload.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        if workload["metadata"].get("namespace") == namespace and selector and \
                selector.items() <= labels.items():
            for container in containers(pod_specs(workload)[0]):
                for port in container.get("ports", []):
                    if target in (port.get("name"), port["containerPort"]):
                        return port["containerPort"]
    return None


def test_the_load_balancer_targets_services_and_ports_the_charts_render(deployed):
    """(d) Each TargetGroupBinding's Service and port exist, and reach the pod port the load
    balancer's target group and security group were made for."""
    bindings = [o for o in deployed.ours if o["kind"] == "TargetGroupBinding"]
    namespace, service, pod_ports = alb.TARGETS[deployed.cfg.gateway]
    assert sorted(b["spec"]["serviceRef"]["port"] for b in bindings) == sorted(
        int(port) for port in deployed.ctx.upstream("alb")["target_groups"])
    for binding in bindings:
        ref = binding["spec"]["serviceRef"]
        assert (binding["metadata"]["namespace"], ref["name"]) == (namespace, service)
        pod_port = pod_ports[ref["port"]]
        if deployed.cfg.gateway == "envoy":
            # Envoy Gateway makes the proxy Service at run time, as the EnvoyProxy names it, with one port
            # per Gateway listener; a listener below 1024 is served by the proxy on port + 10000.
            proxy = deployed.find("EnvoyProxy", "langsmith-proxy", namespace)
            assert proxy["spec"]["provider"]["kubernetes"]["envoyService"]["name"] == service
            listeners = deployed.find("Gateway", ingress.GATEWAY_NAME, ingress.NAMESPACE)["spec"]["listeners"]
            assert ref["port"] in [listener["port"] for listener in listeners] and pod_port == ref["port"] + 10000
            continue
        port = _service_port(deployed, namespace, service, ref["port"])
        assert port is not None, f"Service {namespace}/{service} has no port {ref['port']}"
        assert _container_port(deployed, namespace, service, port.get("targetPort", ref["port"])) == pod_port


def test_routes_and_gateways_point_at_what_exists(deployed):
    """(d) The chart's HTTPRoute / VirtualService / Ingress reach our Gateway and its own
    frontend Service; our Istio Gateway selects the ingress gateway's pods; TLS listeners
    name the Secret our Certificate writes."""
    routes = deployed.objects("HTTPRoute") + deployed.objects("VirtualService") + deployed.objects("Ingress")
    assert len(routes) == (0 if deployed.cfg.gateway == "alb" else 1)
    for route in deployed.objects("HTTPRoute"):
        for parent in route["spec"]["parentRefs"]:
            assert deployed.find("Gateway", parent["name"], parent.get("namespace", route["metadata"]["namespace"]))
        for rule in route["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                assert _service_port(deployed, route["metadata"]["namespace"], backend["name"], backend["port"])
    for service in deployed.objects("VirtualService"):
        for gateway in service["spec"]["gateways"]:
            namespace, name = gateway.split("/")
            assert deployed.find("Gateway", name, namespace)["apiVersion"].startswith("networking.istio.io/")
        for route in service["spec"]["http"]:
            for destination in route["route"]:
                host, namespace = destination["destination"]["host"].split(".")[:2]
                assert _service_port(deployed, namespace, host, destination["destination"]["port"]["number"])
    for route in deployed.objects("Ingress"):
        assert route["spec"]["ingressClassName"] == "nginx"
        assert deployed.find("IngressClass", "nginx"), "no IngressClass nginx: nothing would serve the Ingress"
        for rule in route["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert _service_port(deployed, route["metadata"]["namespace"], backend["name"], backend["port"]["number"])
    for gateway in (o for o in deployed.ours if o["apiVersion"].startswith("gateway.networking.k8s.io/")
                    and o["kind"] == "Gateway"):
        gateway_class = deployed.find("GatewayClass", gateway["spec"]["gatewayClassName"])
        parameters = gateway_class["spec"]["parametersRef"]
        assert deployed.find(parameters["kind"], parameters["name"], parameters["namespace"])
    istio = deployed.find("Gateway", ingress.GATEWAY_NAME, "istio-system")
    if istio:
        selector = istio["spec"]["selector"]
        pods = [w for w in deployed.rendered["istio-ingressgateway"] if w["kind"] == "Deployment"]
        assert any(selector.items() <= w["spec"]["template"]["metadata"]["labels"].items() for w in pods)
    certificates = {o["spec"]["secretName"] for o in deployed.ours if o["kind"] == "Certificate"}
    for gateway in (o for o in deployed.ours if o["kind"] == "Gateway"):
        tls_names = [ref["name"] for listener in gateway["spec"].get("listeners", [])
                     for ref in listener.get("tls", {}).get("certificateRefs", [])]
        tls_names += [server["tls"]["credentialName"] for server in gateway["spec"].get("servers", [])
                      if server.get("tls", {}).get("credentialName")]
        assert set(tls_names) <= certificates


def test_no_load_balancer_service_anywhere(deployed):
    """(e) Our ALB is the only load balancer: a LoadBalancer Service makes the controller
    build an NLB per deployment beside it."""
    balancers = [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in deployed.objects("Service")
                 if s["spec"].get("type") == "LoadBalancer"]
    assert balancers == []
    for proxy in (o for o in deployed.ours if o["kind"] == "EnvoyProxy"):
        assert proxy["spec"]["provider"]["kubernetes"]["envoyService"]["type"] == "ClusterIP"


def _subjects(trust_policy: str) -> set[tuple[str, str]]:
    """The (namespace, service account) pairs an IRSA trust policy lets assume the role."""
    [statement] = json.loads(trust_policy)["Statement"]
    [subjects] = [v for k, v in statement["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    return {tuple(subject.split(":")[2:]) for subject in subjects}


def _trusted(deployed: Mode) -> dict[str, set[tuple[str, str]]]:
    """role ARN -> the (namespace, service account) pairs its trust policy (the steps' own) names."""
    eks = deployed.ctx.upstream("eks")
    trusted = {eks["irsa_roles"][name]: _subjects(irsa_trust(eks, namespace, [account]))
               for name, (namespace, account, _, _) in Eks._irsa_roles(deployed.ctx).items()}
    trusted[LANGSMITH_ROLE] = _subjects(storage.langsmith_trust(eks))
    return trusted


def test_the_langsmith_role_trust_fits_iam_limits():
    """IAM refuses a role trust policy over 2,048 characters, its default quota ("IAM and AWS STS
    quotas", docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas); IAM does not count
    white space, so the length of our serialized document is an upper bound."""
    document = storage.langsmith_trust(mode("alb-none").ctx.upstream("eks"))
    assert len(document) <= 2048 and len(_subjects(document)) == len(langsmith.S3_WORKLOADS)


def test_every_workload_given_the_bucket_runs_under_a_trusted_irsa_account(deployed):
    """(f) A pod that writes traces to S3 needs the role through its service account's IRSA
    annotation, and the role must trust exactly that account."""
    given = []
    for workload in deployed.rendered["langsmith"]:
        for pod in pod_specs(workload):
            if any(env.get("value") == BUCKET for c in containers(pod) for env in c.get("env", [])):
                given.append((workload["metadata"]["namespace"], pod.get("serviceAccountName", "default")))
    assert len({account for _, account in given}) >= 6
    trusted = _trusted(deployed)
    for namespace, account in given:
        sa = deployed.find("ServiceAccount", account, namespace)
        role = ((sa or {}).get("metadata", {}).get("annotations") or {}).get(k8s_bootstrap.IRSA_ANNOTATION)
        assert role == LANGSMITH_ROLE, f"{namespace}/{account} has no IRSA annotation for the bucket"
        assert (namespace, account) in trusted[role]
    for sa in deployed.objects("ServiceAccount"):  # every annotated account, in every release
        role = (sa["metadata"].get("annotations") or {}).get(k8s_bootstrap.IRSA_ANNOTATION)
        if role:
            assert (sa["metadata"]["namespace"], sa["metadata"]["name"]) in trusted[role]


def _in_cluster_api_calls(deployed: Mode) -> set[tuple[str, str]]:
    """(apiVersion, kind) of everything the steps create, read or delete in the cluster."""
    recorder = Recorder()
    ctx = Context(deployed.cfg, recorder)
    for step in (ingress.Ingress(), langsmith.Langsmith(), k8s_bootstrap.K8sBootstrap()):
        step.destroy(ctx)
    langsmith.Langsmith._not_ready(recorder)
    return recorder.kinds | {(o["apiVersion"], o["kind"]) for o in deployed.ours}


def test_every_api_group_and_version_we_use_is_served(deployed):
    """(g) What we create must be served by the CRDs this mode installs; what we read or
    delete (destroy looks for every mode's objects) by the CRDs some mode installs; and every
    custom resource a chart renders by a CRD installed with it."""
    served = deployed.served()
    created = {(o["apiVersion"], o["kind"]) for o in deployed.ours}
    assert {c for c in created if c[0] not in BUILT_IN} - served == set()
    everywhere = set().union(*(mode(name).served() for name in ("envoy-letsencrypt", "istio-letsencrypt",
                                                                "deployments-alb")))
    assert {c for c in _in_cluster_api_calls(deployed) if c[0] not in BUILT_IN} - everywhere == set()
    rendered = {(o["apiVersion"], o["kind"]) for o in deployed.objects()}
    assert {c for c in rendered if c[0] not in BUILT_IN} - served == set()


def test_the_rest_paths_we_call_are_the_crds_plural_and_scope():
    """Our client builds each custom resource's path from its kind; it must be the CRD's plural
    and scope, or every call 404s (reads and deletes would then silently find nothing)."""
    crds = {}
    for name in MODES:
        for crd in mode(name).objects("CustomResourceDefinition"):
            crds[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = crd["spec"]
    used = set().union(*(_in_cluster_api_calls(mode(name)) for name in MODES))
    checked = 0
    for api_version, kind in used:
        spec = crds.get((api_version.split("/")[0], kind))
        if api_version in BUILT_IN or spec is None:
            continue
        path = resource_path(api_version, kind, "ns", "x")
        assert path.endswith(f"/{spec['names']['plural']}/x"), path
        assert ("/namespaces/ns/" in path) == (spec["scope"] == "Namespaced"), path
        checked += 1
    assert checked >= 8


def test_keda_registers_the_metrics_apiservice_destroy_removes():
    names = [o["metadata"]["name"] for o in mode("alb-none").rendered["keda"] if o["kind"] == "APIService"]
    assert k8s_bootstrap.KEDA_APISERVICE in names


def test_queues_scale_with_keda_only_and_the_spec_replica_bounds():
    """KEDA on queue and ingest-queue (the spec), with the bounds we asked for; HPAs elsewhere."""
    rendered = mode("alb-none").rendered["langsmith"]
    scaled = {o["spec"]["scaleTargetRef"]["name"]: (o["spec"]["minReplicaCount"], o["spec"]["maxReplicaCount"])
              for o in rendered if o["kind"] == "ScaledObject"}
    assert scaled == {"langsmith-queue": (3, 10), "langsmith-ingest-queue": (3, 10)}
    hpas = {o["spec"]["scaleTargetRef"]["name"]: (o["spec"]["minReplicas"], o["spec"]["maxReplicas"])
            for o in rendered if o["kind"] == "HorizontalPodAutoscaler"}
    assert hpas["langsmith-backend"] == (3, 10) and "langsmith-queue" not in hpas


def _env(rendered: list[dict], workload: str) -> dict:
    found = next(o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] == workload)
    return {e["name"]: e.get("value") for c in containers(pod_specs(found)[0]) for e in c.get("env", [])}


@pytest.mark.parametrize("name, scheme, tls", [("alb-none", "http", "false"), ("deployments-alb", "http", "false"),
                                               ("deployments-istio-letsencrypt", "https", "true")])
def test_public_urls_carry_the_scheme_the_mode_serves(name, scheme, tls):
    """config.hostname is used verbatim for the public endpoints; without TLS nothing says https."""
    deployed = mode(name)
    host = langsmith.hostname(deployed.ctx)
    config_maps = {k: v for o in deployed.rendered["langsmith"] if o["kind"] == "ConfigMap"
                   for k, v in (o.get("data") or {}).items()}
    urls = [v for v in config_maps.values() if isinstance(v, str) and host in v and "://" in v]
    assert urls and all(v.startswith(f"{scheme}://") for v in urls)
    if deployed.cfg["enable_langsmith_deployments"]:
        assert _env(deployed.rendered["langsmith"], "langsmith-operator")["TLS_ENABLED"] == tls


def test_split_dataplane_lets_the_operator_work_in_the_agents_namespace():
    rendered = mode("split-dataplane-envoy").rendered["langsmith"]
    assert _env(rendered, "langsmith-operator")["WATCH_NAMESPACE"] == "langsmith,langsmith-agents"
    roles = {o["metadata"]["namespace"] for o in rendered if o["kind"] == "Role" and
             o["metadata"]["name"] == "langsmith-operator"}
    assert roles == {"langsmith", "langsmith-agents"}


def test_deployments_without_a_gateway_route_agents_through_nginx_behind_our_alb():
    """The operator adds each agent to the chart's shared Ingress; ingress-nginx serves it behind
    our ALB, so no controller-made load balancer appears."""
    deployed = mode("deployments-alb")
    assert deployed.cfg.gateway == "nginx" and "ingress-nginx" in deployed.rendered
    assert _env(deployed.rendered["langsmith"], "langsmith-operator")["SHARED_INGRESS_NAME"] == "langsmith-ingress"
    assert deployed.find("Ingress", "langsmith-ingress", "langsmith")["spec"]["ingressClassName"] == "nginx"


def test_metrics_server_gets_each_argument_once():
    rendered = mode("alb-none").rendered["metrics-server"]
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    args = [a for c in containers(pod_specs(deployment)[0]) for a in c.get("args", [])]
    flags = [a.split("=")[0] for a in args]
    assert len(flags) == len(set(flags)) and "--kubelet-preferred-address-types=InternalIP" in args


def test_istio_charts_are_pinned_together():
    versions = {DEFAULT_CHARTS[r].version for r in ingress.RELEASES["istio"]}
    assert len(versions) == 1 and all(chart_file(r).exists() for r in ingress.RELEASES["istio"])


def _unknown_fields(value, schema: dict, path: str) -> list[str]:
    """Fields of a custom resource its CRD's structural schema does not declare: the API
    server prunes them silently."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(value, (dict, list)):
        return []
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in _unknown_fields(item, schema.get("items", {}), f"{path}[{i}]")]
    props, extra = schema.get("properties"), schema.get("additionalProperties")
    if props is None:
        return _unknown_fields_in_map(value, extra, path) if isinstance(extra, dict) else []
    found = []
    for key, item in value.items():
        if key in props:
            found += _unknown_fields(item, props[key], f"{path}.{key}")
        elif not extra:
            found.append(f"{path}.{key}")
    return found


def _unknown_fields_in_map(value: dict, schema: dict, path: str) -> list[str]:
    return [f for key, item in value.items() for f in _unknown_fields(item, schema, f"{path}.{key}")]


def test_every_field_of_the_custom_resources_we_create_is_in_the_crd_schema(deployed):
    schemas = {}
    for crd in deployed.objects("CustomResourceDefinition"):
        spec = crd["spec"]
        for version in spec["versions"]:
            schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = \
                version.get("schema", {}).get("openAPIV3Schema", {})
    unknown = []
    for obj in deployed.ours:
        schema = schemas.get((obj["apiVersion"], obj["kind"]))
        if schema:
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            unknown += _unknown_fields(body, schema, obj["kind"])
    assert unknown == []


@pytest.mark.parametrize("name", ["alb-none", "in-cluster-data"])
def test_our_store_secrets_hold_what_the_charts_own_would_but_with_our_password(name):
    """Each data store's Secret of ours against the one the real chart renders when told the
    same password instead of our Secret's name: same keys, same values (the external Postgres
    URL adds sslmode=require). So no store runs with a chart default password, and every
    URL has the form the chart's readers expect (no scheme on LangSmith's Postgres URL)."""
    deployed, password = mode(name), "Generated_pass-word0123456789abc"
    ours_rendered = {s["metadata"]["name"] for s in render("langsmith", deployed.values["langsmith"])
                     if s["kind"] == "Secret"}
    stores = langsmith.store_secrets(deployed.ctx)
    assert {store.parameter for store in stores} <= set(GENERATORS)
    for store in stores:
        if store.values_path == ("redis",):
            continue  # the chart copies an external Redis URL verbatim: nothing to compare
        values = copy.deepcopy(deployed.values["langsmith"])
        node = values
        for key in store.values_path:
            node = node[key]
        assert node["external"].pop("existingSecretName") == store.name
        node["external"]["password"] = password
        if node["external"].get("enabled"):  # RDS: the chart builds the URL from its parts
            pg = deployed.ctx.upstream("postgres")
            node["external"].update(host=pg["address"], port=str(pg["port"]), user=pg["username"],
                                    database=pg["database"])
        [theirs] = [s for s in render("langsmith", values)
                    if s["kind"] == "Secret" and s["metadata"]["name"] not in ours_rendered]
        theirs = {key: base64.b64decode(value).decode() for key, value in theirs["data"].items()}
        ours = {key: value.replace(langsmith.CREDENTIAL, password).removesuffix("?sslmode=require")
                for key, value in store.data.items()}
        assert ours == theirs, store.name


def test_no_store_the_chart_runs_keeps_a_default_password(deployed):
    """Every password the langsmith chart's values.yaml defaults (`*.external.password`) that
    still reaches a Secret the chart renders is a store running with a published password."""
    defaults = set()

    def collect(node):
        if isinstance(node, dict):
            password = node.get("external", {}).get("password") if isinstance(node.get("external"), dict) else None
            if password:
                defaults.add(password)
            for value in node.values():
                collect(value)
    collect(chart_defaults("langsmith")[0])
    assert defaults >= {"postgres", "password"}
    leaked = [(secret["metadata"]["name"], key) for secret in deployed.rendered.get("langsmith", [])
              if secret["kind"] == "Secret" for key, value in (secret.get("data") or {}).items()
              if any(base64.b64decode(value).decode() == d or f":{d}@" in base64.b64decode(value).decode()
                     for d in defaults)]
    assert leaked == []
