"""No secret value appears in the state file, the events, the terminal output or the
values helm was given: not as is, nor base64-, URL-, JSON- or hex-encoded."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from urllib.parse import quote, quote_plus

import boto3

from steps.secrets import GENERATORS
from tests.conftest import LICENSE, REGION, run_cli, write_config

DEPLOYMENT = "acme-test"


def secret_values() -> dict[str, str]:
    ssm = boto3.client("ssm", region_name=REGION)
    names = [p["Name"] for page in ssm.get_paginator("describe_parameters").paginate() for p in page["Parameters"]
             if p["Name"].startswith(f"/langsmith/{DEPLOYMENT}/")]  # AWS pages by 10
    return {name: ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] for name in names}


def encoded_forms(value: str) -> dict[str, str]:
    """How a value can hide in text: as is, JSON-escaped, URL-encoded, hex, and base64
    (standard and URL-safe) at each of the three alignments it can have inside a longer
    encoded blob (the groups shared with neighbouring bytes are left out)."""
    raw = value.encode()
    forms = {"raw": value, "json": json.dumps(value)[1:-1], "url": quote(value, safe=""), "url+": quote_plus(value),
             "hex": raw.hex(), "HEX": raw.hex().upper()}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw + b"\0\0\0").decode()
        middle = encoded[4 if offset else 0:(4 * ((offset + len(raw)) // 3))]
        forms[f"base64@{offset}"] = middle
        forms[f"base64url@{offset}"] = middle.replace("+", "-").replace("/", "_")
    return forms


def leaks(values: dict[str, str], text: str) -> list[tuple[str, str]]:
    """(secret name, form) of every secret found in the text in any form."""
    return [(name, form) for name, value in values.items() for form, encoded in encoded_forms(value).items()
            if encoded in text]


def helm_release_records(cluster) -> list[str]:
    """What helm stored for each release revision (values given and manifests rendered):
    the release Secret's data.release is base64 of base64 of gzip of JSON."""
    records = []
    for secret in cluster.items("", "secrets"):
        if secret["metadata"].get("labels", {}).get("owner") == "helm":
            packed = base64.b64decode(base64.b64decode(secret["data"]["release"]))
            records.append(gzip.decompress(packed).decode())
    return records


def test_the_scan_finds_each_encoded_form():
    """The scan itself: a value hidden in each form, alone or inside a longer blob, is found."""
    secret = {"k": "s3cr3t-Value+/=?&\"quoted\""}
    for form, text in encoded_forms(secret["k"]).items():
        assert ("k", form) in leaks(secret, f"x{text}y")
    for prefix in (b"", b"a", b"ab", b"abc"):
        blob = base64.b64encode(prefix + secret["k"].encode() + b"tail").decode()
        assert leaks(secret, blob), prefix
    assert leaks(secret, binascii.hexlify(secret["k"].encode()).decode())
    assert leaks(secret, "nothing to see") == []


def test_no_secret_reaches_state_events_or_output(aws, tmp_path, kube_server):
    config = write_config(tmp_path / "config.yaml")
    transcripts = []
    for command in (["apply", config, "--yes", "--json"], ["apply", config, "--yes"], ["plan", config],
                    ["verify", config, "--json"], ["status", config, "--json"], ["outputs", config, "--json"],
                    ["outputs", config]):
        result = run_cli(*command)
        assert result.code == 0, (command, result)
        transcripts.append(result.out + result.err)
    values = secret_values()
    assert len(values) == len(GENERATORS) + 1 and LICENSE in values.values()
    state_text = (tmp_path / "state" / f"{DEPLOYMENT}.json").read_text()
    releases = helm_release_records(kube_server.cluster)
    assert len(releases) >= 7 and '"config"' in releases[0]  # the values each release was given
    assert leaks(values, "\n".join(transcripts)) == []
    assert leaks(values, state_text) == []
    assert leaks(values, "\n".join(releases)) == []
    # what is there instead: the parameter names
    assert "/langsmith/acme-test/postgres-password" in state_text
    destroy = run_cli("destroy", config, "--yes", "--json")
    assert leaks(values, destroy.out + destroy.err) == []


def test_reapply_never_rotates_generated_secrets(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    first = secret_values()
    (tmp_path / "state" / f"{DEPLOYMENT}.json").unlink()  # even a lost state must not rotate them
    assert run_cli("apply", config, "--yes").code == 0
    assert secret_values() == first


def test_license_key_follows_the_environment(aws, tmp_path, monkeypatch):
    config = write_config(tmp_path / "config.yaml")
    monkeypatch.delenv("LANGSMITH_LICENSE_KEY")
    result = run_cli("apply", config, "--yes")
    assert result.code == 0 and "no license key" in result.out
    assert f"/langsmith/{DEPLOYMENT}/langsmith-license-key" not in secret_values()
    verify = run_cli("verify", config)
    assert verify.code == 1 and "LANGSMITH_LICENSE_KEY" in verify.out
    monkeypatch.setenv("LANGSMITH_LICENSE_KEY", "lic-NEW-1234567890")
    assert run_cli("apply", config, "--yes").code == 0
    assert secret_values()[f"/langsmith/{DEPLOYMENT}/langsmith-license-key"] == "lic-NEW-1234567890"
    monkeypatch.setenv("LANGSMITH_LICENSE_KEY", "lic-ROTATED-987654321")
    result = run_cli("apply", config, "--yes")
    assert "lic-ROTATED" not in result.out
    assert secret_values()[f"/langsmith/{DEPLOYMENT}/langsmith-license-key"] == "lic-ROTATED-987654321"


def test_parameters_the_operator_put_there_survive_destroy(aws, tmp_path, monkeypatch):
    monkeypatch.delenv("LANGSMITH_LICENSE_KEY")
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=f"/langsmith/{DEPLOYMENT}/langsmith-license-key", Value="lic-OPERATOR-42",
                      Type="SecureString")
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("apply", config, "--yes").code == 0
    assert run_cli("destroy", config, "--yes").code == 0
    assert list(secret_values()) == [f"/langsmith/{DEPLOYMENT}/langsmith-license-key"]
