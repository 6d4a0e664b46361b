"""The sandbox: the README's own commands, run as separate processes with no AWS
credentials, against one background simulator; and a failed start leaves nothing running."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.charts import DEFAULT_CHARTS, mirrored
from provisioner.simulation import sandbox
from tests.conftest import CHART_MIRROR, run_cli

ROOT = Path(__file__).resolve().parent.parent


def readme_sandbox_commands() -> list[str]:
    """The commands in the README's first section (the sandbox), as a reader copies them."""
    text = (ROOT / "README.md").read_text()
    first_section = text.split("\n## ", 2)[1]
    blocks = re.findall(r"```\n(.*?)```", first_section, re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def no_aws_environment() -> dict:
    """A shell with no AWS credentials, region or endpoint, and no license key."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "LANGSMITH_LICENSE_KEY"}


def run(command: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    argv = command.split()
    assert argv[:3] == ["python", "-m", "provisioner"], command
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env={**no_aws_environment(), **environment},
                          capture_output=True, text=True, timeout=300)


def simulator_processes(directory: Path) -> list[int]:
    """Live processes serving a simulator for this directory (read from /proc, not the product)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                status = (entry / "status").read_text()
            except OSError:
                continue
            if "provisioner.simulation.sandbox" in cmdline and str(directory) in cmdline and "State:\tZ" not in status:
                found.append(int(entry.name))
    return found


def test_readme_sandbox_commands_work_end_to_end_as_separate_processes(tmp_path):
    commands = readme_sandbox_commands()
    assert commands[0] == "pip install -e '.[sandbox]'"  # installed already: the test extra includes it
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    assert "moto[server]" in extras["options.extras_require"]["sandbox"]
    assert "langsmith-aws-provisioner[sandbox]" in extras["options.extras_require"]["test"]
    apply, status, verify, outputs, destroy = commands[1:]
    assert apply == "python -m provisioner apply config/examples/sandbox.yaml"
    shutil.copytree(ROOT / "config", tmp_path / "config")
    directory = tmp_path / "state" / "sandbox-demo.json.sandbox"
    mirror = {"PROVISIONER_CHART_MIRROR": str(CHART_MIRROR)}

    applied = run(apply, tmp_path, **mirror)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    lines = applied.stdout.splitlines()
    assert lines and all(line.startswith("[sandbox] ") for line in lines)
    assert "SIMULATION: no AWS account is used" in applied.stdout
    assert "Apply complete" in applied.stdout and "13 steps ok" in applied.stdout
    for step in ("vpc", "eks", "firewall", "k8s_bootstrap", "langsmith"):
        assert re.search(rf"\] {step} +created in", applied.stdout), step
    for release in ("aws-load-balancer-controller", "keda", "external-secrets", "cert-manager", "langsmith"):
        chart = mirrored(str(CHART_MIRROR), release).name.removesuffix(".tgz")  # the real charts
        assert f"helm upgrade --install {release} ({chart})" in applied.stdout
    assert "standin" not in applied.stdout and "stand-in charts" not in applied.stdout
    assert "LangSmith would answer at http://sandbox-demo-alb" in applied.stdout
    info = json.loads((directory / "sandbox.json").read_text())
    assert simulator_processes(directory) == [info["pid"]]

    state = run(status, tmp_path, **mirror)
    assert state.returncode == 0 and f"pid {info['pid']}" in state.stdout
    assert re.search(r"langsmith +created", state.stdout)
    checked = run(verify, tmp_path, **mirror)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "1/1 targets healthy" in checked.stdout and "Verify: everything matches the config." in checked.stdout
    shown = run(outputs, tmp_path, **mirror)
    assert shown.returncode == 0 and 'langsmith.url = "http://sandbox-demo-alb' in shown.stdout
    assert "sandbox-license-not-real" not in applied.stdout + checked.stdout + shown.stdout
    assert "sandbox-license-not-real" not in (tmp_path / "state" / "sandbox-demo.json").read_text()

    gone = run(destroy, tmp_path, **mirror)
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert "Destroy complete" in gone.stdout and "the simulator is stopped" in gone.stdout
    assert simulator_processes(directory) == [] and not (directory / "sandbox.json").exists()


def test_any_config_runs_in_the_sandbox_with_latency_showing_progress(tmp_path):
    """--sandbox on a plain config; long-running resources report in-progress states."""
    (tmp_path / "config.yaml").write_text("name_prefix: try\nenvironment: dev\nregion: eu-west-1\n"
                                          "deploy_langsmith: false\ncreate_firewall: true\n")
    directory = tmp_path / "state" / "try-dev.json.sandbox"
    try:
        applied = run("python -m provisioner apply config.yaml --sandbox --sandbox-latency 0.004", tmp_path)
        assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
        assert "latency x0.004" in applied.stdout
        if not sandbox._reachable(DEFAULT_CHARTS["keda"]):  # no mirror given and, here, no network:
            assert "stand-in charts (SIMULATION) for aws-load-balancer-controller, " in applied.stdout  # said
            assert "helm upgrade --install keda (standin-0.1.0)" in applied.stdout
        assert re.search(r"\] eks +waiting for EKS cluster try-dev-eks", applied.stdout)
        assert re.search(r"\] postgres +waiting for", applied.stdout)
        assert re.search(r"\] firewall +waiting for firewall try-dev-fw-egress", applied.stdout)
        shown = run("python -m provisioner sandbox status config.yaml", tmp_path)
        assert "AWS simulator (moto) at http://127.0.0.1:" in shown.stdout
    finally:
        stopped = run("python -m provisioner sandbox stop config.yaml", tmp_path)
    assert stopped.stdout == "[sandbox] simulator stopped.\n"
    assert simulator_processes(directory) == []


@pytest.mark.parametrize("failure", ["never ready", "exits at once"])
def test_a_failed_sandbox_start_leaves_no_process(tmp_path, monkeypatch, failure):
    (tmp_path / "config.yaml").write_text("name_prefix: try\nenvironment: dev\nregion: us-east-1\nsandbox: true\n")
    monkeypatch.chdir(tmp_path)
    if failure == "never ready":
        monkeypatch.setattr(sandbox, "START_TIMEOUT_SECONDS", 0.5)  # the simulator needs longer to come up
    else:
        monkeypatch.setattr(sandbox.sys, "executable", "/bin/false")
    result = run_cli("apply", "config.yaml")
    assert result.code == 1
    assert ("not ready within" if failure == "never ready" else "exited (code 1)") in result.err
    directory = tmp_path / "state" / "try-dev.json.sandbox"
    assert simulator_processes(directory) == [] and not (directory / "sandbox.json").exists()
    assert not (tmp_path / "state" / "try-dev.json").exists()  # nothing ran


def test_the_sandbox_refuses_a_shared_s3_state(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text("name_prefix: try\nenvironment: dev\nregion: us-east-1\n"
                                          "state: {backend: s3, bucket: team-state}\n")
    monkeypatch.chdir(tmp_path)
    result = run_cli("apply", "config.yaml", "--sandbox")
    assert result.code == 2 and "the sandbox keeps its state in a local file" in result.err
    assert not (tmp_path / "state").exists()
