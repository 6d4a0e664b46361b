"""Command line: python -m provisioner <command> CONFIG [options].

Exit codes: 0 success; 1 a step failed, drift found, or the deployment is locked (the
state says what exists; re-running resumes); 2 bad input, reported before any AWS call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid

import steps
from steps._eks_upgrade import version_plan

from . import config as config_module
from . import kube, liveview, preflight, report
from . import graph as step_graph
from . import aws as aws_api
from .aws import Aws
from .errors import LockHeld, SandboxError, StepError, UserError
from .events import Events
from .orchestrator import Orchestrator
from .remote_state import LEASE_SECONDS, S3Backend, StateFenced
from .runs import RunRecorder
from .state import LocalBackend, StateStore, default_path, describe_holder, locked

COMMANDS = {
    "apply": "create or resume the whole stack",
    "plan": "show what apply would create or change (read-only)",
    "verify": "check live resources against the config; exit 1 on drift",
    "status": "show each step's status from the state file",
    "destroy": "tear everything down in reverse order (works without the state file)",
    "graph": "print the create and destroy orders (text, DOT or Mermaid)",
    "outputs": "print the outputs recorded in the state",
    "preflight": "read-only checks (credentials, zones, quotas, leftovers, certificate); apply runs them first",
    "lock": "show (`lock status`) or clear (`lock break`) the deployment's lock",
    "sandbox": "show (`sandbox status`) or stop (`sandbox stop`) the deployment's sandbox simulator",
    "report": "write the HTML picture of an earlier apply or destroy from the state (default: the latest)",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m provisioner",
                                  description="Stand up, check and tear down self-hosted LangSmith on AWS.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, help_text in COMMANDS.items():
        cmd = sub.add_parser(command, help=help_text, description=help_text)
        if command == "lock":
            cmd.add_argument("action", choices=("status", "break"))
        if command == "sandbox":
            cmd.add_argument("action", choices=("status", "stop"))
        cmd.add_argument("config", help="path of the YAML config")
        cmd.add_argument("--state", help="state file (default state/<name_prefix>-<environment>.json)")
        cmd.add_argument("--json", action="store_true", help="machine-readable output (NDJSON events)")
        if command in ("apply", "destroy"):
            cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation (CI)")
            cmd.add_argument("--lock-timeout", type=float, default=0, metavar="SECONDS",
                             help="wait up to this long for another run's lock (default: fail at once)")
        if command == "apply":
            cmd.add_argument("--allow-data-loss", action="store_true",
                             help="let apply delete RDS, ElastiCache or the traces bucket the config no longer "
                                  "enables (their data is lost; RDS keeps a final snapshot)")
        if command in ("apply", "destroy", "plan", "verify"):
            cmd.add_argument("--parallelism", type=_positive, default=8, help="steps run at once (default 8)")
        if command == "graph":
            cmd.add_argument("--format", choices=("text", "dot", "mermaid"), default="text")
        if command == "report":
            cmd.add_argument("--run", metavar="RUN_ID", help="the run to draw (its id, or the start of it; "
                             "`report --list` shows them); default the latest")
            cmd.add_argument("--list", action="store_true", help="list the recorded runs")
        if command != "sandbox":
            cmd.add_argument("--sandbox", action="store_true",
                             help="run against the embedded simulator, not AWS (as `sandbox: true` in the config)")
            cmd.add_argument("--sandbox-latency", type=_scale, default=0.0, metavar="SCALE",
                             help="sandbox only: long-running resources take SCALE x their real duration "
                                  "(e.g. 0.02: EKS 12 s), to watch the parallel schedule")
    token = sub.add_parser("eks-token", help="print an EKS bearer token as a kubeconfig exec credential",
                           description="What `aws eks get-token` prints, from the current AWS credentials; the "
                                       "kubeconfig the provisioner gives helm runs it.")
    token.add_argument("cluster", help="EKS cluster name")
    token.add_argument("--region", required=True)
    return top


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction from 0 to 1 (0: instant)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more")
    return value


def main(argv: list[str] | None = None, stdin=None, stdout=None, stderr=None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command == "eks-token":
        token = kube.eks_token(aws_api.make_session(args.region), args.cluster, args.region)
        stdout.write(json.dumps(kube.exec_credential(token)) + "\n")
        return 0
    try:
        config = config_module.load(args.config)
        if args.command == "sandbox" or config["sandbox"] or args.sandbox:
            return run_sandboxed(args, config, stdin, stdout, stderr)
        backend = open_backend(config, args.state)
        return COMMAND_HANDLERS[args.command](args, config, backend, stdin, stdout)
    except UserError as exc:
        stderr.write("error: " + str(exc).replace("\n", "\n  ") + "\n")
        return exc.exit_code
    except (LockHeld, StateFenced, SandboxError) as exc:
        stderr.write(f"error: {exc}\n")
        return 1


def run_sandboxed(args, config, stdin, stdout, stderr) -> int:
    """The same command against the deployment's simulator (started on demand), every
    printed line marked as simulation; destroy stops the simulator once it has finished."""
    from .simulation import sandbox  # the only door into the simulation
    if config["state"].get("backend") == "s3":
        raise UserError("--sandbox: the sandbox keeps its state in a local file; drop `state: {backend: s3}` "
                        "or --sandbox")
    backend = open_backend(config, args.state)
    directory = sandbox.directory_for(backend.path)
    live = args.command in ("apply", "destroy") and liveview.wanted(stdout, args.json)
    args.line_mark = sandbox.PREFIX if live else ""  # the live view marks its own lines
    out = stdout if args.json or live else sandbox.Prefixed(stdout)
    say = sandbox.Prefixed(stderr if args.json else stdout).write  # notes never break --json output
    if args.command == "sandbox":
        if args.action == "stop":
            say("simulator stopped.\n" if sandbox.stop(directory) else "no simulator was running.\n")
        else:
            say(sandbox.banner(sandbox.running(directory), args.config))
        return 0
    world = sandbox.running(directory)
    if world is None and args.command in sandbox.NEEDS_SIMULATOR:
        if backend.exists():  # its simulated world ended with the old simulator
            os.replace(backend.path, f"{backend.path}.previous")
            say(f"started a fresh simulator; the previous simulated state moved to {backend.path}.previous\n")
        world = sandbox.start(directory, config["region"], args.sandbox_latency)
    elif world is not None and args.sandbox_latency and args.sandbox_latency != world.latency:
        say(f"the running simulator keeps latency x{world.latency}; `sandbox stop` first to change it\n")
    say(sandbox.banner(world, args.config))
    args.yes = True  # nothing real changes, so nothing to confirm
    if world is None:
        return COMMAND_HANDLERS[args.command](args, config, backend, stdin, out)
    with sandbox.pointed_at(world, config["region"]):
        code = COMMAND_HANDLERS[args.command](args, sandbox.sandboxed(config, world, say), backend, stdin, out)
    if args.command == "destroy" and code == 0:
        sandbox.stop(directory)
        say("destroy complete; the simulator is stopped.\n")
    elif args.command == "apply" and code == 0:
        url = StateStore(backend, config.deployment).outputs("langsmith").get("url")
        if url:
            say(f"LangSmith would answer at {url} (simulated: nothing listens there)\n")
        say(f"next, each as its own command: python -m provisioner status|verify|plan|outputs|destroy "
            f"{args.config}\n")
    return code


def open_backend(config, state_override: str | None):
    """Local file by default; S3 when the config says `state: {backend: s3}`."""
    state = config["state"]
    if state_override or state.get("backend", "local") == "local":
        return LocalBackend(state_override or state.get("path") or default_path(config.deployment))
    s3 = aws_api.make_session(state.get("region") or config["region"]).client("s3", config=aws_api.RETRY_CONFIG)
    return S3Backend(s3, state["bucket"], state.get("key") or f"provisioner/{config.deployment}.json",
                     state.get("lease_seconds", LEASE_SECONDS))


def _refuse_without_terminal(args, stdin) -> None:
    """Checked first: refusing must not cost an AWS call (the state may live in S3)."""
    if not args.yes and not (hasattr(stdin, "isatty") and stdin.isatty()):
        raise UserError(f"{args.command} needs confirmation and there is no terminal to ask on; "
                        "add --yes to proceed without asking")


def _confirm(args, stdin, stdout, summary: str) -> None:
    if args.yes:
        return
    stdout.write(summary + "\nProceed? Only 'yes' is accepted: ")
    stdout.flush()
    if stdin.readline().strip() != "yes":
        raise UserError(f"{args.command} cancelled; nothing was changed")


def _run_with_lock(args, config, backend, stdout, action) -> int:
    events = Events(as_json=args.json, stream=stdout)
    run_id = uuid.uuid4().hex[:12]
    with locked(backend.lock(run_id, args.command, args.lock_timeout)):
        state = StateStore(backend, config.deployment)  # read under the lock: another run may just have written
        aws = Aws(config["region"])
        orchestrator = Orchestrator(config, state, aws, events, args.parallelism)
        graph = orchestrator.graph(args.command)
        recorder = RunRecorder(state, aws.ledger, run_id, args.command, graph)
        events.listen(recorder)
        with _display(args, events, stdout, graph, aws.ledger, recorder, state):
            code = _run(args, config, orchestrator, events, run_id, action)
        path = report.write(_report_base(backend, config), recorder.run)
        if not args.json:
            stdout.write(f"{getattr(args, 'line_mark', '')}Run report: {path}\n")
        return code


def _display(args, events: Events, stdout, graph, ledger, recorder: RunRecorder, state: StateStore):
    """The live view on a terminal; elsewhere the plain lines, as Events prints them."""
    if not liveview.wanted(stdout, args.json):
        return contextlib.nullcontext()
    final = "destroyed" if args.command == "destroy" else "created"
    usual = {name: recorder.usual_seconds(name, changing=state.step(name)["status"] != final) for name in graph}
    verb = "destroying" if args.command == "destroy" else "applying"
    return liveview.LiveView(events, stdout, graph, ledger, verb, usual, mark=getattr(args, "line_mark", ""))


def _run(args, config, orchestrator: Orchestrator, events: Events, run_id: str, action) -> int:
    state, aws = orchestrator.state, orchestrator.aws
    events.emit("run_started", message=f"{args.command} {config.deployment} in {config['region']} "
                f"(state {state.backend}, run {run_id})", command=args.command, run_id=run_id)
    if args.command == "apply" and not report_preflight(preflight.run(config, aws, state), events):
        events.emit("run_finished", message="Apply stopped by preflight before creating anything; fix the "
                    "problems above and run it again", ok=False)
        return 1
    result = action(orchestrator)
    calls = aws.ledger.totals()
    verdict = "complete" if result.ok else "FAILED"
    detail = f"{len(result.succeeded)} steps ok"
    if result.failed:
        detail += f", failed: {', '.join(result.failed)}"
    if result.not_started:
        detail += f", not started: {', '.join(result.not_started)}"
    hint = "" if result.ok else f"; fix the cause and run `{args.command}` again to resume"
    events.emit("run_finished", message=f"{args.command.capitalize()} {verdict} in {events.elapsed():.1f}s: "
                f"{detail}. AWS calls: {calls['mutating']} mutating, {calls['read']} read{hint}",
                ok=result.ok, succeeded=result.succeeded, failed=result.failed,
                not_started=result.not_started, aws_calls=dict(calls))
    return 0 if result.ok else 1


def _report_base(backend, config) -> str:
    """Reports go beside a local state file; for a state in S3, in the working directory
    (a report is for opening in a browser here, not for sharing through the bucket)."""
    return getattr(backend, "path", None) or f"{config.deployment}.json"


def report_preflight(checks, events: Events) -> bool:
    for check in checks:
        fix = f" -> fix: {check.fix}" if check.fix and check.outcome != preflight.PASS else ""
        events.emit("preflight", "preflight", f"{check.outcome:<7} {check.name}: {check.detail}{fix}",
                    check=check.name, outcome=check.outcome, detail=check.detail, fix=check.fix)
    return all(check.outcome != preflight.FAIL for check in checks)


def cmd_preflight(args, config, backend, stdin, stdout) -> int:
    events = Events(as_json=args.json, stream=stdout)
    ok = report_preflight(preflight.run(config, Aws(config["region"]), StateStore(backend, config.deployment)), events)
    events.say("Preflight passed." if ok else "Preflight failed: fix the problems above before apply.")
    return 0 if ok else 1


def cmd_apply(args, config, backend, stdin, stdout) -> int:
    _refuse_without_terminal(args, stdin)
    state = StateStore(backend, config.deployment)  # a bad state file stops us before any question
    removed = step_graph.removals(config, state.all_steps())
    _refuse_data_loss(removed, args.allow_data_loss)
    _refuse_downgrade(config, state)
    waves = step_graph.waves(step_graph.build(config))
    order = " -> ".join(", ".join(wave) for wave in waves)
    removing = (f"\nremove (no longer enabled by the config, destroyed in reverse order): {', '.join(removed)}"
                if removed else "")
    _confirm(args, stdin, stdout, f"apply {config.deployment} in {config['region']}: steps {order}{removing}\n"
             "(run `plan` first for the per-resource changes)")
    return _run_with_lock(args, config, backend, stdout, lambda orch: orch.apply())


def _refuse_downgrade(config, state) -> None:
    """EKS cannot go back a Kubernetes version: refused from the state, before any change."""
    running = state.outputs("eks").get("kubernetes_version")
    if running:
        try:
            version_plan(running, config["eks_cluster_version"])
        except StepError as exc:
            raise UserError(f"eks_cluster_version: {exc}") from None


def _refuse_data_loss(removed: list[str], allowed: bool) -> None:
    """Apply never deletes data because a config key changed, unless told so by name."""
    losing = [f"{name}: {steps.REGISTRY[name].data_loss}" for name in removed if steps.REGISTRY[name].data_loss]
    if losing and not allowed:
        raise UserError("apply would delete data the config no longer asks for:\n" + "\n".join(losing) +
                        "\nto proceed, run apply again with --allow-data-loss; to keep it, restore the config "
                        "(for example postgres_source: external)")


def cmd_destroy(args, config, backend, stdin, stdout) -> int:
    _refuse_without_terminal(args, stdin)
    StateStore(backend, config.deployment)
    waves = step_graph.waves(step_graph.build(config, for_destroy=True).reverse(copy=True))
    order = " -> ".join(", ".join(wave) for wave in waves)
    _confirm(args, stdin, stdout,
             f"destroy {config.deployment} in {config['region']}: every resource tagged "
             f"provisioner:deployment={config.deployment}, steps {order}.\n"
             "The traces bucket is emptied and deleted; RDS keeps a final snapshot "
             f"{'(skipped: postgres_skip_final_snapshot)' if config['postgres_skip_final_snapshot'] else ''}.")
    return _run_with_lock(args, config, backend, stdout, lambda orch: orch.destroy())


def _check(args, config, backend):
    state = StateStore(backend, config.deployment)
    orchestrator = Orchestrator(config, state, Aws(config["region"]), Events(as_json=args.json), args.parallelism)
    return orchestrator.check()


def _summarise(findings) -> str:
    """create, update, replace, upgrade, or several of them joined with +."""
    if not findings:
        return "no changes"
    return " + ".join(sorted({f.change or ("create" if f.missing else "update") for f in findings}))


def cmd_plan(args, config, backend, stdin, stdout) -> int:
    report, _ = _check(args, config, backend)
    removed = step_graph.removals(config, StateStore(backend, config.deployment).all_steps())
    plan = {name: {"action": _summarise(f), "findings": [str(x) for x in f]} for name, f in report.items()}
    for name in removed:
        loss = steps.REGISTRY[name].data_loss
        plan[name] = {"action": "delete", "findings": [
            "no longer enabled by the config: apply destroys it" +
            (f"; loses {loss} (needs apply --allow-data-loss)" if loss else "")]}
    if args.json:
        stdout.write(json.dumps(plan, indent=2) + "\n")
        return 0
    width = max(map(len, plan), default=10)
    for name, entry in plan.items():
        stdout.write(f"{name:<{width}} {entry['action']}\n")
        marks = {"create": "+", "delete": "-"}
        for finding in entry["findings"]:
            stdout.write(f"{'':<{width}}   {marks.get(entry['action'], '~')} {finding}\n")
    changing = sum(1 for entry in plan.values() if entry["findings"])
    stdout.write(f"\nPlan: {changing} of {len(plan)} steps to create, change or delete.\n")
    return 0


def cmd_verify(args, config, backend, stdin, stdout) -> int:
    """The spec's verification list as one report: each step's live facts, or its drift."""
    report, facts = _check(args, config, backend)
    drift = {name: findings for name, findings in report.items() if findings}
    if args.json:
        stdout.write(json.dumps({"ok": not drift, "steps": {name: [str(x) for x in f] for name, f in report.items()},
                                 "facts": facts}, indent=2) + "\n")
        return 1 if drift else 0
    width = max(map(len, report), default=10)
    for name, findings in report.items():
        lines = [str(f) for f in findings] or facts[name]
        stdout.write(f"{name:<{width}}  {'ok   ' if not findings else 'DRIFT'}  {lines[0] if lines else ''}\n")
        for line in lines[1:]:
            stdout.write(f"{'':<{width}}         {line}\n")
    stdout.write("\nVerify: " + ("everything matches the config.\n" if not drift else
                                 f"{len(drift)} step(s) differ from the config; `apply` converges them.\n"))
    return 1 if drift else 0


def cmd_status(args, config, backend, stdin, stdout) -> int:
    if not backend.exists():
        stdout.write(f"no state at {backend}: nothing applied yet (or pass --state)\n")
        return 0
    records = StateStore(backend, config.deployment).all_steps()
    if args.json:
        stdout.write(json.dumps(records, indent=2, sort_keys=True) + "\n")
        return 0
    width = max(map(len, ["step", *records]))
    stdout.write(f"{'step':<{width}} {'status':<11} {'ids':>4}  {'finished':<30} last error\n")
    for name, record in records.items():
        stdout.write(f"{name:<{width}} {record.get('status', '?'):<11} {len(record.get('physical_ids', {})):>4}  "
                     f"{record.get('finished_at') or '-':<30} {record.get('last_error') or ''}\n")
    return 0


def cmd_graph(args, config, backend, stdin, stdout) -> int:
    create = step_graph.build(config)
    destroy = step_graph.build(config, for_destroy=True).reverse(copy=True)
    if args.json:
        stdout.write(json.dumps({"create": step_graph.waves(create), "destroy": step_graph.waves(destroy),
                                 "edges": sorted(create.edges)}, indent=2) + "\n")
    elif args.format == "dot":
        stdout.write(step_graph.to_dot(create, "create") + "\n" + step_graph.to_dot(destroy, "destroy") + "\n")
    elif args.format == "mermaid":
        stdout.write(step_graph.to_mermaid(create) + "\n\n" + step_graph.to_mermaid(destroy) + "\n")
    else:
        for title, graph in (("create", create), ("destroy", destroy)):
            stdout.write(f"{title} order (steps on one line run at the same time):\n")
            for number, wave in enumerate(step_graph.waves(graph), 1):
                stdout.write(f"  {number}. {', '.join(wave)}\n")
    return 0


def cmd_outputs(args, config, backend, stdin, stdout) -> int:
    if not backend.exists():
        raise UserError(f"no state at {backend}: run apply first, or pass --state")
    records = StateStore(backend, config.deployment).all_steps()
    outputs = {name: record.get("outputs", {}) for name, record in records.items() if record.get("outputs")}
    if args.json:
        stdout.write(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    else:
        for name, values in outputs.items():
            for key, value in values.items():
                stdout.write(f"{name}.{key} = {json.dumps(value)}\n")
    return 0


def cmd_report(args, config, backend, stdin, stdout) -> int:
    runs = StateStore(backend, config.deployment).runs() if backend.exists() else []
    if not runs:
        raise UserError(f"no runs recorded in the state at {backend}: apply or destroy first, or pass --state")
    if args.list:
        for run in runs:
            stdout.write(f"{run['run_id']}  {run['command']:<7}  {run['started_at']}  {run.get('outcome')}\n")
        return 0
    matching = [run for run in runs if run["run_id"].startswith(args.run)] if args.run else runs[-1:]
    if len(matching) != 1:
        raise UserError(f"--run {args.run}: {'no' if not matching else 'more than one'} recorded run matches; "
                        f"`report --list {args.config}` shows the run ids")
    path = report.write(_report_base(backend, config), matching[0])
    stdout.write(json.dumps({"report": path, "run_id": matching[0]["run_id"]}) + "\n" if args.json
                 else f"Run report: {path}\n")
    return 0


def cmd_lock(args, config, backend, stdin, stdout) -> int:
    lock = backend.lock("-", "lock")
    holder = lock.holder()
    if args.action == "status":
        if args.json:
            stdout.write(json.dumps({"locked": holder is not None, "holder": holder}, indent=2) + "\n")
        elif holder is None:
            stdout.write(f"{backend}: unlocked\n")
        else:
            stdout.write(f"{backend}: {describe_holder(holder)}" + (" (expired)" if holder.get("expired") else "") + "\n")
        return 0
    if holder is None:
        stdout.write(f"{backend}: no lock to break\n")
        return 0
    lock.break_lock()
    stdout.write(f"{backend}: broke the lock; it was held by {describe_holder(holder)[len('deployment is locked by '):]}."
                 " If that run is still alive it stops at its next state write\n")
    return 0


COMMAND_HANDLERS = {"apply": cmd_apply, "plan": cmd_plan, "verify": cmd_verify, "status": cmd_status,
                    "destroy": cmd_destroy, "graph": cmd_graph, "outputs": cmd_outputs, "lock": cmd_lock,
                    "preflight": cmd_preflight, "report": cmd_report}
