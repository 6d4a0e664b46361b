"""ElastiCache Redis in the private subnets (redis_source external).

TLS in transit, encryption at rest, and the AUTH token from the secrets step, read
at create time and passed straight to ElastiCache.
"""

from __future__ import annotations

from provisioner.errors import StepError
from provisioner.aws import if_exists
from provisioner.reaping import delete_with_retry
from provisioner.waiting import wait_until

from ._network import delete_security_group, ensure_security_group, security_group_findings
from .base import Finding, Step, register

PORT = 6379
EXPECTED_CREATE_SECONDS = 480


def group_id(config) -> str:
    return f"{config.deployment}-redis"


def describe_group(elasticache, replication_group_id: str) -> dict | None:
    found = if_exists(elasticache.describe_replication_groups, ReplicationGroupId=replication_group_id)
    return found["ReplicationGroups"][0] if found else None


@register
class Redis(Step):
    name = "redis"
    requires = ("vpc", "secrets")
    data_loss = "the ElastiCache replication group and the queued traces it holds"

    @staticmethod
    def enabled(config) -> bool:
        return config["redis_source"] == "external"

    def create(self, ctx) -> dict:
        elasticache, cfg, vpc = ctx.client("elasticache"), ctx.config, ctx.upstream("vpc")
        security_group = ensure_security_group(ctx, "redis-sg", "LangSmith Redis: 6379 from the VPC only",
                                               vpc["vpc_id"], [(PORT, vpc["vpc_cidr"])], vpc["vpc_cidr"])
        subnet_group = ctx.name("redis-subnets")
        ctx.ensure("cache_subnet_group", lambda: self._find_subnet_group(elasticache, subnet_group),
                   lambda: elasticache.create_cache_subnet_group(
                       CacheSubnetGroupName=subnet_group, SubnetIds=vpc["private_subnet_ids"],
                       CacheSubnetGroupDescription=f"LangSmith {cfg.deployment} private subnets",
                       Tags=ctx.tags.as_list("redis-subnets"))["CacheSubnetGroup"]["CacheSubnetGroupName"])
        rg_id = group_id(cfg)
        ctx.ensure("replication_group", lambda: rg_id if describe_group(elasticache, rg_id) else None,
                   lambda: elasticache.create_replication_group(
                       ReplicationGroupId=rg_id, ReplicationGroupDescription=f"LangSmith {cfg.deployment}",
                       Engine="redis", EngineVersion=cfg["redis_engine_version"], CacheNodeType=cfg["redis_node_type"],
                       NumCacheClusters=1, Port=PORT, CacheSubnetGroupName=subnet_group,
                       SecurityGroupIds=[security_group], TransitEncryptionEnabled=True,
                       AtRestEncryptionEnabled=True, AuthToken=ctx.secret_value("redis-auth-token"),
                       Tags=ctx.tags.as_list("redis"))["ReplicationGroup"]["ReplicationGroupId"])
        group = self._wait_available(ctx, elasticache, rg_id)
        if group.get("CacheNodeType") != cfg["redis_node_type"]:
            elasticache.modify_replication_group(ReplicationGroupId=rg_id, CacheNodeType=cfg["redis_node_type"],
                                                 ApplyImmediately=True)
            ctx.progress(f"node type changing to {cfg['redis_node_type']}")
            group = self._wait_available(ctx, elasticache, rg_id)
        endpoint = group["NodeGroups"][0]["PrimaryEndpoint"]
        return {"replication_group_id": rg_id, "address": endpoint["Address"], "port": endpoint["Port"],
                "tls": True, "security_group_id": security_group, "subnet_group": subnet_group,
                "auth_token_parameter": cfg.ssm_prefix + "redis-auth-token"}

    @staticmethod
    def _find_subnet_group(elasticache, name: str) -> str | None:
        return name if if_exists(elasticache.describe_cache_subnet_groups, CacheSubnetGroupName=name) else None

    @staticmethod
    def _wait_available(ctx, elasticache, rg_id: str) -> dict:
        def available():
            group = describe_group(elasticache, rg_id)
            if group is None or group["Status"] in ("deleting", "create-failed"):
                state = "gone" if group is None else group["Status"]
                raise StepError(f"replication group {rg_id} is {state}; apply again once it is deleted to recreate it")
            return group if group["Status"] == "available" else None
        return wait_until(available, what=f"replication group {rg_id}", expected_seconds=EXPECTED_CREATE_SECONDS,
                          timeout_seconds=3600, progress=ctx.progress)

    def verify(self, ctx) -> list[Finding]:
        elasticache, cfg = ctx.client("elasticache"), ctx.config
        findings = security_group_findings(ctx, "redis-sg", [(PORT, ctx.upstream("vpc").get("vpc_cidr"))],
                                           ctx.upstream("vpc").get("vpc_cidr"))
        if self._find_subnet_group(elasticache, ctx.name("redis-subnets")) is None:
            findings.append(Finding("cache subnet group", "missing", missing=True))
        group = describe_group(elasticache, group_id(cfg))
        label = f"replication group {group_id(cfg)}"
        if group is None:
            return findings + [Finding(label, "missing", missing=True)]
        ctx.fact(f"ElastiCache {group_id(cfg)} {group['Status']}, {group.get('CacheNodeType')}, TLS "
                 f"{'on' if group.get('TransitEncryptionEnabled') else 'OFF'}")
        expected = {"Status": "available", "CacheNodeType": cfg["redis_node_type"], "TransitEncryptionEnabled": True,
                    "AtRestEncryptionEnabled": True, "AuthTokenEnabled": True}
        return findings + [Finding(label, f"{key} is {group.get(key)}, expected {value}")
                           for key, value in expected.items() if group.get(key) != value]

    def destroy(self, ctx) -> None:
        elasticache, cfg = ctx.client("elasticache"), ctx.config
        rg_id = group_id(cfg)
        group = describe_group(elasticache, rg_id)
        if group is not None:
            if group["Status"] != "deleting":
                delete_with_retry(lambda: elasticache.delete_replication_group(ReplicationGroupId=rg_id),
                                  f"replication group {rg_id}", lambda: "", ctx.progress)
            wait_until(lambda: describe_group(elasticache, rg_id) is None,
                       what=f"replication group {rg_id} to be deleted", expected_seconds=300,
                       timeout_seconds=3600, progress=ctx.progress)
        ctx.record("replication_group", None)
        subnet_group = ctx.name("redis-subnets")
        if self._find_subnet_group(elasticache, subnet_group):
            delete_with_retry(lambda: elasticache.delete_cache_subnet_group(CacheSubnetGroupName=subnet_group),
                              f"cache subnet group {subnet_group}", lambda: "", ctx.progress)
        ctx.record("cache_subnet_group", None)
        delete_security_group(ctx, "redis-sg")
