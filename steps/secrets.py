"""Generated secrets as SSM SecureString parameters under /langsmith/{deployment}/.

Values are generated here, written once and never rotated by a re-apply (rotating the
API key salt or JWT secret would invalidate every key and session). The state and the
outputs hold parameter names only. The license key comes from LANGSMITH_LICENSE_KEY or
a parameter the operator put there.
"""

from __future__ import annotations

import base64
import os
import secrets as random

from botocore.exceptions import ClientError

from provisioner.aws import not_found
from provisioner.tags import DEPLOYMENT_TAG, tag_dict

from .base import Finding, Step, register

LICENSE_LEAF = "langsmith-license-key"
LICENSE_ENV = "LANGSMITH_LICENSE_KEY"


def _base64_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _fernet_key() -> str:
    """A Fernet key: 32 random bytes, url-safe base64 (what cryptography's Fernet.generate_key()
    makes, and what the chart tells users to generate for its encryption keys in values.yaml)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _admin_password() -> str:
    """At least 12 characters with a lowercase, an uppercase, a digit and a symbol, as the chart asks."""
    return random.token_urlsafe(18) + random.choice("abcdefghjkmnpqrstuvwxyz") + \
        random.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + random.choice("23456789") + random.choice("!#%+-.:?@^_~")


# Postgres: no / @ " ' or space (RDS rule); Redis AUTH: 16-128 printable, no @ " /.
GENERATORS = {
    "postgres-password": lambda: random.token_urlsafe(24),
    # The stores the LangSmith chart runs itself (its defaults are "password" and "postgres").
    "clickhouse-password": lambda: random.token_urlsafe(24),
    "insights-postgres-password": lambda: random.token_urlsafe(24),
    "polly-postgres-password": lambda: random.token_urlsafe(24),
    "redis-auth-token": lambda: random.token_hex(32),
    "langsmith-api-key-salt": _base64_secret,
    "langsmith-jwt-secret": _base64_secret,
    "langsmith-admin-password": _admin_password,
    # Insights and Polly are on in the chart and read these from langsmith-config with optional: false;
    # rotating one would make what they encrypted unreadable.
    "langsmith-insights-encryption-key": _fernet_key,
    "langsmith-polly-encryption-key": _fernet_key,
}


@register
class Secrets(Step):
    name = "secrets"

    def create(self, ctx) -> dict:
        ssm, prefix = ctx.client("ssm"), ctx.config.ssm_prefix
        existing = self._existing(ctx)
        for leaf, generate in GENERATORS.items():
            if leaf not in existing:
                self._put_new(ctx, leaf, generate())
            ctx.record(f"parameter/{leaf}", prefix + leaf)
        license_key = os.environ.get(LICENSE_ENV)
        if license_key:
            if LICENSE_LEAF not in existing:
                self._put_new(ctx, LICENSE_LEAF, license_key)
            elif ctx.secret_value(LICENSE_LEAF) != license_key:
                ssm.put_parameter(Name=prefix + LICENSE_LEAF, Value=license_key, Type="SecureString", Overwrite=True)
                ctx.progress(f"license key updated from {LICENSE_ENV}")
        elif LICENSE_LEAF not in existing:
            ctx.progress(f"warning: no license key; export {LICENSE_ENV} (or put {prefix}{LICENSE_LEAF}) before "
                         "LangSmith is installed")
        has_license = bool(license_key) or LICENSE_LEAF in existing
        if has_license:
            ctx.record(f"parameter/{LICENSE_LEAF}", prefix + LICENSE_LEAF)
        names = {leaf: prefix + leaf for leaf in [*GENERATORS, *([LICENSE_LEAF] if has_license else [])]}
        return {"parameter_prefix": prefix, "parameters": names}

    def _existing(self, ctx) -> dict[str, dict]:
        """Parameters under the prefix, by leaf name, without reading any value."""
        ssm, prefix = ctx.client("ssm"), ctx.config.ssm_prefix
        found = {}
        for page in ssm.get_paginator("describe_parameters").paginate(
                ParameterFilters=[{"Key": "Path", "Option": "OneLevel", "Values": [prefix.rstrip("/")]}]):
            for parameter in page["Parameters"]:
                found[parameter["Name"][len(prefix):]] = parameter
        return found

    def _put_new(self, ctx, leaf: str, value: str) -> None:
        try:
            ctx.client("ssm").put_parameter(
                Name=ctx.config.ssm_prefix + leaf, Value=value, Type="SecureString",
                Description=f"LangSmith {ctx.config.deployment}: {leaf}", Tags=ctx.tags.as_list(f"ssm-{leaf}"))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ParameterAlreadyExists":  # a parallel run won: keep its value
                raise

    def verify(self, ctx) -> list[Finding]:
        existing = self._existing(ctx)
        findings = [Finding(f"parameter {leaf}", "missing", missing=True) for leaf in GENERATORS if leaf not in existing]
        findings += [Finding(f"parameter {leaf}", f"is {p['Type']}, not SecureString")
                     for leaf, p in existing.items() if leaf in GENERATORS and p["Type"] != "SecureString"]
        if LICENSE_LEAF not in existing:
            findings.append(Finding(f"parameter {LICENSE_LEAF}", f"missing: export {LICENSE_ENV} and apply",
                                    missing=True))
        ctx.fact(f"{len(existing)} SecureString parameters under {ctx.config.ssm_prefix} (values never shown)")
        return findings

    def destroy(self, ctx) -> None:
        """Delete the parameters this deployment wrote; ones the operator put there stay."""
        ssm, prefix = ctx.client("ssm"), ctx.config.ssm_prefix
        ours = []
        for leaf in self._existing(ctx):
            try:
                tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=prefix + leaf)["TagList"]
            except ClientError as exc:
                if not_found(exc) or exc.response["Error"]["Code"] == "InvalidResourceId":
                    continue
                raise
            if tag_dict(tags).get(DEPLOYMENT_TAG) == ctx.config.deployment:
                ours.append(prefix + leaf)
        for start in range(0, len(ours), 10):
            ssm.delete_parameters(Names=ours[start:start + 10])
        for leaf in [*GENERATORS, LICENSE_LEAF]:
            ctx.record(f"parameter/{leaf}", None)
