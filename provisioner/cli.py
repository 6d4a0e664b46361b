"""Command line: python -m provisioner <command> CONFIG [options].

Exit codes: 0 success; 1 a step failed, drift found, or the deployment is locked (the
state says what exists; re-running resumes); 2 bad input, reported before any AWS call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

from . import config as config_module
from . import kube, preflight
from . import graph as step_graph
from . import aws as aws_api
from .aws import Aws
from .errors import LockHeld, SandboxError, UserError
from .events import Events
from .orchestrator import Orchestrator
from .remote_state import LEASE_SECONDS, S3Backend, StateFenced
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
        if command in ("apply", "destroy", "plan", "verify"):
            cmd.add_argument("--parallelism", type=_positive, default=8, help="steps run at once (default 8)")
        if command == "graph":
            cmd.add_argument("--format", choices=("text", "dot", "mermaid"), default="text")
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
    out = stdout if args.json else sandbox.Prefixed(stdout)
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
        events.emit("run_started", message=f"{args.command} {config.deployment} in {config['region']} "
                    f"(state {backend}, run {run_id})", command=args.command, run_id=run_id)
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
    StateStore(backend, config.deployment)  # a bad state file stops us before any question
    waves = step_graph.waves(step_graph.build(config))
    order = " -> ".join(", ".join(wave) for wave in waves)
    _confirm(args, stdin, stdout, f"apply {config.deployment} in {config['region']}: steps {order}\n"
             "(run `plan` first for the per-resource changes)")
    return _run_with_lock(args, config, backend, stdout, lambda orch: orch.apply())


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
    if not findings:
        return "no changes"
    if all(f.missing for f in findings):
        return "create"
    return "update"


def cmd_plan(args, config, backend, stdin, stdout) -> int:
    report, _ = _check(args, config, backend)
    if args.json:
        stdout.write(json.dumps({name: {"action": _summarise(f), "findings": [str(x) for x in f]}
                                 for name, f in report.items()}, indent=2) + "\n")
        return 0
    for name, findings in report.items():
        stdout.write(f"{name:<10} {_summarise(findings)}\n")
        for finding in findings:
            stdout.write(f"{'':<10}   {'+' if finding.missing else '~'} {finding}\n")
    changing = sum(1 for f in report.values() if f)
    stdout.write(f"\nPlan: {changing} of {len(report)} steps to create or change.\n")
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
    stdout.write(f"{'step':<10} {'status':<11} {'ids':>4}  {'finished':<30} last error\n")
    for name, record in records.items():
        stdout.write(f"{name:<10} {record.get('status', '?'):<11} {len(record.get('physical_ids', {})):>4}  "
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
                    "preflight": cmd_preflight}
