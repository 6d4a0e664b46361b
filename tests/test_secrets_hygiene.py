"""No secret value appears in the state file, the events or the terminal output."""

from __future__ import annotations


import boto3

from tests.conftest import LICENSE, REGION, run_cli, write_config

DEPLOYMENT = "acme-test"


def secret_values() -> dict[str, str]:
    ssm = boto3.client("ssm", region_name=REGION)
    names = [p["Name"] for p in ssm.describe_parameters()["Parameters"] if p["Name"].startswith(f"/langsmith/{DEPLOYMENT}/")]
    return {name: ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] for name in names}


def test_no_secret_reaches_state_events_or_output(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    transcripts = []
    for command in (["apply", config, "--yes", "--json"], ["apply", config, "--yes"], ["plan", config],
                    ["verify", config, "--json"], ["status", config, "--json"], ["outputs", config, "--json"],
                    ["outputs", config]):
        result = run_cli(*command)
        assert result.code == 0, (command, result)
        transcripts.append(result.out + result.err)
    values = secret_values()
    assert len(values) == 8 and LICENSE in values.values()
    state_text = (tmp_path / "state" / f"{DEPLOYMENT}.json").read_text()
    everything = "\n".join(transcripts + [state_text])
    leaked = [name for name, value in values.items() if value in everything]
    assert leaked == []
    # what is there instead: the parameter names
    assert "/langsmith/acme-test/postgres-password" in state_text
    destroy = run_cli("destroy", config, "--yes", "--json")
    assert not any(value in destroy.out + destroy.err for value in values.values())


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
