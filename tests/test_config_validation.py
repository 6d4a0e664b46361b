"""Bad input: exit code 2, a message naming the key and the fix, and no AWS request."""

from __future__ import annotations

import glob
import http.server
import os
import threading

import pytest
import yaml

from provisioner import config as config_module
from provisioner.config import SCHEMA
from tests.conftest import run_cli, write_config


@pytest.fixture
def request_counter(monkeypatch, tmp_path):
    """An HTTP endpoint standing in for AWS that only counts what reaches it."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self):
            hits.append(self.path)
            self.send_response(500)
            self.end_headers()
        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.chdir(tmp_path)
    yield hits
    server.shutdown()


BAD_CONFIGS = [
    ({"name_prefix": "Acme"}, "name_prefix", "lowercase"),
    ({"name_prefix": "a-very-long-prefix-x"}, "name_prefix", "1-15"),
    ({"name_prefix": "9lives"}, "name_prefix", "starting with a letter"),
    ({"name_prefix": ""}, "name_prefix", "required"),
    ({"environment": "Prod!"}, "environment", "lowercase"),
    ({"region": "mars"}, "region", "region name"),
    ({"vpc_cidr": "10.0.0.0/8"}, "vpc_cidr", "/16 and /20"),
    ({"vpc_cidr": "banana"}, "vpc_cidr", "not a network CIDR"),
    ({"create_vpc": "yes"}, "create_vpc", "true or false"),
    ({"postgres_allocated_storage": 2}, "postgres_allocated_storage", "from 5 to 65536"),
    ({"postgres_source": "rds"}, "postgres_source", "external, in-cluster"),
    ({"redis_source": "memcached"}, "redis_source", "external, in-cluster"),
    ({"node_min_size": 5, "node_max_size": 3}, "node_min_size", "above node_max_size"),
    ({"eks_cluster_version": "v1"}, "eks_cluster_version", "1.34"),
    ({"enable_nginx_ingress": True, "enable_istio_gateway": True}, "enable_istio_gateway", "at most one gateway"),
    ({"enable_envoy_gateway": True, "enable_nginx_ingress": True}, "enable_envoy_gateway", "at most one gateway"),
    ({"tls_certificate_source": "acm", "langsmith_domain": "ls.example.com", "enable_envoy_gateway": True},
     "tls_certificate_source", "does not work with the envoy gateway"),
    ({"tls_certificate_source": "acm", "langsmith_domain": "ls.example.com", "enable_istio_gateway": True},
     "tls_certificate_source", "does not work with the istio gateway"),
    ({"tls_certificate_source": "letsencrypt", "letsencrypt_email": "a@b.co", "langsmith_domain": "x.example.com"},
     "tls_certificate_source", "does not work with the alb gateway"),
    ({"tls_certificate_source": "letsencrypt", "letsencrypt_email": "a@b.co", "langsmith_domain": "x.example.com",
      "enable_nginx_ingress": True}, "tls_certificate_source", "does not work with the nginx gateway"),
    ({"tls_certificate_source": "acm"}, "tls_certificate_source", "langsmith_domain"),
    ({"tls_certificate_source": "letsencrypt", "enable_envoy_gateway": True, "langsmith_domain": "x.example.com"},
     "letsencrypt_email", "required"),
    ({"tls_certificate_source": "letsencrypt", "enable_istio_gateway": True, "letsencrypt_email": "a@b.co"},
     "langsmith_domain", "required"),
    ({"tls_certificate_source": "letsencrypt", "enable_envoy_gateway": True, "letsencrypt_email": "a@b.co",
      "langsmith_domain": "x.example.com", "create_waf": True}, "create_waf", "Network Load Balancer"),
    ({"tls_certificate_source": "letsencrypt", "enable_istio_gateway": True, "letsencrypt_email": "a@b.co",
      "langsmith_domain": "x.example.com", "alb_access_logs_enabled": True}, "alb_access_logs_enabled",
     "access logs need an ALB"),
    ({"tls_certificate_source": "https"}, "tls_certificate_source", "none, acm, letsencrypt"),
    ({"letsencrypt_email": "not-an-email"}, "letsencrypt_email", "not an email"),
    ({"langsmith_domain": "*.example.com"}, "langsmith_domain", "apex only"),
    ({"langsmith_domain": "not a host"}, "langsmith_domain", "not a hostname"),
    ({"state": {"backend": "s3"}}, "state.bucket", "required with backend s3"),
    ({"state": {"backend": "s3", "bucket": "b", "path": "x.json"}}, "state.path", "only for backend local"),
    ({"state": {"bucket": "b"}}, "state.bucket", "only used with `backend: s3`"),
    ({"state": {"backend": "s3", "bucket": "b", "lease_seconds": 1}}, "state.lease_seconds", "from 5 to 3600"),
    ({"acm_certificate_arn": "arn:aws:iam::123:role/x"}, "acm_certificate_arn", "not an ACM certificate ARN"),
    ({"create_firewall": True, "create_vpc": False, "vpc_id": "vpc-1", "private_subnets": ["s-1", "s-2"],
      "public_subnets": ["s-3", "s-4"]}, "create_firewall", "needs create_vpc"),
    ({"create_vpc": False, "private_subnets": ["s-1", "s-2"], "public_subnets": ["s-3", "s-4"]}, "vpc_id", "required"),
    ({"create_vpc": False, "vpc_id": "vpc-1", "public_subnets": ["s-3", "s-4"]}, "private_subnets", "at least two"),
    ({"create_vpc": False, "vpc_id": "vpc-1", "private_subnets": ["s-1", "s-2"]}, "public_subnets", "at least two"),
    ({"vpc_id": "vpc-1"}, "vpc_id", "create_vpc: false"),
    ({"enable_langsmith_deployments": True, "deploy_langsmith": False}, "enable_langsmith_deployments",
     "needs deploy_langsmith"),
    ({"tags": {"provisioner:step": "x"}}, "tags", "reserved"),
    ({"tags": {"team": 7}}, "tags", "must be strings"),
    ({"postgres_instanse_class": "db.t3.small"}, "postgres_instanse_class", "did you mean 'postgres_instance_class'"),
    ({"state": {"backend": "ftp"}}, "state.backend", "not one of"),
    ({"state": {"bucket_name": "x"}}, "state.bucket_name", "unknown key"),
    ({"kubernetes": {"kubecfg": "/tmp/k"}}, "kubernetes.kubecfg", "did you mean 'kubeconfig'"),
    ({"charts": {"kedaa": {"version": "1"}}}, "charts.kedaa", "did you mean 'keda'"),
    ({"charts": {"keda": {"tag": "1"}}}, "charts.keda", "repo, chart, version"),
    # names AWS refuses (test_name_rules_are_the_ones_botocore_documents checks the sources)
    ({"name_prefix": "acme-"}, "name_prefix", "use e.g. 'acme'"),
    ({"name_prefix": "ac--me"}, "name_prefix", "two in a row"),
    ({"name_prefix": "sg"}, "name_prefix", "start with 'sg-'"),
    ({"name_prefix": "internal"}, "name_prefix", "start with 'internal-'"),
    ({"name_prefix": "sthree"}, "name_prefix", "start with 'sthree-'"),
    ({"name_prefix": "amzn-s3-demo"}, "name_prefix", "start with 'amzn-s3-demo-'"),
    ({"postgres_max_allocated_storage": 20}, "postgres_max_allocated_storage", "at least 22"),
    ({"postgres_allocated_storage": 100, "postgres_max_allocated_storage": 105}, "postgres_max_allocated_storage",
     "at least 110"),
]


@pytest.mark.parametrize("overrides,key,hint", BAD_CONFIGS, ids=[f"{c[1]}-{i}" for i, c in enumerate(BAD_CONFIGS)])
@pytest.mark.parametrize("command", ["apply", "plan"])
def test_bad_config_exits_2_naming_the_key_without_calling_aws(request_counter, tmp_path, overrides, key, hint,
                                                                 command):
    config = write_config(tmp_path / "bad.yaml", **overrides)
    args = [command, config] + (["--yes"] if command == "apply" else [])
    result = run_cli(*args)
    assert result.code == 2, result
    assert f"{key}:" in result.err and hint in result.err, result.err
    assert request_counter == []
    assert not os.path.exists(tmp_path / "state")


def test_every_problem_is_reported_at_once(request_counter, tmp_path):
    config = write_config(tmp_path / "bad.yaml", name_prefix="BAD", vpc_cidr="x", colour="blue")
    result = run_cli("plan", config)
    assert result.code == 2
    for key in ("name_prefix:", "vpc_cidr:", "colour:"):
        assert key in result.err
    assert request_counter == []


def test_missing_and_malformed_files_exit_2(request_counter, tmp_path):
    assert "not found" in run_cli("plan", str(tmp_path / "nope.yaml")).err
    (tmp_path / "broken.yaml").write_text("name_prefix: [unclosed\n")
    result = run_cli("plan", str(tmp_path / "broken.yaml"))
    assert result.code == 2 and "not valid YAML" in result.err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert run_cli("plan", str(tmp_path / "list.yaml")).code == 2
    assert request_counter == []


def test_region_falls_back_to_the_environment_and_is_required(request_counter, tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name_prefix": "acme"}))
    result = run_cli("apply", str(path), "--yes")
    assert result.code == 2 and "region:" in result.err and "AWS_REGION" in result.err
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert config_module.load(str(path))["region"] == "eu-west-1"
    assert request_counter == []


def test_bad_arguments_exit_2(request_counter, tmp_path):
    config = write_config(tmp_path / "c.yaml")
    assert run_cli("apply", config, "--parallelism", "0", "--yes").code == 2
    assert run_cli("launch", config).code == 2
    assert request_counter == []


def test_shipped_example_configs_are_valid(request_counter, monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    examples = sorted(glob.glob(os.path.join(root, "config", "**", "*.yaml"), recursive=True))
    assert len(examples) >= 5
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    for example in examples:
        result = run_cli("graph", example)
        assert result.code == 0, (example, result)
    assert request_counter == []


def test_readme_documents_every_config_key():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    missing = [key for key in SCHEMA if f"`{key}`" not in readme]
    assert missing == []


def test_name_rules_are_the_ones_botocore_documents():
    """Each refused name shape, against the constraint text in botocore's service models."""
    import re

    import botocore.session
    session = botocore.session.get_session()

    def doc(service, shape, member):
        text = session.get_service_model(service).shape_for(shape).members[member].documentation
        return " ".join(re.sub("<[^>]+>", " ", text).split())
    for service, shape, member in (("rds", "CreateDBInstanceMessage", "DBInstanceIdentifier"),
                                   ("rds", "DeleteDBInstanceMessage", "FinalDBSnapshotIdentifier")):
        assert "Can't end with a hyphen or contain two consecutive hyphens" in doc(service, shape, member)
    assert "cannot end with a hyphen or contain two consecutive hyphens" in doc(
        "elasticache", "CreateReplicationGroupMessage", "ReplicationGroupId")
    assert "my--namespace are not valid" in doc("cloudtrail", "CreateTrailRequest", "Name")
    assert "Can't start with sg-" in doc("ec2", "CreateSecurityGroupRequest", "GroupName")
    assert 'must not begin with "internal-"' in doc("elbv2", "CreateLoadBalancerInput", "Name")
    assert set(config_module.RESERVED_NAME_STARTS) == {"sg-", "internal-", "xn--", "sthree-", "amzn-s3-demo-"}
    good = config_module.validate({"name_prefix": "internalx", "region": "us-east-1"}, {})
    assert good.deployment == "internalx-dev"
