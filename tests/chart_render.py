"""What the provisioner sends to the charts, computed from the real step code for one config,
and `helm template` of the REAL upstream charts (../shared/charts beside the repository) with it.

No cluster and no AWS: the steps' upstream outputs are plausible stand-ins (names and ARNs in
the shapes the AWS steps return). Renders are cached per process, so each distinct
(chart, values) pair renders once.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import steps  # noqa: F401  (registers every step)
from provisioner.charts import DEFAULT_CHARTS
from provisioner.config import validate
from provisioner.simulation.helm_download import fetch as fetch_helm
from steps import ingress, k8s_bootstrap, langsmith
from steps.alb import target_groups
from steps.eks import Eks
from steps.secrets import GENERATORS, LICENSE_LEAF

REPO_ROOT = Path(__file__).resolve().parents[1]
CHARTS_DIR = REPO_ROOT.parent / "shared" / "charts"
ACCOUNT = "123456789012"
REGION = "us-west-2"
KUBE_VERSION = "1.34.0"
BUCKET = "acme-test-traces-123456789012-us-west-2"
LANGSMITH_ROLE = f"arn:aws:iam::{ACCOUNT}:role/acme-test-irsa-langsmith"


class _Aws:
    @staticmethod
    def account_id() -> str:
        return ACCOUNT


@dataclass
class Recorder:
    """A stand-in for the cluster API and helm that records every (apiVersion, kind) asked for."""
    kinds: set = field(default_factory=set)

    def _seen(self, api: str, kind: str) -> None:
        self.kinds.add((api, kind))

    def apply(self, obj: dict) -> dict:
        self._seen(obj["apiVersion"], obj["kind"])
        return obj

    def get(self, api, kind, name, namespace=None):
        self._seen(api, kind)

    def list(self, api, kind, namespace=None):
        self._seen(api, kind)
        return []

    def delete(self, api, kind, name, namespace=None):
        self._seen(api, kind)
        return False

    # helm
    @staticmethod
    def releases():
        return []

    @staticmethod
    def hooks(name, namespace):
        return []

    @staticmethod
    def uninstall(name, namespace, progress=None):
        return False


class Context:
    """The part of StepContext the value builders and destroy paths use."""

    def __init__(self, config, recorder: Recorder | None = None):
        self.config, self.aws, self.step = config, _Aws(), "contract"
        self.recorder = recorder or Recorder()
        prefix = config.ssm_prefix
        roles = {name: f"arn:aws:iam::{ACCOUNT}:role/{config.deployment}-irsa-{name}"
                 for name in Eks._irsa_roles(self)}
        self.outputs = {
            "vpc": {"vpc_id": "vpc-0123456789abcdef0"},
            "eks": {"cluster_name": config.cluster_name, "irsa_roles": roles,
                    "oidc_issuer": "https://oidc.eks.us-west-2.amazonaws.com/id/0123456789ABCDEF0123456789ABCDEF",
                    "oidc_provider_arn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/0123456789ABCDEF0123456789ABCDEF"},
            "secrets": {"parameters": {leaf: prefix + leaf for leaf in [*GENERATORS, LICENSE_LEAF]}},
            "storage": {"bucket_name": BUCKET, "langsmith_role_arn": LANGSMITH_ROLE},
            "alb": {"dns_name": "acme-test-alb-1234567890.us-west-2.elb.amazonaws.com",
                    "target_groups": {str(port): f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/"
                                                 f"{name}/0123456789abcde{port % 10}"
                                      for port, (name, _, _) in target_groups(config).items()}},
            "dns": {"zone_id": "Z0123456789ABCDEFGHIJ"} if config["langsmith_domain"] else {},
            "postgres": {"address": "acme-test-pg.abc.us-west-2.rds.amazonaws.com", "port": 5432,
                         "database": "langsmith", "username": "langsmith",
                         "password_parameter": prefix + "postgres-password"},
            "redis": {"address": "master.acme-test-redis.abc.usw2.cache.amazonaws.com", "port": 6379,
                      "auth_token_parameter": prefix + "redis-auth-token"},
        }

    def upstream(self, step: str) -> dict:
        return self.outputs[step]

    def cluster(self):
        return self.recorder, self.recorder

    def progress(self, message: str) -> None:
        pass

    def record(self, key, physical_id) -> None:
        pass

    def forget_all(self) -> None:
        pass


def context(overrides: dict) -> Context:
    raw = {"name_prefix": "acme", "environment": "test", "region": REGION, **overrides}
    return Context(validate(raw, {}))


def releases(ctx) -> dict[str, dict]:
    """Every release the config installs, with the values the steps send it."""
    cfg = ctx.config
    found = dict(k8s_bootstrap.release_values(ctx))
    gateway_values = ingress.release_values(cfg)
    for release in ingress.RELEASES.get(cfg.gateway, []):
        found[release] = gateway_values[release]
    if cfg["deploy_langsmith"]:
        found[langsmith.RELEASE] = langsmith.langsmith_values(ctx)
    return found


def chart_file(release: str) -> Path:
    source = DEFAULT_CHARTS[release]
    return CHARTS_DIR / f"{source.chart_name}-{source.version}.tgz"


def render(release: str, values: dict) -> list[dict]:
    """The objects the chart renders with these values (shared between callers: read only);
    a failed render fails the caller."""
    return _render(release, json.dumps(values, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _render(release: str, values_json: str) -> list[dict]:
    source = DEFAULT_CHARTS[release]
    done = subprocess.run([str(fetch_helm()), "template", release, str(chart_file(release)),
                           "--namespace", source.namespace, "--include-crds", "--kube-version", KUBE_VERSION,
                           "--values", "-"], input=values_json, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"helm template {release} ({chart_file(release).name}) failed: {done.stderr.strip()}"
    objects = [doc for doc in yaml.load_all(done.stdout, Loader=yaml.CSafeLoader) if doc]
    for obj in objects:
        if not _cluster_scoped(obj):
            obj.setdefault("metadata", {}).setdefault("namespace", source.namespace)
    return objects


def _cluster_scoped(obj: dict) -> bool:
    return obj["kind"] in {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace",
                           "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService",
                           "IngressClass", "PriorityClass", "StorageClass", "GatewayClass", "ClusterIssuer"}


@functools.lru_cache(maxsize=None)
def chart_defaults(release: str) -> tuple[dict, dict]:
    """The chart's values.yaml and values.schema.json (empty when it has none)."""
    values, schema = {}, {}
    with tarfile.open(chart_file(release)) as archive:
        for member in archive.getmembers():
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] == "values.yaml":
                values = yaml.safe_load(archive.extractfile(member)) or {}
            elif len(parts) == 2 and parts[1] == "values.schema.json":
                schema = json.load(archive.extractfile(member))
    # Istio's charts keep their defaults under this key and document setting the fields directly.
    values = {**values.pop("_internal_defaults_do_not_set", {}), **values}
    return values, _resolved(schema, schema)


def _resolved(node, root):
    """The schema with local `$ref`s (#/$defs/...) replaced by what they point at."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            target = root
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            return _resolved({**target, **{k: v for k, v in node.items() if k != "$ref"}}, root)
        return {key: _resolved(value, root) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolved(item, root) for item in node]
    return node


def unknown_keys(release: str, values: dict) -> list[str]:
    """Dotted paths of the values we set that the chart neither declares in values.yaml nor
    in its schema: a key the chart would silently ignore. Under a map the chart leaves empty
    or null (annotations, resources, ...) any key is the user's to choose."""
    defaults, schema = chart_defaults(release)
    found = []

    def walk(ours: dict, chart, node_schema: dict, path: str) -> None:
        if node_schema.get("type") == "object" and not node_schema.get("properties"):
            return  # the schema leaves this map open
        for key, value in ours.items():
            here = f"{path}.{key}" if path else key
            in_chart = isinstance(chart, dict) and key in chart
            props = (node_schema or {}).get("properties", {})
            if not in_chart and key not in props:
                found.append(here)
                continue
            below = chart.get(key) if in_chart else None
            below_schema = props.get(key, {})
            if isinstance(value, dict) and (below or below_schema.get("properties")):
                walk(value, below if isinstance(below, dict) else {}, below_schema, here)
    walk(values, defaults, schema, "")
    return found


def pod_specs(obj: dict) -> list[dict]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [spec["template"]["spec"]]
    return []


def containers(pod: dict) -> list[dict]:
    return pod.get("containers", []) + pod.get("initContainers", [])
