"""What an operator sees: confirmation, progress, graph, status, outputs, failures."""

from __future__ import annotations

import io
import json

import boto3
from botocore.awsrequest import AWSResponse

from provisioner.cli import main
from tests.census import census
from tests.conftest import REGION, run_cli, write_config
from tests.faults import install_session_hooks

DEPLOYMENT = "acme-test"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_apply_without_terminal_or_yes_refuses_before_any_aws_call(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    for command in ("apply", "destroy"):
        result = run_cli(command, config)
        assert result.code == 2 and "--yes" in result.err
    assert census() == {}


def test_apply_asks_on_a_terminal_and_only_yes_proceeds(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    out, err = io.StringIO(), io.StringIO()
    assert main(["apply", config], stdin=Terminal("no\n"), stdout=out, stderr=err) == 2
    assert "Proceed?" in out.getvalue() and "cancelled" in err.getvalue()
    assert census() == {}
    out = io.StringIO()
    assert main(["apply", config], stdin=Terminal("yes\n"), stdout=out, stderr=err) == 0
    assert "secrets, vpc -> eks, postgres, redis -> alb, k8s_bootstrap, storage -> ingress -> langsmith" in out.getvalue()
    assert census() != {}
    out = io.StringIO()
    assert main(["destroy", config], stdin=Terminal("yes\n"), stdout=out, stderr=err) == 0
    assert "final snapshot" in out.getvalue() and "emptied and deleted" in out.getvalue()
    assert census() == {}


def test_json_progress_is_one_event_per_line_with_timings(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    result = run_cli("apply", config, "--yes", "--json")
    events = [json.loads(line) for line in result.out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    finished = {e["step"]: e for e in events if e["event"] == "step_finished"}
    assert set(finished) == {"vpc", "secrets", "storage", "postgres", "redis", "eks", "alb", "k8s_bootstrap",
                             "ingress", "langsmith"}
    assert all(e["seconds"] >= 0 and e["changes"] + e["cluster_changes"] > 0 for e in finished.values())
    resources = [e for e in events if e["event"] == "resource"]
    assert any(e["id"].startswith("vpc-") for e in resources)
    assert events[-1]["ok"] is True and events[-1]["aws_calls"]["mutating"] > 40


def test_graph_prints_orders_dot_and_mermaid(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    config = write_config(tmp_path / "config.yaml", kubernetes={})
    text = run_cli("graph", config).out
    assert "create order" in text and "1. secrets, vpc" in text and "2. eks, postgres, redis" in text
    assert "3. alb, k8s_bootstrap, storage" in text and "4. ingress" in text and "5. langsmith" in text
    assert "destroy order" in text
    dot = run_cli("graph", config, "--format", "dot").out
    assert '"vpc" -> "postgres";' in dot and '"postgres" -> "vpc";' in dot
    assert '"vpc" -> "redis";' in dot and '"eks" -> "postgres"' not in dot
    as_json = json.loads(run_cli("graph", config, "--json").out)
    assert as_json["create"][0] == ["secrets", "vpc"] and ["vpc", "eks"] in as_json["edges"]
    assert as_json["destroy"][-1] == ["vpc"]
    mermaid = run_cli("graph", config, "--format", "mermaid").out
    assert "vpc --> postgres" in mermaid and "secrets --> redis" in mermaid


def test_rds_and_elasticache_do_not_wait_for_anything_but_vpc_and_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    from provisioner import config as config_module, graph
    built = graph.build(config_module.load(write_config(tmp_path / "config.yaml", kubernetes={})))
    assert set(built.predecessors("postgres")) == {"vpc", "secrets"}
    assert set(built.predecessors("redis")) == {"vpc", "secrets"}


def test_status_and_outputs_read_the_state(aws, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    assert run_cli("status", config).out.startswith("no state")
    assert run_cli("outputs", config).code == 2
    assert run_cli("apply", config, "--yes").code == 0
    status = run_cli("status", config).out.splitlines()
    rows = {line.split()[0]: line for line in status[1:]}
    assert rows["postgres"].split()[1] == "created" and rows["k8s_bootstrap"].split()[1] == "created"
    columns = {line.index(" created" if "created" in line else " status") for line in status}
    assert len(columns) == 1, status  # every status starts in one column, k8s_bootstrap's too
    outputs = json.loads(run_cli("outputs", config, "--json").out)
    assert outputs["postgres"]["identifier"] == "acme-test-pg"
    assert outputs["vpc"]["vpc_id"].startswith("vpc-")
    assert 'redis.port = 6379' in run_cli("outputs", config).out


def not_started(out: str) -> set[str]:
    listed = out.split("not started: ", 1)[1].split(".", 1)[0]
    return set(listed.split(", "))


def rds_refuses_create(**_):
    """An AWS error answered in place of moto's (a before-send hook), to fail one step."""
    response = AWSResponse("https://rds", 400, {}, None)
    response._content = (b"<ErrorResponse><Error><Type>Sender</Type><Code>InstanceQuotaExceeded</Code>"
                         b"<Message>DB instance quota exceeded</Message></Error></ErrorResponse>")
    return response


def test_failed_step_is_recorded_others_finish_and_rerun_resumes(aws, tmp_path, monkeypatch):
    config = write_config(tmp_path / "config.yaml")
    with monkeypatch.context() as patch:
        install_session_hooks(patch, **{"before-send.rds.CreateDBInstance": rds_refuses_create})
        result = run_cli("apply", config, "--yes")
    assert result.code == 1
    assert "postgres   failed: CreateDBInstance: InstanceQuotaExceeded" in result.out
    assert "failed: postgres" in result.out and "run `apply` again to resume" in result.out
    state = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())["steps"]
    assert state["postgres"]["status"] == "failed" and "InstanceQuotaExceeded" in state["postgres"]["last_error"]
    assert state["postgres"]["physical_ids"]["db_subnet_group"] == "acme-test-pg-subnets"
    # running steps finished; storage (which waits for eks) was not started after the failure
    assert state["redis"]["status"] == "created" and state["eks"]["status"] == "created"
    assert "storage" not in state and "storage" in not_started(result.out)
    assert boto3.client("rds", region_name=REGION).describe_db_instances()["DBInstances"] == []
    rerun = run_cli("apply", config, "--yes")
    assert rerun.code == 0
    assert "postgres   created" in rerun.out and "redis      unchanged" in rerun.out
    assert "storage    created" in rerun.out
    assert census()[("db-instance", "acme-test-pg")] == 1


def test_a_failure_stops_new_steps_from_starting(aws, tmp_path, monkeypatch):
    config = write_config(tmp_path / "config.yaml")

    def ssm_down(**_):
        response = AWSResponse("https://ssm", 400, {"x-amzn-RequestId": "1"}, None)
        response._content = b'{"__type": "AccessDeniedException", "message": "not allowed"}'
        return response

    with monkeypatch.context() as patch:
        install_session_hooks(patch, **{"before-send.ssm": ssm_down})
        result = run_cli("apply", config, "--yes", "--parallelism", "1")
    assert result.code == 1
    assert not_started(result.out) == {"eks", "postgres", "redis", "storage", "vpc", "alb", "k8s_bootstrap",
                                       "ingress", "langsmith"}
    state = json.loads((tmp_path / "state" / f"{DEPLOYMENT}.json").read_text())["steps"]
    assert state["secrets"]["status"] == "failed" and "postgres" not in state


def test_the_real_path_never_imports_the_simulation(tmp_path):
    """Loading the CLI and every step, and running a command on a real config, imports
    neither the simulation package nor moto."""
    import subprocess
    import sys
    config = tmp_path / "config.yaml"
    config.write_text("name_prefix: acme\nregion: us-east-1\n")
    probe = ("import sys; from provisioner.cli import main; import steps; "
             f"main(['graph', {str(config)!r}]); "
             "print(sorted(m for m in sys.modules if m.startswith(('provisioner.simulation', 'moto'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
