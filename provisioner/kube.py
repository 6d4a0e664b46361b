"""Reaching the cluster: the EKS endpoint with a token from the current AWS credentials,
or a kubeconfig named in the config; and a small create-or-patch client on top.

The token is the one `aws eks get-token` prints: a presigned STS GetCallerIdentity URL
bound to the cluster name. Helm gets a kubeconfig whose user runs `python -m provisioner
eks-token`, so no token is ever written to disk.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass

import kubernetes.client
import kubernetes.config
import yaml
from kubernetes.client.exceptions import ApiException

from .errors import StepError

TOKEN_PREFIX = "k8s-aws-v1."
TOKEN_LIFETIME_SECONDS = 14 * 60  # STS presigned URLs for EKS are honoured for 15 minutes
CLUSTER_SCOPED = {"Namespace", "StorageClass", "ClusterSecretStore", "APIService", "GatewayClass", "ClusterIssuer",
                  "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "IngressClass"}


def eks_token(session, cluster: str, region: str) -> str:
    sts = session.client("sts", region_name=region)

    def bind_to_cluster(request, **_):
        request.headers["x-k8s-aws-id"] = cluster

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", bind_to_cluster)
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def exec_credential(token: str) -> dict:
    """What a kubeconfig exec plugin prints (client.authentication.k8s.io/v1beta1)."""
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + TOKEN_LIFETIME_SECONDS))
    return {"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1beta1", "spec": {},
            "status": {"expirationTimestamp": expires, "token": token}}


class ClusterMissing(StepError):
    """There is no cluster (or it is being deleted): nothing inside it to create or remove."""


@dataclass
class Connection:
    """A kubernetes API client and the kubeconfig (plus context) that gives helm the same cluster."""

    api: kubernetes.client.ApiClient
    kubeconfig: str
    context: str | None


def connect(config, aws, cluster: str) -> Connection:
    override = config["kubernetes"]
    if override.get("kubeconfig"):
        path = os.path.expanduser(override["kubeconfig"])
        api = kubernetes.config.new_client_from_config(config_file=path, context=override.get("context"))
        return Connection(api, path, override.get("context"))
    from steps.eks import describe_cluster  # the eks step owns how a cluster is looked up
    described = describe_cluster(aws.client("eks"), cluster)
    if described is None or described.get("status") == "DELETING":
        raise ClusterMissing(f"EKS cluster {cluster} does not exist; apply creates it")
    if described.get("status") != "ACTIVE":
        raise StepError(f"EKS cluster {cluster} is {described.get('status')}; wait for ACTIVE and run again")
    return _eks_connection(aws, cluster, described)


def _eks_connection(aws, cluster: str, described: dict) -> Connection:
    workdir = tempfile.mkdtemp(prefix="provisioner-kube-")
    ca_path = os.path.join(workdir, "ca.crt")
    with open(ca_path, "wb") as handle:
        handle.write(base64.b64decode(described["certificateAuthority"]["data"]))
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": cluster,
        "clusters": [{"name": cluster, "cluster": {"server": described["endpoint"],
                                                   "certificate-authority": ca_path}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "users": [{"name": cluster, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
            "args": ["-m", "provisioner", "eks-token", cluster, "--region", aws.region],
            "interactiveMode": "Never"}}}]}
    path = os.path.join(workdir, "kubeconfig")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        yaml.safe_dump(kubeconfig, handle)
    configuration = kubernetes.client.Configuration(host=described["endpoint"])
    configuration.ssl_ca_cert = ca_path
    configuration.api_key_prefix["authorization"] = "Bearer"
    issued = {"at": 0.0}

    def refresh(conf):
        if time.time() - issued["at"] > TOKEN_LIFETIME_SECONDS - 60:
            conf.api_key["authorization"] = eks_token(aws.session, cluster, aws.region)
            issued["at"] = time.time()

    configuration.refresh_api_key_hook = refresh
    api = kubernetes.client.ApiClient(configuration)
    weakref.finalize(api, shutil.rmtree, workdir, True)
    return Connection(api, path, cluster)


def resource_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    plural = kind.lower()
    if plural.endswith("y") and plural[-2:-1] not in "aeiou":
        plural = plural[:-1] + "ies"
    else:
        plural += "es" if plural.endswith("s") else "s"
    scope = f"/namespaces/{namespace}" if namespace and kind not in CLUSTER_SCOPED else ""
    return f"{base}{scope}/{plural}" + (f"/{name}" if name else "")


def _contains(current, desired) -> bool:
    """True when every field of desired is already so in current (server-added fields aside)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(_contains(current.get(k), v) for k, v in desired.items())
    return current == desired


class Kube:
    """Just the verbs the steps need, on any kind, through the official client's transport."""

    def __init__(self, api: kubernetes.client.ApiClient, on_change=lambda: None):
        self.api, self.on_change = api, on_change

    def _request(self, method: str, path: str, body=None, query: dict | None = None,
                 content_type: str = "application/json") -> dict | None:
        serialized = self.api.param_serialize(method, path, query_params=list((query or {}).items()),
                                              header_params={"Content-Type": content_type,
                                                             "Accept": "application/json"},
                                              body=body, auth_settings=["BearerToken"])
        absent_is_fine = method in ("GET", "DELETE")  # a 404 on a write means a wrong path: never ignore it
        try:
            response = self.api.call_api(*serialized, _request_timeout=30)
            response.read()
        except ApiException as error:
            if error.status == 404 and absent_is_fine:
                return None
            raise
        if response.status >= 400:
            if response.status == 404 and absent_is_fine:
                return None
            raise ApiException(http_resp=response)
        return json.loads(response.data) if response.data else {}

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return self._request("GET", resource_path(api_version, kind, namespace, name))

    def list(self, api_version: str, kind: str, namespace: str | None = None, labels: str | None = None) -> list:
        found = self._request("GET", resource_path(api_version, kind, namespace),
                              query={"labelSelector": labels} if labels else None)
        return (found or {}).get("items", [])

    def apply(self, obj: dict) -> bool:
        """Create the object, or merge-patch it where it differs; False when it already matched."""
        meta = obj["metadata"]
        current = self.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        if current is None:
            self._request("POST", resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace")), obj)
        elif _contains(current, obj):
            return False
        else:
            self._request("PATCH", resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
                          obj, content_type="application/merge-patch+json")
        self.on_change()
        return True

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Ask for deletion; False when there was nothing to delete."""
        path = resource_path(api_version, kind, namespace, name)
        deleted = self._request("DELETE", path, {"propagationPolicy": "Foreground"}) is not None  # 404: absent
        if deleted:
            self.on_change()
        return deleted
