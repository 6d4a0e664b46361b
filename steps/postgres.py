"""RDS PostgreSQL in the private subnets (postgres_source external).

Encrypted, never public, 7 days of backups, deletion protection on. The master
password is read from the secrets step's SSM parameter at create time and goes
straight to RDS. Destroy turns protection off and keeps a final snapshot unless the
config says to skip it.
"""

from __future__ import annotations

import datetime as dt

from botocore.exceptions import ClientError

from provisioner.config import GP3_MIN_GIB
from provisioner.errors import StepError
from provisioner.aws import if_exists
from provisioner.reaping import delete_with_retry
from provisioner.retry import Answer
from provisioner.waiting import wait_until

from ._network import delete_security_group, ensure_security_group, security_group_findings
from .base import Finding, Step, register

PORT = 5432
USERNAME = "langsmith"
DATABASE = "postgres"
EXPECTED_CREATE_SECONDS = 480
# DeleteDBInstance before the deletion-protection change landed: InvalidParameterCombination
# "Cannot delete protected DB Instance, please disable deletion protection and try again."
# (terraform-provider-aws internal/service/rds/instance.go re-issues the modify on it).
DELETION_PROTECTION_ON = Answer("InvalidParameterCombination", ("deletion pro",))
FAILED_STATES = {"failed", "incompatible-parameters", "incompatible-network", "incompatible-restore",
                 "inaccessible-encryption-credentials", "storage-full", "restore-error"}


def identifier(config) -> str:
    return f"{config.deployment}-pg"


def describe_instance(rds, db_id: str) -> dict | None:
    found = if_exists(rds.describe_db_instances, DBInstanceIdentifier=db_id)
    return found["DBInstances"][0] if found else None


def desired_settings(config) -> dict:
    """The instance settings apply converges; the keys are RDS's own field names."""
    storage = max(config["postgres_allocated_storage"], GP3_MIN_GIB)
    return {"DBInstanceClass": config["postgres_instance_class"],
            "AllocatedStorage": storage,
            "MaxAllocatedStorage": config["postgres_max_allocated_storage"],  # validated: >= 1.1 x storage
            "BackupRetentionPeriod": config["postgres_backup_retention_days"],
            "DeletionProtection": config["postgres_deletion_protection"]}


@register
class Postgres(Step):
    name = "postgres"
    requires = ("vpc", "secrets")
    data_loss = "the RDS instance and its databases (a final snapshot is kept unless postgres_skip_final_snapshot)"

    @staticmethod
    def enabled(config) -> bool:
        return config["postgres_source"] == "external"

    def create(self, ctx) -> dict:
        rds, cfg, vpc = ctx.client("rds"), ctx.config, ctx.upstream("vpc")
        group_id = ensure_security_group(ctx, "pg-sg", "LangSmith PostgreSQL: 5432 from the VPC only",
                                         vpc["vpc_id"], [(PORT, vpc["vpc_cidr"])], vpc["vpc_cidr"])
        subnet_group = ctx.name("pg-subnets")
        ctx.ensure("db_subnet_group", lambda: self._find_subnet_group(rds, subnet_group),
                   lambda: rds.create_db_subnet_group(
                       DBSubnetGroupName=subnet_group, SubnetIds=vpc["private_subnet_ids"],
                       DBSubnetGroupDescription=f"LangSmith {cfg.deployment} private subnets",
                       Tags=ctx.tags.as_list("pg-subnets"))["DBSubnetGroup"]["DBSubnetGroupName"])
        db_id = identifier(cfg)
        ctx.ensure("db_instance", lambda: db_id if describe_instance(rds, db_id) else None,
                   lambda: self._create_instance(ctx, rds, db_id, subnet_group, group_id))
        instance = self._wait_available(ctx, rds, db_id)
        changes = self._setting_changes(instance, cfg)
        if changes:
            rds.modify_db_instance(DBInstanceIdentifier=db_id, ApplyImmediately=True, **changes)
            ctx.progress(f"modified {', '.join(changes)}")
            instance = self._wait_available(ctx, rds, db_id)
        return {"identifier": db_id, "arn": instance["DBInstanceArn"], "address": instance["Endpoint"]["Address"],
                "port": instance["Endpoint"]["Port"], "database": DATABASE, "username": USERNAME,
                "security_group_id": group_id, "subnet_group": subnet_group,
                "password_parameter": cfg.ssm_prefix + "postgres-password"}

    @staticmethod
    def _find_subnet_group(rds, name: str) -> str | None:
        return name if if_exists(rds.describe_db_subnet_groups, DBSubnetGroupName=name) else None

    @staticmethod
    def _create_instance(ctx, rds, db_id, subnet_group, group_id) -> str:
        cfg = ctx.config
        rds.create_db_instance(
            DBInstanceIdentifier=db_id, Engine="postgres", EngineVersion=cfg["postgres_engine_version"],
            DBName=DATABASE, MasterUsername=USERNAME, MasterUserPassword=ctx.secret_value("postgres-password"),
            DBSubnetGroupName=subnet_group, VpcSecurityGroupIds=[group_id], Port=PORT, StorageType="gp3",
            StorageEncrypted=True, PubliclyAccessible=False, MultiAZ=False, AutoMinorVersionUpgrade=True,
            EnableIAMDatabaseAuthentication=True, CopyTagsToSnapshot=False,
            Tags=ctx.tags.as_list("pg"), **desired_settings(cfg))
        return db_id

    @staticmethod
    def _wait_available(ctx, rds, db_id) -> dict:
        def available():
            instance = describe_instance(rds, db_id)
            if instance is None:
                raise StepError(f"RDS instance {db_id} disappeared while waiting for it; apply again to recreate it")
            if instance["DBInstanceStatus"] in FAILED_STATES:
                raise StepError(f"RDS instance {db_id} is {instance['DBInstanceStatus']}; see the RDS events for it")
            return instance if instance["DBInstanceStatus"] == "available" else None
        return wait_until(available, what=f"RDS instance {db_id}", expected_seconds=EXPECTED_CREATE_SECONDS,
                          timeout_seconds=3600, progress=ctx.progress)

    @staticmethod
    def _setting_changes(instance: dict, config) -> dict:
        changes = {key: value for key, value in desired_settings(config).items() if instance.get(key) != value}
        if changes.get("AllocatedStorage", instance["AllocatedStorage"]) < instance["AllocatedStorage"]:
            changes.pop("AllocatedStorage")  # RDS storage only grows; autoscaling may have grown it
        return changes

    def verify(self, ctx) -> list[Finding]:
        rds, cfg = ctx.client("rds"), ctx.config
        findings = security_group_findings(ctx, "pg-sg", [(PORT, ctx.upstream("vpc").get("vpc_cidr"))],
                                           ctx.upstream("vpc").get("vpc_cidr"))
        if self._find_subnet_group(rds, ctx.name("pg-subnets")) is None:
            findings.append(Finding("DB subnet group", "missing", missing=True))
        instance = describe_instance(rds, identifier(cfg))
        label = f"RDS instance {identifier(cfg)}"
        if instance is None:
            return findings + [Finding(label, "missing", missing=True)]
        ctx.fact(f"RDS {identifier(cfg)} {instance['DBInstanceStatus']}, PostgreSQL {instance.get('EngineVersion')} at "
                 f"{instance.get('Endpoint', {}).get('Address')}:{instance.get('Endpoint', {}).get('Port')}")
        if instance["DBInstanceStatus"] != "available":
            findings.append(Finding(label, f"status is {instance['DBInstanceStatus']}"))
        findings += [Finding(label, f"{key} is {instance.get(key)}, config wants {value}")
                     for key, value in self._setting_changes(instance, cfg).items()]
        if not instance.get("StorageEncrypted"):
            findings.append(Finding(label, "storage is not encrypted (needs a snapshot restore to fix)"))
        if instance.get("PubliclyAccessible"):
            findings.append(Finding(label, "is publicly accessible"))
        return findings

    @staticmethod
    def _final_snapshot(ctx, rds, instance: dict) -> dict:
        """DeleteDBInstance's snapshot arguments. The name carries the time to the second and
        must be new (DBSnapshotAlreadyExists otherwise): a name already taken by a snapshot of
        this very instance (an earlier attempt) means it is kept, so none is taken again; one
        taken by another instance of the same identifier gets a finer stamp."""
        if ctx.config["postgres_skip_final_snapshot"]:
            return {"SkipFinalSnapshot": True}
        now = dt.datetime.now(dt.timezone.utc)
        for stamp in (now.strftime("%Y%m%d%H%M%S"), now.strftime("%Y%m%d%H%M%S%f")):
            name = f"{instance['DBInstanceIdentifier']}-final-{stamp}"
            taken = if_exists(rds.describe_db_snapshots, DBSnapshotIdentifier=name)
            if not taken:
                ctx.progress(f"keeping final snapshot {name}")
                return {"SkipFinalSnapshot": False, "FinalDBSnapshotIdentifier": name}
            if taken["DBSnapshots"][0].get("DbiResourceId") == instance.get("DbiResourceId"):
                ctx.progress(f"final snapshot {name} already kept")
                return {"SkipFinalSnapshot": True}
        raise StepError(f"final snapshot names for {instance['DBInstanceIdentifier']} are taken; try again")

    def destroy(self, ctx) -> None:
        rds, cfg = ctx.client("rds"), ctx.config
        db_id = identifier(cfg)
        instance = describe_instance(rds, db_id)
        if instance is not None and instance["DBInstanceStatus"] != "deleting":
            final = self._final_snapshot(ctx, rds, instance)

            def unprotect():
                rds.modify_db_instance(DBInstanceIdentifier=db_id, DeletionProtection=False, ApplyImmediately=True)

            def delete():
                try:
                    rds.delete_db_instance(DBInstanceIdentifier=db_id, **final)
                except ClientError as exc:
                    if DELETION_PROTECTION_ON.matches(exc):  # the modify has not landed: ask again, retry
                        unprotect()
                    raise
            if instance.get("DeletionProtection"):  # refused while backing up or modifying: retried
                delete_with_retry(unprotect, f"deletion protection of RDS instance {db_id}", lambda: "",
                                  ctx.progress)
            delete_with_retry(delete, f"RDS instance {db_id}", lambda: "", ctx.progress)
        if instance is not None:
            wait_until(lambda: describe_instance(rds, db_id) is None, what=f"RDS instance {db_id} to be deleted",
                       expected_seconds=300, timeout_seconds=3600, progress=ctx.progress)
        ctx.record("db_instance", None)
        subnet_group = ctx.name("pg-subnets")
        if self._find_subnet_group(rds, subnet_group):
            delete_with_retry(lambda: rds.delete_db_subnet_group(DBSubnetGroupName=subnet_group),
                              f"DB subnet group {subnet_group}", lambda: "", ctx.progress)
        ctx.record("db_subnet_group", None)
        delete_security_group(ctx, "pg-sg")
