"""A simulated Kubernetes API server for the tests and the sandbox: a test double.

No kube-apiserver can run on our build machines, so this in-memory object store sits
behind the real REST paths. The product's kubernetes client and the real helm binary
talk to it over HTTP exactly as they talk to EKS, and the real upstream charts install
into it. It is never used on the real path.

What it does, and what it only pretends:
- discovery (/version, /api, /apis, per-group resource lists, an empty /openapi/v2) of
  the built-in kinds plus every kind a stored CustomResourceDefinition serves (its served
  versions, scope and short names); CRUD with label and name selectors, merge-style PATCH
  (strategic merge and apply patches are treated as JSON merge), resourceVersion
  conflicts on PUT, 404/409/403 Status errors; watch from a resourceVersion (chunked, as
  helm's hook wait needs); protobuf request bodies for Secret, Namespace and ConfigMap,
  which helm's Go client sends.
- the API server's defaulting of the workload fields helm's readiness checks read;
  toy controllers: Deployments (through an owned ReplicaSet), StatefulSets and
  DaemonSets run Ready pods at once; Jobs complete in the next resourceVersion (a hook's
  watch sees it happen); PersistentVolumeClaims bind; Services get a clusterIP (and a
  load balancer hostname when of type LoadBalancer); CRDs become Established; a deleted
  Namespace is Terminating until its contents are gone, and stays Terminating with
  NamespaceDeletionDiscoveryFailure while any APIService is unavailable (its backing
  Service does not exist: the stale KEDA metrics APIService problem); dependents follow
  their owners; webhook configurations and APIServices are stored, never called.
- stand-ins for the controllers our stack runs (each follows the real rule, named where
  it is written): External Secrets (a ClusterSecretStore is validated before it is Ready,
  an ExternalSecret is filled from a resolver the caller supplies), the AWS load balancer
  controller (TargetGroupBinding finalizer, targets from the Service's ready endpoints)
  and Envoy Gateway (the proxy Deployment and Service of a Gateway).
- no admission, RBAC, schema validation, webhooks called, or real scheduling.
"""

from __future__ import annotations

import base64
import bisect
import copy
import hashlib
import json
import re
import select
import socket
import struct
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


BUILTIN_KINDS = [
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",)), Kind("", "v1", "Node", "nodes", False, ("no",)),
    Kind("", "v1", "Secret", "secrets"), Kind("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",)), Kind("", "v1", "Service", "services", short=("svc",)),
    Kind("", "v1", "Pod", "pods", short=("po",)),
    Kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",)),
    Kind("", "v1", "Endpoints", "endpoints", short=("ep",)), Kind("", "v1", "Event", "events", short=("ev",)),
    Kind("", "v1", "ResourceQuota", "resourcequotas", short=("quota",)), Kind("", "v1", "LimitRange", "limitranges"),
    Kind("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",)),
    Kind("apps", "v1", "Deployment", "deployments", short=("deploy",)), Kind("apps", "v1", "ReplicaSet", "replicasets"),
    Kind("apps", "v1", "StatefulSet", "statefulsets", short=("sts",)), Kind("apps", "v1", "DaemonSet", "daemonsets"),
    Kind("batch", "v1", "Job", "jobs"), Kind("batch", "v1", "CronJob", "cronjobs", short=("cj",)),
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
    Kind("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short=("hpa",)),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", short=("ing",)),
    Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short=("netpol",)),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    Kind("coordination.k8s.io", "v1", "Lease", "leases"),
    Kind("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ("pc",)),
]
STANDIN_CHART = str(Path(__file__).parent / "standin_charts" / "standin")
WORKLOADS = {"deployments", "statefulsets", "daemonsets", "jobs"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# The load balancer controller's finalizer on the bindings it manages (aws-load-balancer-controller
# pkg/targetgroupbinding: targetGroupBindingFinalizer); only the running controller removes it.
TGB_FINALIZER = "elbv2.k8s.aws/resources"
LBC_LABEL = ("app.kubernetes.io/name", "aws-load-balancer-controller")
ESO_LABEL = ("app.kubernetes.io/name", "external-secrets")
ENVOY_GATEWAY_LABEL = ("app.kubernetes.io/name", "gateway-helm", "envoy-gateway")  # the chart, or the stand-in
ENVOY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
WATCH_SECONDS_MAX = 300
# kube-apiserver keeps a bounded window of events for watches (its watch cache, etcd
# compaction); a watch from a resourceVersion older than that gets one ERROR event, 410
# Expired "too old resource version" (k8s.io/apiserver storage/cacher), and the client
# lists again. Here the window also keeps a long test's memory bounded.
EVENTS_KEPT = 10_000


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _api_version(kind: Kind) -> str:
    return f"{kind.group}/{kind.version}" if kind.group else kind.version


def not_found_resource() -> "ApiError":
    """What kube-apiserver answers for a path no served resource matches (an unknown
    group, version or kind): its NotFound handler's Status, not an empty list."""
    return ApiError(404, "NotFound", "the server could not find the requested resource")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, "details": {}, "code": self.code}


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
    """Objects keyed by (group, plural, namespace, name), the kinds served (built in, and
    from stored CRDs), an event log for watches, and the toy controllers."""

    STORE_VALIDATION_SECONDS = 0.3

    def __init__(self, external_secret_resolver=None, target_registrar=None):
        self.objects: dict[tuple[str, str, str, str], dict] = {}
        self.custom: dict[tuple[str, str, str], Kind] = {}  # (group, version, plural) -> kind, from CRDs
        self.register_targets = target_registrar  # (target group ARN, [(ip, port)]) -> None
        self.registered: dict[str, list[tuple[str, int]]] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.version = 0
        self.events: list[tuple[int, str, str, str, str, dict]] = []  # (rv, type, group, plural, namespace, obj)
        self.event_versions: list[int] = []
        self.requests: list[tuple[str, str]] = []
        self.resolve_external = external_secret_resolver
        self.hold_readiness = False  # tests: workloads never become ready (helm --wait hangs)
        # A ClusterSecretStore is Ready only after the operator validated it, a moment after it
        # appears (external-secrets pkg/controllers/secretstore: the Ready condition comes from
        # a reconcile that checks the provider); tests may lengthen it.
        self.store_validation_seconds = self.STORE_VALIDATION_SECONDS
        self.pod_count = 0
        self.born: dict[str, float] = {}  # uid -> monotonic creation time, for controllers that take a moment
        # Tests: (method, path fragment) of requests to answer by resetting the connection, once
        # each, as an API server does while its control plane scales or updates.
        self.drop_connections: list[tuple[str, str]] = []

    @property
    def mutations(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.requests if method in MUTATING]

    # --- kinds ---

    def kinds(self) -> list[Kind]:
        return BUILTIN_KINDS + list(self.custom.values())

    def kind_at(self, group: str, version: str, plural: str) -> Kind | None:
        for kind in BUILTIN_KINDS:
            if (kind.group, kind.version, kind.plural) == (group, version, plural):
                return kind
        return self.custom.get((group, version, plural))

    def kind_named(self, plural: str, group: str | None = None) -> Kind:
        """The kind served under a plural (the core group first), for tests and controllers."""
        found = [k for k in self.kinds() if k.plural == plural and (group is None or k.group == group)]
        if not found:
            raise not_found_resource()
        return min(found, key=lambda k: k.group != "")

    def _register_crds(self) -> None:
        """The kinds every stored CRD serves: one per served version, with its scope and
        short names (apiextensions-apiserver serves exactly those, and nothing before the
        CRD exists)."""
        served = {}
        for crd in self.items("apiextensions.k8s.io", "customresourcedefinitions"):
            if crd["metadata"].get("deletionTimestamp"):
                continue
            spec, names = crd.get("spec", {}), crd.get("spec", {}).get("names", {})
            for version in spec.get("versions", []):
                if version.get("served", True):
                    served[(spec["group"], version["name"], names["plural"])] = Kind(
                        spec["group"], version["name"], names["kind"], names["plural"],
                        spec.get("scope", "Namespaced") == "Namespaced", tuple(names.get("shortNames", [])))
        self.custom = served

    # --- the store ---

    def _stamp(self, obj: dict) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def _log(self, event: str, key: tuple, obj: dict) -> None:
        self.events.append((self.version, event, key[0], key[1], key[2], copy.deepcopy(obj)))
        self.event_versions.append(self.version)
        if len(self.events) > 2 * EVENTS_KEPT:  # trimmed in batches: a list's head is costly to cut
            del self.events[:-EVENTS_KEPT], self.event_versions[:-EVENTS_KEPT]
        with self.changed:  # tests also write to the store directly, without the lock
            self.changed.notify_all()

    def _store(self, key: tuple, obj: dict, event: str) -> None:
        self._stamp(obj)
        self.objects[key] = obj
        self._log(event, key, obj)

    def get(self, kind: Kind, namespace: str, name: str) -> dict:
        found = self.objects.get((kind.group, kind.plural, namespace if kind.namespaced else "", name))
        if found is None:
            what = kind.plural if not kind.group else f"{kind.plural}.{kind.group}"
            raise ApiError(404, "NotFound", f'{what} "{name}" not found')
        return found

    def find(self, group: str, plural: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((group, plural, namespace, name))

    def items(self, group: str, plural: str, namespace: str | None = None) -> list[dict]:
        return [obj for (g, p, ns, _), obj in sorted(self.objects.items(), key=lambda entry: entry[0])
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
        else:
            meta.pop("namespace", None)
        key = (kind.group, kind.plural, namespace if kind.namespaced else "", name)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{name}" already exists')
        obj["apiVersion"], obj["kind"] = _api_version(kind), kind.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        self.born[meta["uid"]] = time.monotonic()
        if kind.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        _default(kind, obj)
        self._react(kind, obj)
        self._store(key, obj, "ADDED")
        self._after_store(kind, obj)
        return obj

    def replace(self, kind: Kind, namespace: str, name: str, obj: dict, subresource: str | None = None) -> dict:
        current = self.get(kind, namespace, name)
        wanted = obj.get("metadata", {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "{name}": '
                           "the object has been modified; please apply your changes to the latest version")
        merged = copy.deepcopy(obj)
        if subresource == "status":  # only the status changes through /status
            merged = {**copy.deepcopy(current), "status": merged.get("status", {})}
        meta = merged.setdefault("metadata", {})
        for keep in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
            if keep in current["metadata"]:
                meta[keep] = current["metadata"][keep]
        meta["name"] = name
        merged["apiVersion"], merged["kind"] = current["apiVersion"], current["kind"]
        _default(kind, merged)
        spec_changed = merged.get("spec") != current.get("spec")
        meta["generation"] = current["metadata"]["generation"] + (1 if spec_changed else 0)
        if "status" not in merged and "status" in current:
            merged["status"] = current["status"]
        if spec_changed:
            self._react(kind, merged)
        key = (kind.group, kind.plural, namespace if kind.namespaced else "", name)
        self._store(key, merged, "MODIFIED")
        self._after_store(kind, merged)
        self._finish_if_released(kind, merged)
        return merged

    def patch(self, kind: Kind, namespace: str, name: str, patch, subresource: str | None = None) -> dict:
        current = copy.deepcopy(self.get(kind, namespace, name))
        if isinstance(patch, list):  # JSON patch: the few operations tools send
            for op in patch:
                parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
                target = current
                for part in parts[:-1]:
                    target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
                if isinstance(target, list):
                    index = len(target) if parts[-1] == "-" else int(parts[-1])
                    if op["op"] == "remove":
                        target.pop(index)
                    elif op["op"] == "add":
                        target.insert(index, op["value"])
                    else:
                        target[index] = op["value"]
                elif op["op"] == "remove":
                    target.pop(parts[-1], None)
                else:
                    target[parts[-1]] = op["value"]
        else:
            _merge(current, patch)
        current["metadata"].pop("resourceVersion", None)
        return self.replace(kind, namespace, name, current, subresource)

    def delete(self, kind: Kind, namespace: str, name: str) -> dict:
        namespace = namespace if kind.namespaced else ""
        obj = self.get(kind, namespace, name)
        key = (kind.group, kind.plural, namespace, name)
        if kind.plural == "namespaces":
            obj["status"]["phase"] = "Terminating"
            obj["metadata"].setdefault("deletionTimestamp", _now())
            self._store(key, obj, "MODIFIED")
            self.settle()
            return obj
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                self._store(key, obj, "MODIFIED")
            return obj
        self._remove(key)
        return obj

    def _remove(self, key) -> None:
        gone = self.objects.pop(key, None)
        if gone is None:
            return
        self.version += 1
        self._log("DELETED", key, gone)
        uid = gone["metadata"]["uid"]
        for other_key, other in list(self.objects.items()):  # garbage collection of dependents
            if any(ref.get("uid") == uid for ref in other["metadata"].get("ownerReferences", [])):
                self._remove(other_key)
        if key[:2] == ("apiextensions.k8s.io", "customresourcedefinitions"):
            # Deleting a CRD deletes its custom resources (the customresourcecleanup finalizer).
            group, plural = gone["spec"]["group"], gone["spec"]["names"]["plural"]
            for other_key in [k for k in self.objects if k[:2] == (group, plural)]:
                self._remove(other_key)
            self._register_crds()

    def _finish_if_released(self, kind: Kind, obj: dict) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and kind.plural != "namespaces":
            self._remove((kind.group, kind.plural, meta.get("namespace", "") if kind.namespaced else "",
                          meta["name"]))

    def _ensure(self, kind_plural: str, namespace: str, obj: dict, group: str = "") -> None:
        """A controller's create: skipped when it exists or its namespace is going away."""
        if self.find(group, kind_plural, namespace, obj["metadata"]["name"]) is None:
            try:
                self.create(self.kind_named(kind_plural, group), namespace, obj)
            except ApiError:
                pass

    def events_since(self, version: int) -> list[tuple]:
        """Events after this resourceVersion; ApiError 410 when the window no longer reaches back to it."""
        if self.event_versions and version < self.event_versions[0] - 1:
            raise ApiError(410, "Expired", f"too old resource version: {version} ({self.event_versions[0] - 1})")
        return self.events[bisect.bisect_right(self.event_versions, version):]

    # --- controllers ---

    def _react(self, kind: Kind, obj: dict) -> None:
        """What a controller sets on an object as it is written (status, defaults)."""
        if kind.plural in WORKLOADS - {"jobs"}:
            if self.hold_readiness:
                obj["status"] = {"replicas": 1, "readyReplicas": 0, "availableReplicas": 0, "observedGeneration": 0}
            else:
                _mark_ready(kind, obj, len(self.items("", "nodes")))
        elif kind.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") in (None, ""):
                spec["clusterIP"] = "10.100.%d.%d" % divmod(self.version % 65000, 250)
            if spec["type"] == "LoadBalancer":  # a cloud load balancer answers for it
                name = hashlib.sha256(obj["metadata"]["name"].encode()).hexdigest()[:16]
                obj["status"] = {"loadBalancer": {"ingress": [{"hostname": f"k8s-{name}.elb.amazonaws.com"}]}}
        elif kind.plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Bound", "accessModes": obj.get("spec", {}).get("accessModes", []),
                             "capacity": obj.get("spec", {}).get("resources", {}).get("requests", {})}
        elif kind.plural == "customresourcedefinitions":
            names = obj.get("spec", {}).get("names", {})
            obj["status"] = {"acceptedNames": names, "storedVersions": [
                v["name"] for v in obj.get("spec", {}).get("versions", []) if v.get("storage")],
                "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                               {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}]}

    def _after_store(self, kind: Kind, obj: dict) -> None:
        """Objects a controller makes for a stored one (ReplicaSets, pods, claims)."""
        if kind.plural == "customresourcedefinitions":
            self._register_crds()
        if self.hold_readiness or obj["metadata"].get("deletionTimestamp"):
            return
        if kind.plural == "deployments":
            self._owned_replicaset(obj)
        elif kind.plural == "replicasets":
            self._run_pods(obj, [f"{obj['metadata']['name']}-{i}" for i in range(obj["spec"].get("replicas", 1))])
        elif kind.plural == "statefulsets":
            self._stateful_set(obj)
        elif kind.plural == "daemonsets":
            self._run_pods(obj, [f"{obj['metadata']['name']}-{n['metadata']['name'][:20]}"
                                 for n in self.items("", "nodes")])

    def _owned_replicaset(self, deployment: dict) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec", {})
        template = spec.get("template", {})
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        name, namespace = f"{meta['name']}-{digest}", meta["namespace"]
        replicas = spec.get("replicas", 1)
        for old in self.items("apps", "replicasets", namespace):
            owners = old["metadata"].get("ownerReferences", [])
            if any(o.get("uid") == meta["uid"] for o in owners) and old["metadata"]["name"] != name:
                self._remove(("apps", "replicasets", namespace, old["metadata"]["name"]))
        self._ensure("replicasets", namespace, {
            "metadata": {"name": name, "labels": dict(template.get("metadata", {}).get("labels", {})),
                         "ownerReferences": [_owner(deployment)]},
            "spec": {"replicas": replicas, "selector": spec.get("selector", {}), "template": template},
            "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                       "observedGeneration": 1}}, "apps")

    def _stateful_set(self, stateful_set: dict) -> None:
        """Pods <name>-<i> and, per volumeClaimTemplate, claims <template>-<name>-<i> that
        outlive the StatefulSet (the default retention policy is Retain)."""
        meta, spec = stateful_set["metadata"], stateful_set.get("spec", {})
        names = [f"{meta['name']}-{i}" for i in range(spec.get("replicas", 1))]
        for pod in names:
            for claim in spec.get("volumeClaimTemplates", []):
                self._ensure("persistentvolumeclaims", meta["namespace"], {
                    "metadata": {"name": f"{claim['metadata']['name']}-{pod}",
                                 "labels": dict(spec.get("selector", {}).get("matchLabels", {}))},
                    "spec": copy.deepcopy(claim.get("spec", {}))})
        self._run_pods(stateful_set, names)

    def _run_pods(self, owner: dict, names: list[str]) -> None:
        """Ready pods from the owner's template, each with its own IP; pods it no longer
        wants go."""
        namespace, template = owner["metadata"]["namespace"], owner.get("spec", {}).get("template", {})
        for pod in self.items("", "pods", namespace):
            owned = any(o.get("uid") == owner["metadata"]["uid"] for o in pod["metadata"].get("ownerReferences", []))
            if owned and pod["metadata"]["name"] not in names:
                self._remove(("", "pods", namespace, pod["metadata"]["name"]))
        for name in names:
            if self.find("", "pods", namespace, name) is not None:
                continue
            self.pod_count += 1
            ip = "10.0.%d.%d" % (self.pod_count // 250 % 24, self.pod_count % 250 + 4)
            self._ensure("pods", namespace, {
                "metadata": {"name": name, "labels": dict(template.get("metadata", {}).get("labels", {})),
                             "ownerReferences": [_owner(owner)]},
                "spec": copy.deepcopy(template.get("spec", {})),
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                           "conditions": [{"type": "Ready", "status": "True"},
                                          {"type": "ContainersReady", "status": "True"}]}})

    def settle(self) -> None:
        """Runs after every request: Jobs complete, the External Secrets operator validates
        stores and keeps target secrets, the load balancer controller keeps target groups in
        step with their bindings, Envoy Gateway runs its proxies, and deleted namespaces
        finalize."""
        self._complete_jobs()
        self._sync_external_secrets()
        self._sync_target_group_bindings()
        self._run_envoy_proxies()
        self._finalize_namespaces()

    def _complete_jobs(self) -> None:
        """A Job completes in a later resourceVersion than its creation, as its pod runs:
        helm's hook wait watches from the creation's version for that change."""
        if self.hold_readiness:
            return
        for job in self.items("batch", "jobs"):
            if not job.get("status", {}).get("conditions") and not job["metadata"].get("deletionTimestamp"):
                job["status"] = {"succeeded": 1, "active": 0, "startTime": _now(), "completionTime": _now(),
                                 "conditions": [{"type": "Complete", "status": "True"}]}
                meta = job["metadata"]
                self._store(("batch", "jobs", meta["namespace"], meta["name"]), job, "MODIFIED")

    def _running(self, label: tuple[str, ...]) -> bool:
        """A controller is running when a Deployment of its chart has ready replicas."""
        key, *values = label
        return any(d["metadata"].get("labels", {}).get(key) in values
                   and d.get("status", {}).get("readyReplicas", 0) > 0 and not d["metadata"].get("deletionTimestamp")
                   for d in self.items("apps", "deployments"))

    def _set_status(self, group: str, plural: str, obj: dict, status: dict) -> None:
        if obj.get("status") != status:
            obj["status"] = status
            meta = obj["metadata"]
            self._store((group, plural, meta.get("namespace", ""), meta["name"]), obj, "MODIFIED")

    def _sync_external_secrets(self) -> None:
        """The External Secrets operator: a store is Ready once validated, and an
        ExternalSecret whose store is not Ready is Ready=False with the operator's message
        (external-secrets errSecretStoreNotReady "%s %q is not ready"); otherwise its target
        secret is written (and restored when it goes missing)."""
        if not self.resolve_external or not self._running(ESO_LABEL):
            return
        ready_stores = set()
        for store in self.items("external-secrets.io", "clustersecretstores"):
            age = time.monotonic() - self.born.get(store["metadata"]["uid"], 0)
            if store.get("status", {}).get("conditions") or age >= self.store_validation_seconds:
                ready_stores.add(store["metadata"]["name"])
                self._set_status("external-secrets.io", "clustersecretstores", store, {"conditions": [
                    {"type": "Ready", "status": "True", "reason": "Valid", "message": "store validated"}],
                    "capabilities": "ReadWrite"})
        for external in self.items("external-secrets.io", "externalsecrets"):
            reference = external.get("spec", {}).get("secretStoreRef", {})
            if reference.get("kind") == "ClusterSecretStore" and reference.get("name") not in ready_stores:
                self._set_status("external-secrets.io", "externalsecrets", external, {"conditions": [
                    {"type": "Ready", "status": "False", "reason": "SecretSyncedError",
                     "message": f'ClusterSecretStore "{reference.get("name")}" is not ready'}]})
                continue
            target = external.get("spec", {}).get("target", {}).get("name", external["metadata"]["name"])
            if self.find("", "secrets", external["metadata"]["namespace"], target) is None or \
                    external.get("status", {}).get("conditions", [{}])[0].get("status") != "True":
                self._fill_external_secret(external)

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
            self._set_status("external-secrets.io", "externalsecrets", external, {"conditions": [
                {"type": "Ready", "status": "False", "reason": "SecretSyncedError",
                 "message": f"could not get {', '.join(missing)}"}]})
            return
        target = spec.get("target", {}).get("name", meta["name"])
        template = spec.get("target", {}).get("template", {}).get("data")
        if template:  # the operator's templating, for the plain `{{ .key }}` form only
            values = {key: re.sub(r"{{\s*\.(\w+)\s*}}", lambda m: values[m.group(1)], text)
                      for key, text in template.items()}
        self._ensure("secrets", meta["namespace"], {
            "metadata": {"name": target, "ownerReferences": [_owner(external)]},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})
        self._set_status("external-secrets.io", "externalsecrets", external, {"conditions": [
            {"type": "Ready", "status": "True", "reason": "SecretSynced", "message": "secret synced"}]})

    def service_endpoints(self, namespace: str, service_name: str, port) -> list[tuple[str, int]]:
        """(pod IP, target port) of the ready pods a Service selects, for one of its ports
        given by number or name (the endpoints controller's rule); none when the Service or
        the port does not exist, or a named targetPort is not a port of the pod."""
        service = self.find("", "services", namespace, service_name)
        if service is None:
            return []
        spec = service.get("spec", {})
        entry = next((p for p in spec.get("ports", []) if p.get("port") == port or p.get("name") == port), None)
        selector = spec.get("selector")
        if entry is None or not selector:
            return []
        wanted = entry.get("targetPort", entry["port"])
        found = []
        for pod in self.items("", "pods", namespace):
            labels, status = pod["metadata"].get("labels", {}), pod.get("status", {})
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
            if not ready or pod["metadata"].get("deletionTimestamp") or \
                    any(labels.get(k) != v for k, v in selector.items()):
                continue
            if isinstance(wanted, int):
                found.append((status["podIP"], wanted))
                continue
            for container in pod.get("spec", {}).get("containers", []):
                for container_port in container.get("ports", []):
                    if container_port.get("name") == wanted:
                        found.append((status["podIP"], container_port["containerPort"]))
        return sorted(found)

    def _sync_target_group_bindings(self) -> None:
        """The AWS load balancer controller, while its Deployment runs: it puts its finalizer
        on each TargetGroupBinding, registers the Service's ready endpoints on the
        serviceRef port in the target group, and on deletion deregisters them and removes
        the finalizer. With the controller gone nothing changes: a binding being deleted
        stays, finalizer and all, as on EKS (and keeps its namespace Terminating)."""
        if not self._running(LBC_LABEL):
            return
        wanted: dict[str, list[tuple[str, int]]] = {}
        for binding in self.items("elbv2.k8s.aws", "targetgroupbindings"):
            meta, spec = binding["metadata"], binding.get("spec", {})
            arn = spec.get("targetGroupARN")
            if meta.get("deletionTimestamp"):
                wanted.setdefault(arn, [])
                self._release_finalizer(binding, arn)
                continue
            if TGB_FINALIZER not in meta.get("finalizers", []):
                meta.setdefault("finalizers", []).append(TGB_FINALIZER)
                self._store(("elbv2.k8s.aws", "targetgroupbindings", meta["namespace"], meta["name"]), binding,
                            "MODIFIED")
            reference = spec.get("serviceRef", {})
            wanted[arn] = self.service_endpoints(meta["namespace"], reference.get("name", ""), reference.get("port"))
        for arn in set(wanted) | set(self.registered):
            if arn and wanted.get(arn, []) != self.registered.get(arn, []):
                if self.register_targets:
                    self.register_targets(arn, wanted.get(arn, []))
                self.registered[arn] = wanted.get(arn, [])

    def _release_finalizer(self, binding: dict, arn: str) -> None:
        if self.register_targets and self.registered.get(arn):
            self.register_targets(arn, [])
        self.registered[arn] = []
        binding["metadata"]["finalizers"] = [f for f in binding["metadata"]["finalizers"] if f != TGB_FINALIZER]
        self._finish_if_released(self.kind_named("targetgroupbindings", "elbv2.k8s.aws"), binding)

    def _run_envoy_proxies(self) -> None:
        """Envoy Gateway, while its Deployment runs: each Gateway of an Envoy GatewayClass
        gets a proxy Deployment and a Service in the controller's namespace, named by the
        class's EnvoyProxy (envoyService.name) or envoy-<namespace>-<gateway>-<hash>. Listener
        ports below 1024 map to container port + 10000 (Envoy Gateway runs unprivileged)."""
        if not self.custom or not self._running(ENVOY_GATEWAY_LABEL):
            return
        controller = next(d for d in self.items("apps", "deployments")
                          if d["metadata"].get("labels", {}).get(ENVOY_GATEWAY_LABEL[0]) in ENVOY_GATEWAY_LABEL[1:])
        home = controller["metadata"]["namespace"]
        owning = "gateway.envoyproxy.io/owning-gateway-name"
        for group, plural in (("apps", "deployments"), ("", "services")):  # proxies of Gateways now gone
            for proxy in self.items(group, plural, home):
                labels = proxy["metadata"].get("labels", {})
                if owning in labels and self.find("gateway.networking.k8s.io", "gateways", labels.get(
                        "gateway.envoyproxy.io/owning-gateway-namespace", ""), labels[owning]) is None:
                    self._remove((group, plural, home, proxy["metadata"]["name"]))
        for gateway in self.items("gateway.networking.k8s.io", "gateways"):
            meta, spec = gateway["metadata"], gateway.get("spec", {})
            gateway_class = self.find("gateway.networking.k8s.io", "gatewayclasses", "", spec.get("gatewayClassName", ""))
            if gateway_class is None or gateway_class.get("spec", {}).get("controllerName") != ENVOY_CONTROLLER:
                continue
            parameters = gateway_class["spec"].get("parametersRef") or {}
            proxy = self.find("gateway.envoyproxy.io", "envoyproxies", parameters.get("namespace", ""),
                              parameters.get("name", "")) or {}
            service = (proxy.get("spec", {}).get("provider", {}).get("kubernetes", {})
                       .get("envoyService", {}))
            name = service.get("name") or f"envoy-{meta['namespace']}-{meta['name']}"[:63]
            labels = {"app.kubernetes.io/name": "envoy", owning: meta["name"],
                      "gateway.envoyproxy.io/owning-gateway-namespace": meta["namespace"]}
            ports = [(listener["port"], listener["port"] + 10000 if listener["port"] < 1024 else listener["port"])
                     for listener in spec.get("listeners", [])]
            self._ensure("deployments", home, {
                "metadata": {"name": name, "labels": labels},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "envoy", "image": "docker.io/envoyproxy/envoy:distroless-v1.33.0",
                                             "ports": [{"containerPort": c} for _, c in ports]}]}}}}, "apps")
            self._ensure("services", home, {
                "metadata": {"name": name, "labels": labels},
                "spec": {"type": service.get("type", "LoadBalancer"), "selector": labels,
                         "ports": [{"name": f"port-{p}", "port": p, "targetPort": c, "protocol": "TCP"}
                                   for p, c in ports]}})

    def unavailable_apiservices(self) -> list[str]:
        broken = []
        for service in self.items("apiregistration.k8s.io", "apiservices"):
            backend = service.get("spec", {}).get("service")
            if backend and self.find("", "services", backend.get("namespace", ""), backend.get("name", "")) is None:
                broken.append(service["metadata"]["name"])
        return broken

    def _finalize_namespaces(self) -> None:
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
            for key in [key for key in self.objects if key[2] == name and key[1] != "namespaces"]:
                obj = self.objects.get(key)
                if obj is None:
                    continue  # collected with its owner
                if obj["metadata"].get("finalizers"):
                    obj["metadata"].setdefault("deletionTimestamp", _now())
                else:
                    self._remove(key)
            if not [key for key in self.objects if key[2] == name and key[1] != "namespaces"]:
                self._remove(("", "namespaces", "", name))
            else:
                space["status"]["conditions"] = [{"type": "NamespaceFinalizersRemaining", "status": "True",
                                                  "message": "Some content in the namespace has finalizers"}]


def _default(kind: Kind, obj: dict) -> None:
    """The API server's defaulting of the workload fields helm's readiness checks read
    (k8s.io/kubernetes pkg/apis/apps/v1/defaults.go: replicas 1, rolling updates with
    25%/25% for Deployments, partition 0 for StatefulSets, maxUnavailable 1 for DaemonSets)."""
    spec = obj.get("spec")
    if spec is None or kind.group != "apps":
        return
    if kind.plural in ("deployments", "statefulsets", "replicasets"):
        spec.setdefault("replicas", 1)
    if kind.plural == "deployments":
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", "25%")
            strategy["rollingUpdate"].setdefault("maxSurge", "25%")
    elif kind.plural == "statefulsets":
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("podManagementPolicy", "OrderedReady")
    elif kind.plural == "daemonsets":
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", 1)
            strategy["rollingUpdate"].setdefault("maxSurge", 0)


def _owner(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _mark_ready(kind: Kind, obj: dict, nodes: int) -> None:
    replicas = obj.get("spec", {}).get("replicas", 1)
    generation = obj["metadata"].get("generation", 1)
    if kind.plural == "daemonsets":
        obj["status"] = {"desiredNumberScheduled": nodes, "currentNumberScheduled": nodes, "numberReady": nodes,
                         "updatedNumberScheduled": nodes, "numberAvailable": nodes, "observedGeneration": generation}
    else:
        obj["status"] = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                         "updatedReplicas": replicas, "currentReplicas": replicas, "observedGeneration": generation,
                         "conditions": [{"type": "Available", "status": "True"}]}
        if kind.plural == "statefulsets":
            obj["status"].update(currentRevision="r1", updateRevision="r1")


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

def _discovery(kinds: list[Kind], group: str, version: str) -> dict:
    resources = []
    for k in kinds:
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


def _groups(kinds: list[Kind]) -> dict:
    versions: dict[str, list[str]] = {}
    for k in kinds:
        if k.group and k.version not in versions.setdefault(k.group, []):
            versions[k.group].append(k.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
         "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in versions.items()]}


def _route(cluster: Cluster, path: str):
    """(kind, namespace, name, subresource) for a resource path; the real 404 when no
    served kind matches (a custom kind before its CRD, for one)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise not_found_resource()
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    kind = cluster.kind_at(group, version, rest[0])
    if kind is None or (namespace and not kind.namespaced):
        raise not_found_resource()
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
            kinds = cluster.kinds()
        if url.path == "/version":
            return self._send(200, {"major": "1", "minor": "34", "gitVersion": "v1.34.0-simulated",
                                    "platform": "linux/amd64"})
        if url.path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if url.path == "/apis":
            return self._send(200, _groups(kinds))
        if url.path == "/openapi/v2":
            return self._send(200, b"", "application/octet-stream")
        parts = url.path.strip("/").split("/")
        if (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) == 3):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            if not any((k.group, k.version) == (group, version) for k in kinds):
                raise not_found_resource()
            return self._send(200, _discovery(kinds, group, version))
        with cluster.lock:
            kind, namespace, name, sub = _route(cluster, url.path)
        if self.command == "GET" and query.get("watch", ["false"])[0] in ("1", "true"):
            return self._watch(kind, namespace, name, query)
        with cluster.lock:
            code, result = self._dispatch(kind, namespace, name, sub, query)
            result = copy.deepcopy(result)  # as written: controllers act after, in later versions
            cluster.settle()
        self._send(code, result)

    def _dispatch(self, kind: Kind, namespace: str, name: str | None, sub: str | None, query: dict):
        cluster, method = self.cluster, self.command
        if method == "GET" and name is None:
            items = [o for o in cluster.items(kind.group, kind.plural, namespace if kind.namespaced and namespace
                                              else None) if _selected(o, query)]
            return 200, {"kind": f"{kind.kind}List", "apiVersion": _api_version(kind),
                         "metadata": {"resourceVersion": str(cluster.version)}, "items": items}
        if method == "GET":
            return 200, cluster.get(kind, namespace, name)
        if method == "POST":
            return 201, cluster.create(kind, namespace, self.body)
        if method == "PUT":
            body = self.body
            if kind.plural == "namespaces" and sub == "finalize":
                body.setdefault("spec", {})["finalizers"] = []
            return 200, cluster.replace(kind, namespace, name, body, sub)
        if method == "PATCH":
            return 200, cluster.patch(kind, namespace, name, self.body, sub)
        if method == "DELETE":
            return 200, cluster.delete(kind, namespace, name)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and not self.connection.recv(1, 0x02)  # MSG_PEEK: EOF means it hung up

    def _watch(self, kind: Kind, namespace: str, name: str | None, query: dict) -> None:
        """Events after the given resourceVersion (or the current objects, then events),
        as chunked JSON lines, until timeoutSeconds or the client hangs up."""
        cluster = self.cluster
        selector = dict(query)
        if name:
            selector["fieldSelector"] = [f"metadata.name={name}"]
        scope = namespace if kind.namespaced and namespace else None
        since = query.get("resourceVersion", [""])[0]
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds", [WATCH_SECONDS_MAX])[0]),
                                          WATCH_SECONDS_MAX)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with cluster.lock:
            position = cluster.version
            pending = []
            if since in ("", "0"):
                pending = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for o in cluster.items(kind.group, kind.plural, scope) if _selected(o, selector)]
                if query.get("sendInitialEvents", [""])[0] == "true":
                    pending.append({"type": "BOOKMARK", "object": {
                        "kind": kind.kind, "apiVersion": _api_version(kind), "metadata": {
                            "resourceVersion": str(position), "annotations": {"k8s.io/initial-events-end": "true"}}}})
            else:
                position = int(since)
        try:
            while True:
                for event in pending:
                    self._chunk(json.dumps(event).encode() + b"\n")
                if time.monotonic() > deadline or self._client_gone():
                    break
                with cluster.changed:
                    cluster.changed.wait(0.5)
                    pending = []
                    try:
                        missed = cluster.events_since(position)
                    except ApiError as expired:
                        pending, missed = [{"type": "ERROR", "object": expired.body()}], []
                        deadline = 0  # the ERROR event ends the watch
                    for version, event, group, plural, ns, obj in missed:
                        position = version
                        if (group, plural) == (kind.group, kind.plural) and (scope is None or ns == scope) \
                                and _selected(obj, selector):
                            pending.append({"type": event, "object": obj})
            self._chunk(b"")
        except OSError:
            pass  # the client went away
        self.close_connection = True

    def _dropped(self) -> bool:
        """Reset the connection (RST, no answer) when the tests asked for it for this request."""
        with self.cluster.lock:
            for wanted in self.cluster.drop_connections:
                if wanted[0] == self.command and wanted[1] in self.path:
                    self.cluster.drop_connections.remove(wanted)
                    break
            else:
                return False
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # now, before socketserver's graceful shutdown could send a FIN
        self.close_connection = True
        return True

    def _serve(self) -> None:
        try:
            self.body = self._body()
            if self._dropped():
                return
            self._handle()
        except ApiError as error:
            self._send(error.code, error.body())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # helm opens many connections at once (discovery); 5 overflows under load


class FakeKubeServer:
    """The HTTP server on a free loopback port, in a daemon thread, with a starter set of
    objects a new EKS cluster has (kube-system, default, the gp2 default StorageClass,
    three Ready nodes)."""

    def __init__(self, external_secret_resolver=None, target_registrar=None):
        self.cluster = Cluster(external_secret_resolver, target_registrar)
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self.httpd = _Server(("127.0.0.1", 0), handler)
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
        three Ready nodes of the managed node group; no custom kinds."""
        cluster = self.cluster
        with cluster.lock:
            cluster.objects.clear()
            cluster.custom.clear()
            cluster.events.clear()
            cluster.event_versions.clear()
            cluster.requests.clear()
            cluster.registered.clear()
            cluster.born.clear()
            cluster.drop_connections.clear()
            cluster.hold_readiness = False
            cluster.store_validation_seconds = Cluster.STORE_VALIDATION_SECONDS
            for space in ("default", "kube-system", "kube-public"):
                cluster.create(cluster.kind_named("namespaces"), "", {"metadata": {"name": space}})
            cluster.create(cluster.kind_named("storageclasses"), "", {
                "metadata": {"name": "gp2", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "kubernetes.io/aws-ebs", "parameters": {"type": "gp2", "fsType": "ext4"},
                "volumeBindingMode": "WaitForFirstConsumer"})
            for index in range(3):
                cluster.create(cluster.kind_named("nodes"), "", {
                    "metadata": {"name": f"ip-10-0-{index}-10.ec2.internal",
                                 "labels": {"eks.amazonaws.com/nodegroup": "simulated"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
            cluster.requests.clear()

    def cluster_kind(self, plural: str, group: str | None = None) -> Kind:
        """The kind served under a plural (the core group first), for tests that act on the store."""
        with self.cluster.lock:
            return self.cluster.kind_named(plural, group)

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
