"""Mutation checks: plant plausible bugs one at a time in a copy of the repo and see
whether the test suite notices.

Each mutant is a small edit of the product code, the kind a real change could bring
(a wait skipped, tags dropped, IDs recorded late, a destroy in the wrong order, a known
blocker no longer cleared, a secret leaked in an encoded form, a resource freed while
still in use). For each, the repo (tracked and untracked files, not ignored ones) is
copied to a temporary directory, the edit is applied, and the tests that should notice
run there (--all: the whole suite). A mutant is caught when that run fails. The score
is caught / planted, with the survivors named; every mutant must be caught.

    python scripts/mutate.py                 # every mutant, its own test selection
    python scripts/mutate.py --only ids-recorded-late --all
    python scripts/mutate.py --list

Add a mutant whenever a real bug is found: the edit that brings it back, and the tests
that must catch it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what the planted bug is, as a reviewer would describe it
    edits: tuple[tuple[str, str, str], ...]  # (file, exact text, replacement); the text must occur once
    tests: tuple[str, ...]  # pytest arguments selecting the tests that must catch it
    env: tuple[tuple[str, str], ...] = ()  # extra environment for its test run


MUTANTS = [
    Mutant("iam-roles-untagged", "roles are created without the ownership tags (destroy then cannot tell they are "
           "ours and leaves them)",
           (("steps/_iam.py", "Description=description,\n                              Tags=ctx.tags.as_list(resource))",
             "Description=description)"),),
           ("tests/test_destroy.py::test_destroy_removes_everything_and_keeps_a_final_snapshot",)),
    Mutant("eks-wait-skipped", "the EKS step no longer waits for the cluster to be ACTIVE before using it",
           (("steps/eks.py", '            return found if found["status"] == "ACTIVE" else None',
             "            return found"),),
           ("tests/test_readiness.py",)),
    Mutant("ids-recorded-late", "physical IDs are written to the state only when the step ends, not when each "
           "create returns",
           (("provisioner/context.py", "        self.state.record_physical_id(self.step, key, physical_id)\n",
             '        self.__dict__.setdefault("late", []).append((key, physical_id))\n'),
            ("provisioner/orchestrator.py", "                outputs = action(ctx)\n",
             "                outputs = action(ctx)\n"
             '                for key, value in ctx.__dict__.get("late", []):\n'
             "                    self.state.record_physical_id(name, key, value)\n")),
           ("tests/test_crash_resume.py::test_resume_after_a_crash_keeps_what_the_state_recorded",)),
    Mutant("lb-controller-uninstalled-first", "the load balancer controller is uninstalled before the other releases, "
           "so it cannot release what it made for them",
           (("steps/k8s_bootstrap.py", "        uninstall_releases(ctx, kube, helm, LATER_RELEASES)\n",
             "        uninstall_releases(ctx, kube, helm, LATER_RELEASES)\n"
             "        uninstall_releases(ctx, kube, helm, [FIRST_RELEASE])\n"),),
           ("tests/test_destroy.py", "-k", "order")),
    Mutant("tgb-left-to-namespace-deletion", "the TargetGroupBinding is not deleted by the ingress step; it goes only "
           "when its namespace does, after the load balancer controller that must clean it up",
           (("steps/ingress.py", "        for api, kind, name, namespace in every_object():\n"
             "            kube.delete(api, kind, name, namespace)\n        uninstall_releases",
             "        for api, kind, name, namespace in every_object():\n"
             '            if kind != "TargetGroupBinding":\n'
             "                kube.delete(api, kind, name, namespace)\n        uninstall_releases"),),
           ("tests/test_destroy.py", "-k", "order"),
           env=(("PROVISIONER_TIME_SCALE", "0.05"),)),  # the stuck namespace's wait gives up in 30 s, not 10 min
    Mutant("certificate-before-listeners", "the ALB step no longer depends on the DNS step, so destroy may delete "
           "the certificate and zone while listeners still use them",
           (("steps/alb.py", 'requires = ("vpc", "eks", "dns", "alb_access_logs")',
             'requires = ("vpc", "eks", "alb_access_logs")'),),
           ("tests/test_destroy.py", "-k", "order")),
    Mutant("waf-deleted-while-associated", "the web ACL is deleted while still associated with the load balancer",
           (("steps/waf.py", '            if_exists(wafv2.disassociate_web_acl, ResourceArn=lb["LoadBalancerArn"])',
             "            pass"),),
           ("tests/test_destroy.py", "-k", "order")),
    Mutant("keda-apiservice-kept", "destroy no longer deletes the stale KEDA metrics APIService before the namespaces",
           (("steps/k8s_bootstrap.py", '        if kube.delete("apiregistration.k8s.io/v1", "APIService", '
             'KEDA_APISERVICE):', '        if False:'),),
           ("tests/test_kubernetes.py", "-k", "stale_keda_apiservice"),
           env=(("PROVISIONER_TIME_SCALE", "0.05"),)),  # the stuck namespaces' wait gives up in 30 s, not 10 min
    Mutant("bucket-not-emptied", "destroy deletes the trace bucket without emptying it first",
           (("steps/_buckets.py", '                answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": '
             'doomed[start:start + 1000], "Quiet": True})', "                answer = {}"),),
           ("tests/test_destroy.py", "-k", "bucket_holding_traces"),
           env=(("PROVISIONER_TIME_SCALE", "0.05"),)),  # S3's 120 s propagation retry gives up in 6 s
    Mutant("license-base64-in-state", "the secrets step keeps the license key base64-encoded in its outputs",
           (("steps/secrets.py", '        return {"parameter_prefix": prefix, "parameters": names}',
             '        import base64\n        return {"parameter_prefix": prefix, "parameters": names, "license": '
             'base64.b64encode((license_key or "").encode()).decode()}'),),
           ("tests/test_secrets_hygiene.py", "-k", "no_secret_reaches")),
    Mutant("gp2-left-not-default", "destroy removes gp3 but leaves EKS's gp2 marked not-default: the cluster has "
           "no default StorageClass any more (a real defect the tag-blind cluster census found)",
           (("steps/k8s_bootstrap.py", '        if gp2 is not None and gp2["metadata"].get("annotations", {}).get('
             'DEFAULT_CLASS) == "false":', "        if False:"),),
           ("tests/test_kubernetes.py", "-k", "destroy_removes_everything_in_the_cluster")),
    Mutant("db-subnet-group-freed-in-use", "RDS destroy deletes the subnet group without waiting for the instance to "
           "be gone",
           (("steps/postgres.py", "        if instance is not None:\n            wait_until(",
             "        if False:\n            wait_until("),),
           ("tests/test_destroy.py::test_destroy_removes_everything_and_keeps_a_final_snapshot",)),
    Mutant("access-entry-pathless", "the operator's access entry names their role without its path, as the STS "
           "session ARN does (EKS refuses it for IAM Identity Center roles: a real bug, B1 of the real-AWS review)",
           (("steps/eks.py", '    return iam.get_role(RoleName=role_name)["Role"]["Arn"]',
             '    return caller_arn.split(":assumed-role/")[0].replace(":sts:", ":iam:") + ":role/" + role_name'),),
           ("tests/test_real_aws.py", "-k", "teammate")),
    Mutant("postgres-url-with-scheme", "LangSmith's Postgres URL carries a postgresql:// scheme, which the chart "
           "says not to include (a real bug, found by comparing with the real chart's own Secret)",
           (("steps/langsmith.py", "\"connection_url\": f\"{pg['username']}:{CREDENTIAL}",
             "\"connection_url\": f\"postgresql://{pg['username']}:{CREDENTIAL}"),),
           ("tests/test_chart_contracts.py", "-k", "store_secrets")),
    Mutant("clickhouse-default-password", "ClickHouse is left to the chart and runs with its default password "
           "(a real gap: every store the chart runs had a published password)",
           (("steps/langsmith.py", '        "clickhouse_native_port": "9000", "clickhouse_tls": "false"}))\n',
             '        "clickhouse_native_port": "9000", "clickhouse_tls": "false"}))\n    found.pop()\n'),),
           ("tests/test_chart_contracts.py", "-k", "default_password")),
    Mutant("old-gateway-port-left-open", "after a gateway switch the cluster security group still admits the load "
           "balancer on the old gateway's pod port (a real bug)",
           (("steps/alb.py", "        if stale:\n            ec2.revoke_security_group_ingress(GroupId=cluster_group",
             "        if False:\n            ec2.revoke_security_group_ingress(GroupId=cluster_group"),),
           ("tests/test_day_two.py", "-k", "switching_gateway")),
    Mutant("empty-target-group-unreported", "verify calls a target group with no target at all fine (a real gap)",
           (("steps/alb.py", "            elif not health and self._something_serves(cfg):",
             "            elif False:"),),
           ("tests/test_kubernetes.py", "-k", "targets_are_the_ready")),
    Mutant("hook-jobs-left", "helm uninstall leaves the release's hook objects (LangSmith's migration Jobs) and "
           "nothing deletes them (found by installing the real chart)",
           (("steps/_releases.py", "    for hook in helm.hooks(release, namespace):", "    for hook in []:"),),
           ("tests/test_kubernetes.py", "-k", "leaves_none_of_its_hook")),
    Mutant("claims-left", "LangSmith's destroy leaves its StatefulSets' claims (ClickHouse's EBS volume bills on; "
           "found by installing the real chart)",
           (("steps/langsmith.py", '        for claim in kube.list("v1", "PersistentVolumeClaim", NAMESPACE):',
             "        for claim in []:"),),
           ("tests/test_kubernetes.py", "-k", "leaves_none_of_its_hook")),
]


def copy_repo(destination: Path) -> None:
    """Tracked and untracked files (not ignored ones), as the suite would see a checkout;
    the fetched helm is linked in."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if (ROOT / ".tools").exists():
        (destination / ".tools").symlink_to(ROOT / ".tools")


def stale_edits(mutant: Mutant, root: Path = ROOT) -> list[str]:
    """Edits whose text no longer occurs exactly once in the code (the code moved on: the
    mutant must follow it, or it would plant nothing)."""
    return [f"mutant {mutant.name}: the text to replace occurs {(root / relative).read_text().count(text)} times "
            f"in {relative}" for relative, text, _ in mutant.edits if (root / relative).read_text().count(text) != 1]


def plant(copy: Path, mutant: Mutant) -> None:
    for relative, text, replacement in mutant.edits:
        path = copy / relative
        path.write_text(path.read_text().replace(text, replacement))


def run_tests(copy: Path, tests: list[str], timeout: float, env=()) -> tuple[str, str]:
    """('caught' | 'survived' | 'timed out' | 'no tests', last lines of the output)."""
    environment = {**os.environ, "PYTHONPATH": str(copy), **dict(env)}
    command = [sys.executable, "-m", "pytest", "-n", "0", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=environment, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        return "timed out", (expired.stdout or b"")[-600:].decode(errors="replace") if isinstance(
            expired.stdout, bytes) else (expired.stdout or "")[-600:]
    lines = (done.stdout + done.stderr).strip().splitlines()
    tail = "\n".join([line for line in lines if line.startswith(("E ", "FAILED", "ERROR"))][:3] or lines[-6:])
    if done.returncode == 5:
        return "no tests", tail
    return ("caught" if done.returncode else "survived"), tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="run the whole suite against each mutant")
    parser.add_argument("--only", nargs="+", metavar="MUTANT", help="just these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutant (a hang counts as caught)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(args.only):
        parser.error(f"unknown mutant among {args.only}; known: {', '.join(m.name for m in MUTANTS)}")
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name}: {mutant.bug}\n    tests: {' '.join(mutant.tests)}")
        return 0
    stale = [problem for mutant in chosen for problem in stale_edits(mutant)]
    if stale:
        print("\n".join(stale) + "\nupdate these mutants to the code as it is now", file=sys.stderr)
        return 2
    results = []
    for mutant in chosen:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as scratch:
            copy = Path(scratch) / ROOT.name
            (Path(scratch) / "shared").symlink_to(ROOT.parent / "shared")  # the chart mirror, as beside the repo
            copy_repo(copy)
            plant(copy, mutant)
            verdict, tail = run_tests(copy, [] if args.all else list(mutant.tests), args.timeout, mutant.env)
        results.append((mutant, verdict))
        print(f"{mutant.name}: {verdict} ({time.monotonic() - started:.0f}s)", flush=True)
        print("    " + tail.replace("\n", "\n    ")[:600], flush=True)
    caught = [m for m, verdict in results if verdict in ("caught", "timed out")]
    survivors = [m for m, verdict in results if verdict not in ("caught", "timed out")]
    print(f"\nmutation score: {len(caught)}/{len(results)} caught")
    for mutant in survivors:
        print(f"  survived: {mutant.name}: {mutant.bug}")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
