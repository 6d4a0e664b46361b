"""Loading and validating the deployment config.

Every key the config accepts is declared once in SCHEMA, with its type, default and
meaning; validation runs before any AWS call and reports every problem at once, each
naming the key and the fix. Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from .charts import HELM_RELEASES, MIRROR_ENVIRONMENT

from .errors import ConfigError


@dataclass(frozen=True)
class Field:
    type: type | tuple
    default: Any
    doc: str
    choices: tuple | None = None


GATEWAY_KEYS = ("enable_nginx_ingress", "enable_envoy_gateway", "enable_istio_gateway")

SCHEMA: dict[str, Field] = {
    # naming and placement
    "name_prefix": Field(str, None, "Required. Prefix of every resource name, 1-15 chars: lowercase letters, digits, hyphens; starts with a letter."),
    "environment": Field(str, "dev", "Second part of the deployment name {name_prefix}-{environment}; 1-10 lowercase letters or digits."),
    "region": Field(str, None, "AWS region. Falls back to AWS_REGION / AWS_DEFAULT_REGION from the environment."),
    "tags": Field(dict, {}, "Extra tags put on every taggable resource."),
    # network
    "create_vpc": Field(bool, True, "Create the VPC; false means bring your own (vpc_id, private_subnets, public_subnets)."),
    "vpc_cidr": Field(str, "10.0.0.0/16", "CIDR of the created VPC (prefix /16 to /20); subnets are /21-equivalents carved from it."),
    "vpc_id": Field(str, "", "Bring-your-own VPC id (create_vpc false)."),
    "private_subnets": Field(list, [], "Bring-your-own private subnet ids, at least two AZs (create_vpc false)."),
    "public_subnets": Field(list, [], "Bring-your-own public subnet ids, at least two AZs (create_vpc false)."),
    # data layer
    "postgres_source": Field(str, "external", "external: RDS PostgreSQL; in-cluster: the chart's own Postgres.", ("external", "in-cluster")),
    "postgres_instance_class": Field(str, "db.t3.large", "RDS instance class."),
    "postgres_allocated_storage": Field(int, 10, "RDS storage in GB (5-65536)."),
    "postgres_max_allocated_storage": Field(int, 100, "Upper bound for RDS storage autoscaling in GB."),
    "postgres_engine_version": Field(str, "16", "PostgreSQL major version."),
    "postgres_backup_retention_days": Field(int, 7, "Automated backup retention in days (0-35)."),
    "postgres_deletion_protection": Field(bool, True, "RDS deletion protection; destroy turns it off itself."),
    "postgres_skip_final_snapshot": Field(bool, False, "Destroy without keeping a final RDS snapshot."),
    "redis_source": Field(str, "external", "external: ElastiCache Redis; in-cluster: the chart's own Redis.", ("external", "in-cluster")),
    "redis_node_type": Field(str, "cache.m6g.xlarge", "ElastiCache node type."),
    "redis_engine_version": Field(str, "7.1", "ElastiCache Redis engine version."),
    "s3_ttl_short_days": Field(int, 14, "Days before objects under ttl_s/ in the traces bucket expire."),
    "s3_ttl_long_days": Field(int, 400, "Days before objects under ttl_l/ in the traces bucket expire."),
    # cluster
    "eks_cluster_version": Field(str, "1.34", "Kubernetes version of the EKS cluster (X.Y)."),
    "node_instance_type": Field(str, "m5.4xlarge", "Instance type of the managed node group."),
    "node_min_size": Field(int, 3, "Minimum (and initial) node count."),
    "node_max_size": Field(int, 10, "Maximum node count for the cluster autoscaler."),
    # security add-ons
    "create_firewall": Field(bool, False, "AWS Network Firewall egress allowlist (needs create_vpc)."),
    "firewall_allowed_fqdns": Field(list, ["beacon.langchain.com"], "Domains the firewall lets out (TLS SNI and HTTP Host), besides what the stack itself needs."),
    "firewall_subnet_cidr": Field(str, "", "Firewall subnet CIDR inside vpc_cidr; empty: the ninth /21-equivalent (10.0.64.0/21 in 10.0.0.0/16)."),
    "create_waf": Field(bool, False, "WAFv2 web ACL with AWS managed rules on the ALB."),
    "create_cloudtrail": Field(bool, False, "Multi-region CloudTrail trail with its bucket."),
    "create_bastion": Field(bool, False, "SSM-managed bastion host for private cluster access."),
    "alb_access_logs_enabled": Field(bool, False, "ALB access logs to a dedicated bucket."),
    "bastion_ssh_cidrs": Field(list, [], "CIDRs allowed to SSH to the bastion; empty means no SSH (SSM Session Manager only)."),
    # edge and TLS
    "tls_certificate_source": Field(str, "none", "none: HTTP only; acm: ALB/NGINX terminate TLS with ACM; letsencrypt: cert-manager in the cluster (Istio/Envoy).", ("none", "acm", "letsencrypt")),
    "langsmith_domain": Field(str, "", "Public hostname of LangSmith; with no acm_certificate_arn, a Route 53 zone and ACM certificate are made for it."),
    "acm_certificate_arn": Field(str, "", "Bring-your-own ACM certificate ARN."),
    "letsencrypt_email": Field(str, "", "ACME account email (tls_certificate_source letsencrypt)."),
    "enable_nginx_ingress": Field(bool, False, "Serve through ingress-nginx behind the ALB."),
    "enable_envoy_gateway": Field(bool, False, "Serve through Envoy Gateway behind the ALB."),
    "enable_istio_gateway": Field(bool, False, "Serve through an Istio ingress gateway behind the ALB."),
    "alb_scheme": Field(str, "internet-facing", "internet-facing: ALB in the public subnets; internal: in the private subnets.", ("internet-facing", "internal")),
    "alb_allowed_cidr_blocks": Field(list, ["0.0.0.0/0"], "CIDRs the ALB accepts HTTP (and HTTPS) from."),
    "cert_manager_issuer": Field(str, "", "Name of your own cert-manager ClusterIssuer (ACM Private CA, Vault, Venafi, ...) to use instead of Let's Encrypt."),
    "enable_split_dataplane": Field(bool, False, "Agent pods in a separate langsmith-agents namespace, routed through the shared gateway (Envoy or Istio only)."),
    # application
    "deploy_langsmith": Field(bool, True, "Install the LangSmith Helm chart."),
    "enable_langsmith_deployments": Field(bool, False, "The LangSmith Deployments add-on (host-backend, listener, operator); without a gateway it serves through ingress-nginx behind the ALB (agents are routed by the chart's shared Ingress)."),
    "langsmith_sizing": Field(str, "production", "Resource profile of the LangSmith pods.", ("dev", "production", "production-large")),
    "langsmith_admin_email": Field(str, "", "Email of the initial org admin; default admin@<langsmith_domain>, or admin@langsmith.local without a domain."),
    # trying it out
    "sandbox": Field(bool, False, "Run against the embedded simulator instead of AWS (no account, no cost); see the README."),
    # sections filled in by later features
    "state": Field(dict, {}, "Where the state lives: {backend: local, path} (default state/{deployment}.json) or {backend: s3, bucket, key, region, lease_seconds}."),
    "kubernetes": Field(dict, {}, "How to reach the cluster: {kubeconfig, context} override the EKS endpoint and token."),
    "charts": Field(dict, {}, "Per-release chart source overrides: {<release>: {repo, chart, version}}."),
    "chart_mirror": Field(str, "", f"Directory of <chart>-<version>.tgz looked in before the upstream repositories; falls back to ${MIRROR_ENVIRONMENT}."),
}

# section -> key -> (type, allowed values or None)
SECTION_KEYS = {
    "state": {"backend": (str, ("local", "s3")), "path": (str, None), "bucket": (str, None), "key": (str, None),
              "region": (str, None), "lease_seconds": (int, None)},
    "kubernetes": {"kubeconfig": (str, None), "context": (str, None)},
}
CHART_KEYS = ("repo", "chart", "version")

NAME_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
# Every name is {name_prefix}-{environment}-...; what AWS refuses in such names (botocore
# model docs): RDS instance and snapshot ids, ElastiCache replication group ids and CloudTrail
# names "can't end with a hyphen or contain two consecutive hyphens" (a prefix ending in `-`
# gives `--`); security group names "can't start with sg-"; ALB names "must not begin with
# internal-"; S3 bucket names must not start with xn--, sthree- or amzn-s3-demo- (S3 user
# guide, "General purpose bucket naming rules").
RESERVED_NAME_STARTS = {"sg-": "security group", "internal-": "load balancer", "xn--": "S3 bucket",
                        "sthree-": "S3 bucket", "amzn-s3-demo-": "S3 bucket"}
ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
ACM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[a-zA-Z0-9-]+$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")


# RDS refuses General Purpose SSD volumes under 20 GiB ("Invalid storage size"), so the
# spec's 10 GB default is raised to that floor rather than failing the apply.
GP3_MIN_GIB = 20

# The VPC is carved into 32 equal blocks (/21 in a /16): private subnets take blocks 0-2,
# public subnets 5-7, the firewall subnet block 8, as in the reference.
PRIVATE_BLOCKS, PUBLIC_BLOCKS, FIREWALL_BLOCK = slice(0, 3), slice(5, 8), 8


def partition_of(region: str) -> str:
    """The ARN partition a region belongs to: aws-cn (China), aws-us-gov (GovCloud) or aws."""
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def network_blocks(cidr: str) -> list[str]:
    network = ipaddress.ip_network(cidr)
    return [str(block) for block in network.subnets(new_prefix=network.prefixlen + 5)]


class Config(dict):
    """The validated config: a dict of every SCHEMA key, plus derived names."""

    @property
    def deployment(self) -> str:
        return f"{self['name_prefix']}-{self['environment']}"

    @property
    def cluster_name(self) -> str:
        """The EKS cluster's name; subnets are tagged for it before it exists."""
        return f"{self.deployment}-eks"

    @property
    def gateway(self) -> str:
        """alb, nginx, envoy or istio: what serves traffic behind the load balancer. The
        Deployments add-on routes each agent through the chart's shared Ingress (or a Gateway or
        VirtualService), which our ALB cannot serve itself, so without a gateway it brings nginx."""
        for key, name in zip(GATEWAY_KEYS, ("nginx", "envoy", "istio")):
            if self[key]:
                return name
        return "nginx" if self["enable_langsmith_deployments"] else "alb"

    @property
    def firewall_subnet_cidr(self) -> str:
        return self["firewall_subnet_cidr"] or network_blocks(self["vpc_cidr"])[FIREWALL_BLOCK]

    @property
    def ssm_prefix(self) -> str:
        return f"/langsmith/{self.deployment}/"


def load(path: str, environ: dict | None = None) -> Config:
    """Read and validate a YAML config file; raise ConfigError listing every problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError([f"config file {path!r} not found: pass the path of a YAML config (see config/ for examples)"])
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path!r} is not valid YAML: {exc}"])
    return validate(raw, environ if environ is not None else os.environ)


def validate(raw: Any, environ) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["the config must be a YAML mapping of keys to values (see config/minimal.yaml)"])
    problems: list[str] = []
    for key in raw:
        if key not in SCHEMA:
            problems.append(f"{key}: unknown key{_suggest(key, SCHEMA)}; remove it or fix the spelling")
    cfg = Config()
    for key, field in SCHEMA.items():
        value = raw.get(key, field.default)
        if value is None and field.default is None:
            cfg[key] = None
            continue
        if not _type_ok(value, field.type):
            problems.append(f"{key}: expected {_type_name(field.type)}, got {value!r}")
            cfg[key] = field.default
            continue
        if field.choices and value not in field.choices:
            problems.append(f"{key}: {value!r} is not one of {', '.join(field.choices)}")
        cfg[key] = value
    if not cfg.get("region"):
        cfg["region"] = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if not cfg.get("chart_mirror"):
        cfg["chart_mirror"] = environ.get(MIRROR_ENVIRONMENT, "")
    problems += _check_values(cfg) + _check_combinations(cfg) + _check_sections(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _check_values(cfg: Config) -> list[str]:
    problems = []
    prefix = cfg["name_prefix"]
    if not prefix:
        problems.append("name_prefix: required; set e.g. `name_prefix: langsmith` (1-15 lowercase letters, digits, hyphens)")
    elif not NAME_PREFIX_RE.match(prefix):
        problems.append(f"name_prefix: {prefix!r} must be 1-15 characters of lowercase letters, digits and hyphens, starting with a letter")
    else:
        problems += _check_name_prefix(prefix, f"{prefix}-{cfg['environment']}")
    if not ENVIRONMENT_RE.match(cfg["environment"]):
        problems.append(f"environment: {cfg['environment']!r} must be 1-10 lowercase letters or digits, starting with a letter (e.g. dev, prod)")
    if not cfg["region"]:
        problems.append("region: not set; add `region: us-west-2` (or your region) to the config, or export AWS_REGION")
    elif not REGION_RE.match(cfg["region"]):
        problems.append(f"region: {cfg['region']!r} is not an AWS region name like us-west-2")
    for key, value in cfg["tags"].items():
        if not isinstance(key, str) or not isinstance(value, str):
            problems.append(f"tags: {key!r}: tag keys and values must be strings (quote numbers and booleans)")
        elif key.startswith(("aws:", "provisioner:")) or key == "Name":
            problems.append(f"tags: {key!r} is reserved (aws:*, provisioner:*, Name are set by the provisioner); rename it")
    try:
        network = ipaddress.ip_network(cfg["vpc_cidr"])
        if not 16 <= network.prefixlen <= 20:
            problems.append(f"vpc_cidr: {cfg['vpc_cidr']!r} must have a prefix between /16 and /20 so six subnets fit")
        problems += _check_firewall_subnet(cfg["firewall_subnet_cidr"], network)
    except ValueError:
        problems.append(f"vpc_cidr: {cfg['vpc_cidr']!r} is not a network CIDR like 10.0.0.0/16")
    for key, low, high in (("postgres_allocated_storage", 5, 65536), ("postgres_max_allocated_storage", 5, 65536),
                           ("postgres_backup_retention_days", 0, 35), ("s3_ttl_short_days", 1, 36500),
                           ("s3_ttl_long_days", 1, 36500), ("node_min_size", 1, 450), ("node_max_size", 1, 450)):
        if not low <= cfg[key] <= high:
            problems.append(f"{key}: {cfg[key]} is out of range; use a number from {low} to {high}")
    # RDS: InvalidParameterCombination "The maximum allocated storage must be increased by at
    # least 10 percent" over the allocated storage (raised to the gp3 floor first).
    storage = max(cfg["postgres_allocated_storage"], GP3_MIN_GIB)
    least = (storage * 11 + 9) // 10  # 110%, rounded up, in whole GiB
    if cfg["postgres_source"] == "external" and cfg["postgres_max_allocated_storage"] < least:
        problems.append(f"postgres_max_allocated_storage: {cfg['postgres_max_allocated_storage']} must be at least "
                        f"{least} (RDS wants it 10% above the {storage} GiB allocated; gp3 "
                        "storage starts at 20); raise it")
    if cfg["node_min_size"] > cfg["node_max_size"]:
        problems.append(f"node_min_size: {cfg['node_min_size']} is above node_max_size {cfg['node_max_size']}; lower it or raise node_max_size")
    if not re.match(r"^[0-9]+\.[0-9]+$", cfg["eks_cluster_version"]):
        problems.append(f"eks_cluster_version: {cfg['eks_cluster_version']!r} must look like 1.34")
    if cfg["acm_certificate_arn"] and not ACM_ARN_RE.match(cfg["acm_certificate_arn"]):
        problems.append("acm_certificate_arn: not an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)")
    domain = cfg["langsmith_domain"]
    if domain.startswith("*."):
        problems.append(f"langsmith_domain: {domain!r} is a wildcard; give the hostname itself (certificates cover the "
                        "apex only: wildcard SANs fail CAA checks)")
    elif domain and not DOMAIN_RE.match(domain):
        problems.append(f"langsmith_domain: {domain!r} is not a hostname like langsmith.example.com")
    for key in ("letsencrypt_email", "langsmith_admin_email"):
        if cfg[key] and not EMAIL_RE.match(cfg[key]):
            problems.append(f"{key}: {cfg[key]!r} is not an email address")
    for key in ("alb_allowed_cidr_blocks", "bastion_ssh_cidrs"):
        for cidr in cfg[key] if isinstance(cfg[key], list) else []:
            try:
                ipaddress.ip_network(cidr)
            except (TypeError, ValueError):
                problems.append(f"{key}: {cidr!r} is not a CIDR like 203.0.113.0/24")
    if cfg["enable_split_dataplane"] and cfg.gateway not in ("envoy", "istio"):
        problems.append("enable_split_dataplane: needs enable_envoy_gateway or enable_istio_gateway (an Ingress cannot "
                        "route across namespaces); turn one on or remove enable_split_dataplane")
    if cfg["cert_manager_issuer"] and cfg["tls_certificate_source"] != "letsencrypt":
        problems.append("cert_manager_issuer: only used with tls_certificate_source letsencrypt (in-cluster TLS)")
    for key in ("private_subnets", "public_subnets", "firewall_allowed_fqdns"):
        if not all(isinstance(item, str) and item for item in cfg[key]):
            problems.append(f"{key}: must be a list of non-empty strings")
    return problems


def _check_name_prefix(prefix: str, deployment: str) -> list[str]:
    if "--" in prefix or prefix.endswith("-"):
        return [f"name_prefix: {prefix!r} ends with a hyphen or holds two in a row, which RDS, ElastiCache and "
                f"CloudTrail refuse in {deployment}-...; use e.g. {re.sub('-+', '-', prefix).strip('-')!r}"]
    reserved = next((start for start in RESERVED_NAME_STARTS if deployment.startswith(start)), None)
    if reserved:
        return [f"name_prefix: {prefix!r} makes names start with {reserved!r}, which AWS reserves "
                f"({RESERVED_NAME_STARTS[reserved]} names); choose another prefix"]
    return []


def _check_firewall_subnet(cidr: str, vpc) -> list[str]:
    if not cidr:
        return []
    try:
        subnet = ipaddress.ip_network(cidr)
    except ValueError:
        return [f"firewall_subnet_cidr: {cidr!r} is not a network CIDR like 10.0.64.0/21"]
    if not subnet.subnet_of(vpc):
        return [f"firewall_subnet_cidr: {cidr} is outside vpc_cidr {vpc}; pick a block inside it"]
    blocks = network_blocks(str(vpc))
    taken = [ipaddress.ip_network(b) for b in blocks[PRIVATE_BLOCKS] + blocks[PUBLIC_BLOCKS]]
    clash = next((block for block in taken if subnet.overlaps(block)), None)
    if clash:
        return [f"firewall_subnet_cidr: {cidr} overlaps the subnet {clash}; leave it empty for {blocks[FIREWALL_BLOCK]}"]
    return []


def _check_combinations(cfg: Config) -> list[str]:
    problems = []
    gateways = [key for key in GATEWAY_KEYS if cfg[key]]
    if len(gateways) > 1:
        problems.append(f"{gateways[1]}: at most one gateway can be enabled, but {' and '.join(gateways)} are; keep one")
    tls, gateway = cfg["tls_certificate_source"], cfg.gateway
    allowed = {"acm": ("alb", "nginx"), "letsencrypt": ("istio", "envoy")}
    if tls in allowed and gateway not in allowed[tls]:
        fix = {"acm": "use the plain ALB or enable_nginx_ingress, or set tls_certificate_source letsencrypt",
               "letsencrypt": "enable_envoy_gateway or enable_istio_gateway, or set tls_certificate_source acm"}[tls]
        problems.append(f"tls_certificate_source: {tls} does not work with the {gateway} gateway; {fix}")
    if tls == "acm" and not (cfg["langsmith_domain"] or cfg["acm_certificate_arn"]):
        problems.append("tls_certificate_source: acm needs langsmith_domain (a certificate is requested) or acm_certificate_arn")
    if tls == "letsencrypt":
        if not cfg["letsencrypt_email"]:
            problems.append("letsencrypt_email: required when tls_certificate_source is letsencrypt")
        if not cfg["langsmith_domain"]:
            problems.append("langsmith_domain: required when tls_certificate_source is letsencrypt (the certificate's name)")
        # TLS passes through a Network Load Balancer to the gateway: AWS WAF attaches to an
        # ALB, not an NLB, and NLB access logs cover TLS listeners only (ELB docs).
        for key, what in (("create_waf", "AWS WAF attaches to Application Load Balancers"),
                          ("alb_access_logs_enabled", "access logs need an ALB")):
            if cfg[key]:
                problems.append(f"{key}: with tls_certificate_source letsencrypt TLS passes through a Network Load "
                                f"Balancer to the gateway, and {what}; turn {key} off, or use "
                                "tls_certificate_source acm with the ALB or NGINX")
    if cfg["create_firewall"] and not cfg["create_vpc"]:
        problems.append("create_firewall: needs create_vpc true (the firewall rewires the VPC's routes); turn one of them off/on")
    if cfg["sandbox"] and cfg["state"].get("backend") == "s3":
        problems.append("state.backend: the sandbox keeps its state in a local file beside its simulator; remove "
                        "`backend: s3` or `sandbox: true`")
    if cfg["enable_langsmith_deployments"] and not cfg["deploy_langsmith"]:
        problems.append("enable_langsmith_deployments: needs deploy_langsmith true")
    if cfg["create_vpc"]:
        for key in ("vpc_id", "private_subnets", "public_subnets"):
            if cfg[key]:
                problems.append(f"{key}: only used with create_vpc false; remove it or set create_vpc: false")
    else:
        if not cfg["vpc_id"]:
            problems.append("vpc_id: required when create_vpc is false (the id of your VPC, vpc-...)")
        for key in ("private_subnets", "public_subnets"):
            if len(cfg[key]) < 2:
                problems.append(f"{key}: give at least two subnet ids in different AZs when create_vpc is false")
    return problems


def _check_sections(cfg: Config) -> list[str]:
    problems = []
    for section, allowed in SECTION_KEYS.items():
        for key, value in cfg[section].items():
            if key not in allowed:
                problems.append(f"{section}.{key}: unknown key{_suggest(key, allowed)}")
                continue
            expected, choices = allowed[key]
            if not _type_ok(value, expected):
                problems.append(f"{section}.{key}: expected {_type_name(expected)}, got {value!r}")
            elif choices and value not in choices:
                problems.append(f"{section}.{key}: {value!r} is not one of {', '.join(choices)}")
    state = cfg["state"]
    if state.get("backend") == "s3":
        if not state.get("bucket"):
            problems.append("state.bucket: required with backend s3 (a versioned bucket for the state)")
        if "path" in state:
            problems.append("state.path: only for backend local; use state.key with backend s3")
    else:
        for key in ("bucket", "key", "region", "lease_seconds"):
            if key in state:
                problems.append(f"state.{key}: only used with `backend: s3`; add it or remove this key")
    if state.get("lease_seconds") is not None and not 5 <= state["lease_seconds"] <= 3600:
        problems.append("state.lease_seconds: use a number of seconds from 5 to 3600")
    for release, source in cfg["charts"].items():
        if release not in HELM_RELEASES:
            problems.append(f"charts.{release}: unknown release{_suggest(release, HELM_RELEASES)}; releases are {', '.join(HELM_RELEASES)}")
        elif not isinstance(source, dict) or any(key not in CHART_KEYS for key in source):
            problems.append(f"charts.{release}: expected a mapping with keys among {', '.join(CHART_KEYS)}")
        elif _missing_local_chart(source):
            problems.append(f"charts.{release}.chart: {source['chart']!r} has no Chart.yaml; give a chart directory, "
                            "a packaged chart (.tgz), an oci:// reference, or a chart name together with `repo`")
    mirror = cfg["chart_mirror"]
    if mirror and not os.path.isdir(os.path.expanduser(mirror)):
        problems.append(f"chart_mirror: directory {mirror!r} not found (from the config or ${MIRROR_ENVIRONMENT}); point "
                        "it at a directory of <chart>-<version>.tgz as `helm pull` saves them, or remove it to use "
                        "the upstream repositories")
    kubeconfig = cfg["kubernetes"].get("kubeconfig")
    if isinstance(kubeconfig, str) and not os.path.isfile(os.path.expanduser(kubeconfig)):
        problems.append(f"kubernetes.kubeconfig: file {kubeconfig!r} not found; point it at a kubeconfig or remove "
                        "the key to reach EKS directly")
    return problems


def _missing_local_chart(source: dict) -> bool:
    chart = source.get("chart")
    if not isinstance(chart, str) or source.get("repo") or chart.startswith("oci://"):
        return False
    path = os.path.expanduser(chart)
    if chart.endswith(".tgz"):
        return not os.path.isfile(path)
    return not os.path.isfile(os.path.join(path, "Chart.yaml"))


def _suggest(key, known) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(value, expected) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected) -> str:
    return {str: "a string", bool: "true or false", int: "a whole number", list: "a list", dict: "a mapping"}[expected]
