"""What serves traffic behind the ALB, and the binding that feeds the ALB's target group.

- alb (no gateway): the LangSmith frontend Service.
- nginx: ingress-nginx (ClusterIP), controller pods on 80.
- envoy: Envoy Gateway, GatewayClass `eg` with an EnvoyProxy that names its Service,
  Gateway `langsmith-gateway` accepting routes from all namespaces, proxy on 10080.
- istio: istio-base, istiod and the ingress gateway (ClusterIP, port 80), and an Istio
  Gateway `langsmith-gateway`.
With letsencrypt, a ClusterIssuer using Route 53 DNS-01 through cert-manager's IRSA role
(or the issuer named in cert_manager_issuer) and the certificate the gateway serves.

A TargetGroupBinding (target type ip) per target group registers the serving pods in the
load balancer's target groups (HTTP 80 behind an ALB; TCP 80 and 443 behind the Network
Load Balancer of the letsencrypt modes), so the provisioned load balancer is the one
that serves; bindings are deleted first on destroy, while the load balancer controller
still runs to deregister the targets.
"""

from __future__ import annotations

from provisioner.charts import chart_source
from provisioner.kube import ClusterMissing
from provisioner.waiting import wait_until

from ._releases import install_release, uninstall_releases
from .alb import TARGETS
from .base import Finding, Step, register
from .k8s_bootstrap import NAMESPACE

GATEWAY_NAME = "langsmith-gateway"
TLS_SECRET = "langsmith-tls"
LETSENCRYPT_ISSUER = "letsencrypt-prod"
BINDING = "langsmith-tgb"
SERVICE_PORTS = (80, 443)
# Installed in this order (istio: CRDs, control plane, gateway), uninstalled in reverse.
RELEASES = {"nginx": ["ingress-nginx"], "envoy": ["envoy-gateway"], "istio": ["istio-base", "istiod",
                                                                           "istio-ingressgateway"]}
REQUESTS = {"cpu": "100m", "memory": "128Mi"}


def release_values(cfg) -> dict[str, dict]:
    return {
        "ingress-nginx": {"controller": {"service": {"type": "ClusterIP"}, "resources": {"requests": REQUESTS},
                                         "ingressClassResource": {"name": "nginx", "default": True}}},
        "envoy-gateway": {"deployment": {"envoyGateway": {"resources": {"requests": {"cpu": "100m",
                                                                                    "memory": "256Mi"}}}}},
        "istio-base": {"defaultRevision": "default"},
        # istiod >= 1.24 reads its settings at the top level (`pilot.` is silently ignored).
        "istiod": {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}},
        "istio-ingressgateway": {"service": {"type": "ClusterIP"}, "resources": {"requests": REQUESTS},
                                 "labels": {"istio": "ingressgateway"}},
    }


def tls_namespace(gateway: str) -> str:
    """Where the gateway looks for its certificate secret."""
    return "istio-system" if gateway == "istio" else NAMESPACE


def gateway_objects(ctx) -> list[dict]:
    cfg = ctx.config
    gateway, tls = cfg.gateway, cfg["tls_certificate_source"] == "letsencrypt"
    objects: list[dict] = []
    if tls:
        issuer = cfg["cert_manager_issuer"] or LETSENCRYPT_ISSUER
        if not cfg["cert_manager_issuer"]:
            objects.append({
                "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": LETSENCRYPT_ISSUER},
                "spec": {"acme": {"server": "https://acme-v02.api.letsencrypt.org/directory",
                                  "email": cfg["letsencrypt_email"],
                                  "privateKeySecretRef": {"name": f"{LETSENCRYPT_ISSUER}-account"},
                                  "solvers": [{"dns01": {"route53": {
                                      "region": cfg["region"], "hostedZoneID": ctx.upstream("dns").get("zone_id")}}}]}}})
        objects.append({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                        "metadata": {"name": TLS_SECRET, "namespace": tls_namespace(gateway)},
                        "spec": {"secretName": TLS_SECRET, "dnsNames": [cfg["langsmith_domain"]],
                                 "issuerRef": {"name": issuer, "kind": "ClusterIssuer"}}})
    if gateway == "envoy":
        namespace, service, _ = TARGETS["envoy"]
        objects += [
            {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
             "metadata": {"name": "langsmith-proxy", "namespace": namespace},
             "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
                 "envoyService": {"name": service, "type": "ClusterIP"}}}}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "eg"},
             "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
                      "parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                        "name": "langsmith-proxy", "namespace": namespace}}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "metadata": {"name": GATEWAY_NAME, "namespace": NAMESPACE},
             "spec": {"gatewayClassName": "eg", "listeners": [
                 {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}},
                 *([{"name": "https", "protocol": "HTTPS", "port": 443, "hostname": cfg["langsmith_domain"],
                     "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": TLS_SECRET}]},
                     "allowedRoutes": {"namespaces": {"from": "All"}}}] if tls else [])]}}]
    elif gateway == "istio":
        servers = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"],
                    **({"tls": {"httpsRedirect": True}} if tls else {})}]
        if tls:
            servers.append({"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                            "hosts": [cfg["langsmith_domain"]],
                            "tls": {"mode": "SIMPLE", "credentialName": TLS_SECRET}})
        objects.append({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                        "metadata": {"name": GATEWAY_NAME, "namespace": "istio-system"},
                        "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}})
    return objects


def binding_name(service_port: int) -> str:
    return BINDING if service_port == 80 else f"{BINDING}-{service_port}"


def target_group_bindings(ctx) -> list[dict]:
    """One binding per target group the load balancer step made, on the matching Service port."""
    namespace, service, _ = TARGETS[ctx.config.gateway]
    return [{"apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
             "metadata": {"name": binding_name(int(port)), "namespace": namespace},
             "spec": {"serviceRef": {"name": service, "port": int(port)}, "targetType": "ip",
                      "targetGroupARN": arn}}
            for port, arn in sorted(ctx.upstream("alb").get("target_groups", {}).items())]


@register
class Ingress(Step):
    name = "ingress"
    requires = ("k8s_bootstrap", "alb", "dns")

    def create(self, ctx) -> dict:
        kube, helm = ctx.cluster()
        cfg = ctx.config
        values = release_values(cfg)
        listed = helm.all_releases() if RELEASES.get(cfg.gateway) else {}
        installed = {release: install_release(ctx, helm, release, values[release], listed)
                     for release in RELEASES.get(cfg.gateway, [])}
        for obj in gateway_objects(ctx):
            kube.apply(obj)
            ctx.record(f"{obj['kind'].lower()}/{obj['metadata']['name']}", obj["metadata"]["name"])
        namespace, service, _ = TARGETS[cfg.gateway]
        if kube.get("v1", "Namespace", namespace) is None:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        bindings = target_group_bindings(ctx)
        for binding in bindings:
            bind(ctx, kube, binding)
            ctx.record(f"targetgroupbinding/{binding['metadata']['name']}", f"{namespace}/{binding['metadata']['name']}")
        previous = ctx.state.outputs(self.name)
        if previous and (previous.get("gateway"), previous.get("tls", "none")) != (cfg.gateway,
                                                                                  cfg["tls_certificate_source"]):
            self._retire_previous_mode(ctx, kube, helm, gateway_objects(ctx) + bindings)
        return {"gateway": cfg.gateway, "tls": cfg["tls_certificate_source"], "releases": installed,
                "target_service": f"{namespace}/{service}"}

    def verify(self, ctx) -> list[Finding]:
        try:
            kube, helm = ctx.cluster()
        except ClusterMissing:
            return [Finding("cluster", "not there yet", missing=True)]
        findings = []
        for release in RELEASES.get(ctx.config.gateway, []):
            found = helm.release(release, chart_source(ctx.config, release).namespace)
            if found is None or found["status"] != "deployed":
                findings.append(Finding(f"release {release}", "not deployed" if found else "not installed",
                                        missing=found is None))
            else:
                ctx.fact(f"release {release} deployed ({found['chart']})")
        expected = gateway_objects(ctx) + target_group_bindings(ctx)
        for obj in expected:
            meta = obj["metadata"]
            if kube.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")) is None:
                findings.append(Finding(f"{obj['kind']} {meta['name']}", "missing", missing=True))
            else:
                ctx.fact(f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']} present".replace(" /", " "))
        return findings

    def destroy(self, ctx) -> None:
        try:
            kube, helm = ctx.cluster()
        except ClusterMissing:
            return
        for api, kind, name, namespace in every_object():
            kube.delete(api, kind, name, namespace)
        uninstall_releases(ctx, kube, helm, [r for releases in RELEASES.values() for r in reversed(releases)])
        ctx.forget_all()

    @staticmethod
    def _retire_previous_mode(ctx, kube, helm, wanted: list[dict]) -> None:
        """After a switch of gateway or TLS mode, once the new one serves: the objects and
        releases only the previous mode used go."""
        keep = {_key(obj) for obj in wanted}
        kept_ids = {f"{obj['kind'].lower()}/{obj['metadata']['name']}" for obj in wanted}
        for api, kind, name, namespace in every_object():
            if (api, kind, name, namespace) not in keep and kube.delete(api, kind, name, namespace):
                ctx.progress(f"deleted {kind} {name}: the previous mode's")
                if f"{kind.lower()}/{name}" not in kept_ids:
                    ctx.record(f"{kind.lower()}/{name}", None)
        retired = [r for gateway, releases in RELEASES.items() if gateway != ctx.config.gateway
                   for r in reversed(releases)]
        uninstall_releases(ctx, kube, helm, retired)
        for release in retired:
            ctx.record(f"release/{release}", None)


def _key(obj: dict) -> tuple:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")


def every_object() -> list[tuple]:
    """Every object this step may have made in any mode: (apiVersion, kind, name, namespace)."""
    bindings = [("elbv2.k8s.aws/v1beta1", "TargetGroupBinding", binding_name(port), namespace)
                for namespace, _, _ in TARGETS.values() for port in SERVICE_PORTS]
    return bindings + [
        ("gateway.networking.k8s.io/v1", "Gateway", GATEWAY_NAME, NAMESPACE),
        ("networking.istio.io/v1", "Gateway", GATEWAY_NAME, "istio-system"),
        ("gateway.networking.k8s.io/v1", "GatewayClass", "eg", None),
        ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy", "langsmith-proxy", TARGETS["envoy"][0]),
        ("cert-manager.io/v1", "Certificate", TLS_SECRET, NAMESPACE),
        ("cert-manager.io/v1", "Certificate", TLS_SECRET, "istio-system"),
        ("cert-manager.io/v1", "ClusterIssuer", LETSENCRYPT_ISSUER, None)]


def bind(ctx, kube, binding: dict) -> None:
    """Apply a TargetGroupBinding. The load balancer controller's webhook refuses to change
    a binding's target group ("TargetGroupBinding update may not change these fields:
    spec.targetGroupARN", aws-load-balancer-controller webhooks/elbv2
    targetgroupbinding_validator.go), so a binding to a replaced group is made anew."""
    meta = binding["metadata"]
    current = kube.get(binding["apiVersion"], binding["kind"], meta["name"], meta["namespace"])
    if current is not None and current["spec"].get("targetGroupARN") != binding["spec"]["targetGroupARN"]:
        ctx.progress(f"TargetGroupBinding {meta['name']} moves to a new target group: made anew")
        kube.delete(binding["apiVersion"], binding["kind"], meta["name"], meta["namespace"])
        wait_until(lambda: kube.get(binding["apiVersion"], binding["kind"], meta["name"], meta["namespace"]) is None,
                   what=f"TargetGroupBinding {meta['name']} to be deleted", expected_seconds=10,
                   timeout_seconds=300, progress=ctx.progress)
    kube.apply(binding)
