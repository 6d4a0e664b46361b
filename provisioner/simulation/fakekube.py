"""A simulated Kubernetes API server for the tests and the sandbox: a test double.

No kube-apiserver can run on our build machines, so this in-memory object store sits
behind the real REST paths. The product's kubernetes client and the real helm binary
talk to it over HTTP exactly as they talk to EKS. It is never used on the real path.

What it does, and what it only pretends:
- discovery (/version, /api, /apis, per-group resource lists, an empty /openapi/v2),
  CRUD with label and name selectors, merge-style PATCH (strategic merge and apply
  patches are treated as JSON merge), resourceVersion conflicts on PUT, 404/409/403
  Status errors; protobuf request bodies for Secret, Namespace and ConfigMap, which
  helm's Go client sends.
- toy controllers: Deployments, StatefulSets, DaemonSets and Jobs become ready at once
  (a Deployment gets its owned ReplicaSet, which helm's --wait looks for); a deleted
  Namespace is Terminating until its contents are gone, and stays Terminating with
  NamespaceDeletionDiscoveryFailure while any APIService is unavailable (an APIService
  is unavailable when its backing Service does not exist: the stale KEDA metrics
  APIService problem); dependents follow their owners; an ExternalSecret is filled
  from a resolver the caller supplies (standing in for the External Secrets operator).
- no admission, RBAC, schema validation, watch, pods or real controllers.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short: tuple[str, ...] = ()


KINDS = [
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",)), Kind("", "v1", "Node", "nodes", False, ("no",)),
    Kind("", "v1", "Secret", "secrets"), Kind("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",)), Kind("", "v1", "Service", "services", short=("svc",)),
    Kind("", "v1", "Pod", "pods", short=("po",)), Kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Kind("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",)),
    Kind("", "v1", "Endpoints", "endpoints"), Kind("", "v1", "Event", "events"),
    Kind("apps", "v1", "Deployment", "deployments", short=("deploy",)), Kind("apps", "v1", "ReplicaSet", "replicasets"),
    Kind("apps", "v1", "StatefulSet", "statefulsets"), Kind("apps", "v1", "DaemonSet", "daemonsets"),
    Kind("batch", "v1", "Job", "jobs"),
    Kind("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",)),
    Kind("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Kind("apiregistration.k8s.io", "v1", "APIService", "apiservices", False),
    Kind("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, ("crd",)),
    Kind("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", False),
    Kind("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
         False),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",)),
    Kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short=("hpa",)),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", short=("ing",)),
    Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    Kind("external-secrets.io", "v1", "ClusterSecretStore", "clustersecretstores", False),
    Kind("external-secrets.io", "v1", "ExternalSecret", "externalsecrets", short=("es",)),
    Kind("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers", False),
    Kind("cert-manager.io", "v1", "Certificate", "certificates"),
    Kind("gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses", False),
    Kind("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
    Kind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
    Kind("gateway.envoyproxy.io", "v1alpha1", "EnvoyProxy", "envoyproxies"),
    Kind("networking.istio.io", "v1", "Gateway", "gateways"),
    Kind("networking.istio.io", "v1", "VirtualService", "virtualservices"),
    Kind("elbv2.k8s.aws", "v1beta1", "TargetGroupBinding", "targetgroupbindings"),
    Kind("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
    Kind("langchain.com", "v1alpha1", "LangGraphPlatform", "lgps"),
]
STANDIN_CHART = str(Path(__file__).parent / "standin_charts" / "standin")
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
READY_AT_ONCE = {"deployments", "statefulsets", "daemonsets", "jobs"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": self.message,
                "reason": self.reason, "code": self.code}


# --- protobuf: just enough of the wire format to read Secret, Namespace and ConfigMap ---

def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes):
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at:at + size], at + size
        elif wire == 1:
            value, at = data[at:at + 8], at + 8
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _map_entry(data: bytes) -> tuple[str, bytes]:
    entry = dict(_fields(data))
    return entry.get(1, b"").decode(), entry.get(2, b"")


def _object_meta(data: bytes) -> dict:
    meta: dict = {}
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for number, value in _fields(data):
        if number in names:
            meta[names[number]] = value.decode()
        elif number in (11, 12):
            key, item = _map_entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = item.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(value.decode())
    return meta


def decode_protobuf(body: bytes) -> dict:
    """The 'k8s\\0' envelope (runtime.Unknown) around a Secret, Namespace or ConfigMap."""
    if body[:4] != b"k8s\x00":
        raise ValueError("not a Kubernetes protobuf body")
    envelope = dict(_fields(body[4:]))
    type_meta = dict(_fields(envelope.get(1, b"")))
    api_version, kind = type_meta.get(1, b"v1").decode(), type_meta.get(2, b"").decode()
    obj: dict = {"apiVersion": api_version, "kind": kind}
    for number, value in _fields(envelope.get(2, b"")):
        if number == 1:
            obj["metadata"] = _object_meta(value)
        elif kind == "Secret" and number == 2:
            key, item = _map_entry(value)
            obj.setdefault("data", {})[key] = base64.b64encode(item).decode()
        elif kind == "Secret" and number == 3:
            obj["type"] = value.decode()
        elif kind == "ConfigMap" and number == 2:
            key, item = _map_entry(value)
            obj.setdefault("data", {})[key] = item.decode()
    return obj


# --- the store and its toy controllers ---

class Cluster:
    """Objects keyed by (group, plural, namespace, name), plus the toy controllers."""

    def __init__(self, external_secret_resolver=None, target_registrar=None):
        self.objects: dict[tuple[str, str, str, str], dict] = {}
        self.register_targets = target_registrar  # (target group ARN, [ip]) -> None: the toy LB controller
        self.registered: dict[str, list[str]] = {}
        self.lock = threading.RLock()
        self.version = 0
        self.requests: list[tuple[str, str]] = []
        self.resolve_external = external_secret_resolver
        self.hold_readiness = False  # tests: workloads never become ready (helm --wait hangs)

    @property
    def mutations(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.requests if method in MUTATING]

    def _stamp(self, obj: dict) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def get(self, kind: Kind, namespace: str, name: str) -> dict:
        found = self.objects.get((kind.group, kind.plural, namespace, name))
        if found is None:
            what = kind.plural if not kind.group else f"{kind.plural}.{kind.group}"
            raise ApiError(404, "NotFound", f'{what} "{name}" not found')
        return found

    def find(self, group: str, plural: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((group, plural, namespace, name))

    def items(self, group: str, plural: str, namespace: str | None = None) -> list[dict]:
        return [obj for (g, p, ns, _), obj in sorted(self.objects.items())
                if g == group and p == plural and (namespace is None or ns == namespace)]

    def create(self, kind: Kind, namespace: str, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if kind.namespaced:
            space = self.objects.get(("", "namespaces", "", namespace))
            if space is None:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            if space["status"].get("phase") == "Terminating":
                raise ApiError(403, "Forbidden", f"unable to create new content in namespace {namespace} "
                               "because it is being terminated")
            meta["namespace"] = namespace
        key = (kind.group, kind.plural, namespace if kind.namespaced else "", name)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{name}" already exists')
        obj["apiVersion"] = f"{kind.group}/{kind.version}" if kind.group else kind.version
        obj["kind"] = kind.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if kind.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        self._stamp(obj)
        self.objects[key] = obj
        self._react(kind, obj)
        return obj

    def replace(self, kind: Kind, namespace: str, name: str, obj: dict) -> dict:
        current = self.get(kind, namespace if kind.namespaced else "", name)
        wanted = obj.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "{name}": '
                           "the object has been modified; please apply your changes to the latest version")
        merged = copy.deepcopy(obj)
        meta = merged.setdefault("metadata", {})
        for keep in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
            if keep in current["metadata"]:
                meta[keep] = current["metadata"][keep]
        meta["name"] = name
        merged["apiVersion"], merged["kind"] = current["apiVersion"], current["kind"]
        spec_changed = merged.get("spec") != current.get("spec")
        meta["generation"] = current["metadata"]["generation"] + (1 if spec_changed else 0)
        if "status" not in merged and "status" in current:
            merged["status"] = current["status"]
        self._stamp(merged)
        self.objects[(kind.group, kind.plural, namespace if kind.namespaced else "", name)] = merged
        self._react(kind, merged)
        self._finish_if_released(kind, merged)
        return merged

    def patch(self, kind: Kind, namespace: str, name: str, patch) -> dict:
        current = copy.deepcopy(self.get(kind, namespace if kind.namespaced else "", name))
        if isinstance(patch, list):  # JSON patch: the few operations tools send
            for op in patch:
                parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
                target = current
                for part in parts[:-1]:
                    target = target.setdefault(part, {})
                if op["op"] == "remove":
                    target.pop(parts[-1], None)
                else:
                    target[parts[-1]] = op["value"]
        else:
            _merge(current, patch)
        current["metadata"].pop("resourceVersion", None)
        return self.replace(kind, namespace, name, current)

    def delete(self, kind: Kind, namespace: str, name: str) -> dict:
        namespace = namespace if kind.namespaced else ""
        obj = self.get(kind, namespace, name)
        if kind.plural == "namespaces":
            obj["status"]["phase"] = "Terminating"
            obj["metadata"].setdefault("deletionTimestamp", _now())
            self._stamp(obj)
            self.settle()
            return obj
        if obj["metadata"].get("finalizers"):
            obj["metadata"].setdefault("deletionTimestamp", _now())
            self._stamp(obj)
            return obj
        self._remove((kind.group, kind.plural, namespace, name))
        return obj

    def _remove(self, key) -> None:
        gone = self.objects.pop(key, None)
        if gone is None:
            return
        uid = gone["metadata"]["uid"]
        for other_key, other in list(self.objects.items()):  # garbage collection of dependents
            if any(ref.get("uid") == uid for ref in other["metadata"].get("ownerReferences", [])):
                self._remove(other_key)

    def _finish_if_released(self, kind: Kind, obj: dict) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and kind.plural != "namespaces":
            self._remove((kind.group, kind.plural, meta.get("namespace", "") if kind.namespaced else "",
                          meta["name"]))

    def unavailable_apiservices(self) -> list[str]:
        broken = []
        for service in self.items("apiregistration.k8s.io", "apiservices"):
            backend = service.get("spec", {}).get("service")
            if backend and self.find("", "services", backend.get("namespace", ""), backend.get("name", "")) is None:
                broken.append(service["metadata"]["name"])
        return broken

    def settle(self) -> None:
        """Runs after every request: the operator restores an ExternalSecret's target secret
        when it goes missing, the load balancer controller keeps target groups in step with
        their bindings, and deleted namespaces finalize."""
        self._sync_target_groups()
        if self.resolve_external:
            for external in self.items("external-secrets.io", "externalsecrets"):
                target = external.get("spec", {}).get("target", {}).get("name", external["metadata"]["name"])
                if self.find("", "secrets", external["metadata"]["namespace"], target) is None:
                    self._fill_external_secret(external)
        broken = self.unavailable_apiservices()
        for space in self.items("", "namespaces"):
            if space["status"].get("phase") != "Terminating":
                continue
            name = space["metadata"]["name"]
            if broken:
                space["status"]["conditions"] = [{
                    "type": "NamespaceDeletionDiscoveryFailure", "status": "True",
                    "reason": "DiscoveryFailed",
                    "message": f"Discovery failed for some groups: unavailable APIServices {', '.join(broken)}"}]
                continue
            contents = [key for key in self.objects if key[2] == name and key[1] != "namespaces"]
            for key in contents:
                obj = self.objects.get(key)
                if obj is None:
                    continue  # collected with its owner
                if obj["metadata"].get("finalizers"):
                    obj["metadata"].setdefault("deletionTimestamp", _now())
                else:
                    self._remove(key)
            if not [key for key in self.objects if key[2] == name and key[1] != "namespaces"]:
                self.objects.pop(("", "namespaces", "", name), None)
            else:
                space["status"]["conditions"] = [{"type": "NamespaceFinalizersRemaining", "status": "True",
                                                  "message": "Some content in the namespace has finalizers"}]

    def _sync_target_groups(self) -> None:
        """The toy load balancer controller: one target (the stand-in's single replica) per
        TargetGroupBinding, in its target group; none once the binding is gone."""
        if not self.register_targets:
            return
        wanted = {b["spec"]["targetGroupARN"]: ["10.0.%d.%d" % divmod(int(b["metadata"]["uid"][:4], 16) % 2000 + 10,
                                                                           250)]
                  for b in self.items("elbv2.k8s.aws", "targetgroupbindings") if b.get("spec", {}).get("targetGroupARN")}
        for arn in set(wanted) | set(self.registered):
            if wanted.get(arn, []) != self.registered.get(arn, []):
                self.register_targets(arn, wanted.get(arn, []))
                self.registered[arn] = wanted.get(arn, [])

    def _react(self, kind: Kind, obj: dict) -> None:
        if kind.plural in READY_AT_ONCE and self.hold_readiness:
            obj["status"] = {"replicas": 1, "readyReplicas": 0, "availableReplicas": 0, "observedGeneration": 0}
        elif kind.plural in READY_AT_ONCE:
            _mark_ready(kind, obj)
            if kind.plural == "deployments":
                self._owned_replicaset(obj)
        elif kind.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("clusterIP", "10.100.%d.%d" % divmod(self.version % 65000, 250))
        elif kind.plural == "externalsecrets" and self.resolve_external:
            self._fill_external_secret(obj)

    def _owned_replicaset(self, deployment: dict) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec", {})
        template = spec.get("template", {})
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        name, namespace = f"{meta['name']}-{digest}", meta["namespace"]
        replicas = spec.get("replicas", 1)
        replica_set = {
            "metadata": {"name": name, "labels": dict(template.get("metadata", {}).get("labels", {})),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True}]},
            "spec": {"replicas": replicas, "selector": spec.get("selector", {}), "template": template},
            "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                       "observedGeneration": 1}}
        for old in self.items("apps", "replicasets", namespace):
            owners = old["metadata"].get("ownerReferences", [])
            if any(o.get("uid") == meta["uid"] for o in owners) and old["metadata"]["name"] != name:
                self._remove(("apps", "replicasets", namespace, old["metadata"]["name"]))
        if self.find("apps", "replicasets", namespace, name) is None:
            self.create(BY_PATH[("apps", "v1", "replicasets")], namespace, replica_set)

    def _fill_external_secret(self, external: dict) -> None:
        meta, spec = external["metadata"], external.get("spec", {})
        values, missing = {}, []
        for item in spec.get("data", []):
            value = self.resolve_external(item["remoteRef"]["key"])
            if value is None:
                missing.append(item["remoteRef"]["key"])
            else:
                values[item["secretKey"]] = value
        if missing:
            external["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "SecretSyncedError",
                                                  "message": f"could not get {', '.join(missing)}"}]}
            return
        target = spec.get("target", {}).get("name", meta["name"])
        template = spec.get("target", {}).get("template", {}).get("data")
        if template:  # the operator's templating, for the plain `{{ .key }}` form only
            values = {key: re.sub(r"{{\s*\.(\w+)\s*}}", lambda m: values[m.group(1)], text)
                      for key, text in template.items()}
        secret = {"metadata": {"name": target, "ownerReferences": [
                      {"apiVersion": external["apiVersion"], "kind": "ExternalSecret", "name": meta["name"],
                       "uid": meta["uid"], "controller": True}]},
                  "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}
        secrets = BY_PATH[("", "v1", "secrets")]
        if self.find("", "secrets", meta["namespace"], target) is None:
            self.create(secrets, meta["namespace"], secret)
        external["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced"}]}


def _merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _mark_ready(kind: Kind, obj: dict) -> None:
    replicas = obj.get("spec", {}).get("replicas", 1)
    generation = obj["metadata"].get("generation", 1)
    if kind.plural == "jobs":
        obj["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    elif kind.plural == "daemonsets":
        obj["status"] = {"desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1,
                         "numberAvailable": 1, "observedGeneration": generation}
    else:
        obj["status"] = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                         "updatedReplicas": replicas, "currentReplicas": replicas, "observedGeneration": generation,
                         "conditions": [{"type": "Available", "status": "True"}]}


def _selected(obj: dict, query: dict) -> bool:
    labels = obj["metadata"].get("labels", {})
    for term in filter(None, query.get("labelSelector", [""])[0].split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    for term in filter(None, query.get("fieldSelector", [""])[0].split(",")):
        key, value = term.split("=", 1)
        if key == "metadata.name" and obj["metadata"]["name"] != value:
            return False
        if key == "metadata.namespace" and obj["metadata"].get("namespace") != value:
            return False
    return True


# --- HTTP ---

def _discovery(group: str, version: str) -> dict:
    resources = []
    for k in KINDS:
        if (k.group, k.version) != (group, version):
            continue
        resources.append({"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
                          "kind": k.kind, "shortNames": list(k.short),
                          "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                                    "watch"]})
        resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                          "kind": k.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources}


def _groups() -> dict:
    versions: dict[str, list[str]] = {}
    for k in KINDS:
        if k.group and k.version not in versions.setdefault(k.group, []):
            versions[k.group].append(k.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
         "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in versions.items()]}


def _route(path: str):
    """(kind, namespace, name, subresource) for a resource path, or None."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in BY_PATH:
        namespace, rest = rest[1], rest[2:]
    kind = BY_PATH.get((group, version, rest[0]))
    if kind is None:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    return kind, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each response waits ~40 ms on delayed ACKs
    cluster: Cluster

    def log_message(self, *args):
        pass

    def _send(self, code: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            return decode_protobuf(raw)
        if "yaml" in (self.headers.get("Content-Type") or ""):
            import yaml
            return yaml.safe_load(raw)
        return json.loads(raw)

    def _handle(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        cluster = self.cluster
        with cluster.lock:
            cluster.requests.append((self.command, url.path))
        if url.path == "/version":
            return self._send(200, {"major": "1", "minor": "34", "gitVersion": "v1.34.0-simulated",
                                    "platform": "linux/amd64"})
        if url.path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if url.path == "/apis":
            return self._send(200, _groups())
        if url.path == "/openapi/v2":
            return self._send(200, b"", "application/octet-stream")
        parts = url.path.strip("/").split("/")
        if (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) == 3):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            if not any((k.group, k.version) == (group, version) for k in KINDS):
                raise ApiError(404, "NotFound", f"no group version {group}/{version}")
            return self._send(200, _discovery(group, version))
        routed = _route(url.path)
        if routed is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
        kind, namespace, name, sub = routed
        with cluster.lock:
            result = self._dispatch(kind, namespace, name, sub, query)
            cluster.settle()
        self._send(*result)

    def _dispatch(self, kind: Kind, namespace: str, name: str | None, sub: str | None, query: dict):
        cluster, method = self.cluster, self.command
        if method == "GET" and name is None:
            if query.get("watch", ["false"])[0] in ("1", "true"):
                raise ApiError(405, "MethodNotAllowed", "watch is not simulated")
            items = [o for o in cluster.items(kind.group, kind.plural, namespace if kind.namespaced and namespace
                                              else None) if _selected(o, query)]
            return 200, {"kind": f"{kind.kind}List", "apiVersion": _api_version(kind),
                         "metadata": {"resourceVersion": str(cluster.version)}, "items": items}
        if method == "GET":
            return 200, cluster.get(kind, namespace if kind.namespaced else "", name)
        if method == "POST":
            return 201, cluster.create(kind, namespace, self.body)
        if method == "PUT":
            body = self.body
            if kind.plural == "namespaces" and sub == "finalize":
                body.setdefault("spec", {})["finalizers"] = []
            return 200, cluster.replace(kind, namespace, name, body)
        if method == "PATCH":
            return 200, cluster.patch(kind, namespace, name, self.body)
        if method == "DELETE":
            return 200, cluster.delete(kind, namespace, name)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _serve(self) -> None:
        try:
            self.body = self._body()
            self._handle()
        except ApiError as error:
            self._send(error.code, error.body())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


def _api_version(kind: Kind) -> str:
    return f"{kind.group}/{kind.version}" if kind.group else kind.version


class FakeKubeServer:
    """The HTTP server on a free loopback port, in a daemon thread, with a starter set of
    objects a new EKS cluster has (kube-system, default, the gp2 default StorageClass,
    three Ready nodes)."""

    def __init__(self, external_secret_resolver=None, target_registrar=None):
        self.cluster = Cluster(external_secret_resolver, target_registrar)
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.reset()

    def start(self) -> "FakeKubeServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        """A fresh EKS cluster: namespaces default and kube-system, gp2 as the default class,
        three Ready nodes of the managed node group."""
        with self.cluster.lock:
            self.cluster.objects.clear()
            self.cluster.requests.clear()
            self.cluster.registered.clear()
            self.cluster.hold_readiness = False
            for space in ("default", "kube-system", "kube-public"):
                self.cluster.create(BY_PATH[("", "v1", "namespaces")], "", {"metadata": {"name": space}})
            self.cluster.create(BY_PATH[("storage.k8s.io", "v1", "storageclasses")], "", {
                "metadata": {"name": "gp2", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "kubernetes.io/aws-ebs", "parameters": {"type": "gp2", "fsType": "ext4"},
                "volumeBindingMode": "WaitForFirstConsumer"})
            for index in range(3):
                self.cluster.create(BY_PATH[("", "v1", "nodes")], "", {
                    "metadata": {"name": f"ip-10-0-{index}-10.ec2.internal",
                                 "labels": {"eks.amazonaws.com/nodegroup": "simulated"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
            self.cluster.requests.clear()

    @staticmethod
    def cluster_kind(plural: str) -> Kind:
        """The kind served under a plural (the core group first), for tests that act on the store."""
        return min((k for k in KINDS if k.plural == plural), key=lambda k: k.group != "")

    @staticmethod
    def standin_charts(releases) -> dict:
        """Chart overrides that install the SIMULATION stand-in chart for each release."""
        return {release: {"chart": STANDIN_CHART} for release in releases}

    def kubeconfig(self, path, context: str = "simulated") -> str:
        """A kubeconfig that points at this server (plain HTTP, a dummy token)."""
        import yaml
        config = {"apiVersion": "v1", "kind": "Config", "current-context": context,
                  "clusters": [{"name": context, "cluster": {"server": self.url}}],
                  "users": [{"name": context, "user": {"token": "simulated"}}],
                  "contexts": [{"name": context, "context": {"cluster": context, "user": context}}]}
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return str(path)
