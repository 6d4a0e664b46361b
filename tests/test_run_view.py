"""What a person watching a run sees: the live view on a terminal (a real pseudo-terminal,
its output replayed on a small screen model), the plain lines everywhere else, and the
HTML picture of each run, loaded in a real headless Chromium with no network."""

from __future__ import annotations

import html.parser
import io
import json
import os
import pty
import re
import shutil
import subprocess
import threading

import networkx as nx
import pytest
from botocore.awsrequest import AWSResponse

from provisioner import aws as aws_module

from provisioner import config as config_module
from provisioner import graph as step_graph
from provisioner.cli import main
from tests.conftest import LICENSE, fresh_account, run_cli, write_config
from tests.faults import install_session_hooks

STEPS = {"vpc", "secrets", "storage", "postgres", "redis", "eks", "alb", "k8s_bootstrap", "ingress", "langsmith"}
STEP_LINE = re.compile(r"^\[ *\d+\.\ds\] \S+ +\S.*$")
CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def on_terminal(*argv: str, env: dict | None = None, monkeypatch=None, expect: int = 0) -> str:
    """Runs the CLI in-process with its stdout on a pseudo-terminal; returns the bytes
    the terminal received, decoded."""
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    master, slave = pty.openpty()
    received = []

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    try:
        code = main(list(argv), stdin=io.StringIO(""), stdout=terminal, stderr=io.StringIO())
    finally:
        terminal.close()  # the reader sees EOF (EIO) once the slave side is closed
        reader.join(timeout=10)
        os.close(master)
    assert code == expect, b"".join(received).decode(errors="replace")[-3000:]
    return b"".join(received).decode().replace("\r\n", "\n")


def strip_controls(text: str) -> str:
    """Every frame's lines as they appeared (colours and cursor moves dropped)."""
    return CSI.sub("", text)


def screen(text: str) -> list[str]:
    """The lines a terminal shows after `text`: what rich's live display sends (carriage
    return, line feed, cursor up, erase line) is applied; colours are dropped."""
    lines, row, col = [""], 0, 0
    position = 0
    while position < len(text):
        control = CSI.match(text, position)
        if control:
            args, command = control.groups()
            if command == "A":
                row = max(0, row - int(args or 1))
            elif command == "K":
                lines[row] = "" if args == "2" else lines[row][:col]
            position = control.end()
            continue
        char = text[position]
        position += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            lines.extend([""] * (row + 1 - len(lines)))
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + char + line[col + 1:]
            col += 1
    return [line.rstrip() for line in lines]


@pytest.fixture(scope="module")
def live_apply(moto_server, kube_server, tmp_path_factory):
    """One apply watched on a 120x40 terminal; the tests below read what it showed and left."""
    with pytest.MonkeyPatch.context() as patch:
        workdir = tmp_path_factory.mktemp("live")
        fresh_account(moto_server, kube_server, patch, workdir)
        patch.setenv("COLUMNS", "120")
        patch.setenv("LINES", "40")
        patch.setenv("TERM", "xterm-256color")
        patch.delenv("NO_COLOR", raising=False)
        config = write_config(workdir / "config.yaml")
        shown = on_terminal("apply", config, "--yes")
        yield config, shown


def test_live_view_draws_steps_and_leaves_a_clean_summary(live_apply):
    config, shown = live_apply
    final = [line for line in screen(shown) if line]
    assert re.fullmatch(r"Apply complete in \d+\.\ds: 10 steps ok\. AWS calls: \d+ mutating, \d+ read", final[-2])
    assert re.fullmatch(r"Run report: state/acme-test\.apply\.[0-9a-f]{12}\.html", final[-1])
    for step in STEPS:  # each finished step scrolled up once, on its own line
        assert [line for line in final if line.startswith(f"✓ {step} ")] != [], step
        assert sum(1 for line in final if line.startswith(f"✓ {step} ")) == 1, step
    # while it ran: redrawn lines (cursor up), the summary line, a wait with its expected time
    assert "\x1b[1A" in shown and re.search(r"applying: \d+/10 steps done, \d+ running, \d+ pending", shown)
    assert re.search(r"waiting +\S+ \d+s / ~\d+m\d\ds +for RDS instance acme-test-pg", strip_controls(shown))
    # and none of the live lines is left on the screen once the run ended
    assert not any("steps done" in line or "queued" in line for line in final)
    assert "[" not in final[-2] and "\x1b" not in "\n".join(final)


def test_plain_lines_without_a_live_view(live_apply, monkeypatch):
    """NO_COLOR, a dumb terminal, --json or no terminal at all: the lines printed before
    the live view existed, and the report's path last (not in --json)."""
    config, _ = live_apply
    outputs = [on_terminal("apply", config, "--yes", env={"TERM": "dumb"}, monkeypatch=monkeypatch),
               on_terminal("apply", config, "--yes", env={"TERM": "xterm", "NO_COLOR": "1"}, monkeypatch=monkeypatch),
               run_cli("apply", config, "--yes").out]
    for out in outputs:
        lines = out.splitlines()
        assert "\x1b" not in out
        assert lines[0].startswith("apply acme-test in us-east-1 (state state/acme-test.json, run ")
        assert lines[-2].startswith("Apply complete in ") and lines[-1].startswith("Run report: ")
        assert all(STEP_LINE.match(line) for line in lines[1:-2]), lines
        assert {line.split()[2] for line in lines if " unchanged in " in line} == STEPS
    as_json = on_terminal("apply", config, "--yes", "--json", env={"TERM": "xterm"}, monkeypatch=monkeypatch)
    events = [json.loads(line) for line in as_json.splitlines()]
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    assert not any(e["event"].startswith("wait_") for e in events)  # the quiet notes stay quiet


class Rows(html.parser.HTMLParser):
    """The report's step table: per step its class, start and end."""

    def __init__(self):
        super().__init__()
        self.steps: dict[str, dict] = {}
        self._current = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-step" in attrs:
            self._current = self.steps[attrs["data-step"]] = {"class": attrs["class"]}
        elif tag == "td" and self._current is not None:
            for key in ("data-start", "data-end"):
                if key in attrs:
                    self._current[key] = attrs[key]


def expected_critical_path(config_path: str, run: dict) -> list[str]:
    """Independently of the product: networkx's longest path through the create graph,
    each edge weighing the measured seconds of the step it leads to."""
    from datetime import datetime
    graph = step_graph.build(config_module.load(config_path))
    seconds = {name: (datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"])).total_seconds()
               for name, r in run["steps"].items()}
    weighted = nx.DiGraph()
    weighted.add_edges_from(("start", name, {"w": seconds[name]}) for name in graph)
    weighted.add_edges_from((a, b, {"w": seconds[b]}) for a, b in graph.edges)
    return nx.dag_longest_path(weighted, weight="w")[1:]


def test_report_names_every_step_with_start_end_and_the_critical_path(live_apply):
    config, shown = live_apply
    path = re.search(r"Run report: (\S+)", shown)[1]
    state = json.loads(open("state/acme-test.json").read())
    run = next(r for r in state["runs"] if path.endswith(f".{r['run_id']}.html"))
    assert run["command"] == "apply" and run["outcome"] == "complete"
    page = open(path, encoding="utf-8").read()
    rows = Rows()
    rows.feed(page)
    assert set(rows.steps) == STEPS
    for name, row in rows.steps.items():
        assert row["data-start"] == run["steps"][name]["started_at"] and row["data-end"] == run["steps"][name]["finished_at"]
    critical = expected_critical_path(config, run)
    assert {name for name, row in rows.steps.items() if row["class"] == "critical"} == set(critical)
    assert " → ".join(critical) in page
    waits = [w for r in run["steps"].values() for w in r["waits"]]
    assert any(w["what"] == "RDS instance acme-test-pg" and w["finished_at"] for w in waits)
    assert 'class="wait"' in page and "waiting for RDS instance acme-test-pg" in page
    assert LICENSE not in page and LICENSE not in json.dumps(state)
    # the same picture again from the state, by run id
    os.remove(path)
    again = run_cli("report", config, "--run", run["run_id"][:6])
    assert again.code == 0 and again.out == f"Run report: {path}\n" and open(path).read() == page
    assert run_cli("report", config, "--run", "zzz").code == 2


def browser() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    assert found, "no Chromium: `apt-get install chromium` (.ci/run installs it)"
    return found


def load_offline(page_path: str) -> tuple[str, str]:
    """Chromium, headless and cut off from any network, loads the page; returns the DOM
    after load and the browser's log. A trap put in a copy of the page writes every
    script error and failed resource load into the DOM."""
    trap = ("<script>var seen=[];addEventListener('error',function(e){seen.push(e.message||"
            "(e.target&&(e.target.src||e.target.href))||'error')},true);addEventListener('load',function()"
            "{document.documentElement.setAttribute('data-errors',seen.join('|'))})</script>")
    copy = page_path + ".trapped.html"
    with open(page_path, encoding="utf-8") as source, open(copy, "w", encoding="utf-8") as target:
        target.write(source.read().replace("<head>", "<head>" + trap, 1))
    offline = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"]).returncode == 0 else []
    command = offline + [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                         "--proxy-server=127.0.0.1:9", "--dump-dom", "file://" + os.path.abspath(copy)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_report_loads_in_a_headless_browser_without_network_or_errors(live_apply):
    _, shown = live_apply
    path = re.search(r"Run report: (\S+)", shown)[1]
    page = open(path, encoding="utf-8").read()
    assert "<script" not in page and not re.search(r"""(src|href)=|@import|url\((?!#)""", page)
    dom, log = load_offline(path)
    assert 'data-errors=""' in dom, dom[:500]
    assert "CONSOLE" not in log, [line for line in log.splitlines() if "CONSOLE" in line]
    assert all(f'data-step="{step}"' in dom for step in STEPS) and "<svg" in dom
    # the trap and the log do catch what a page fetching from the network would suffer
    broken = path + ".broken.html"
    with open(broken, "w", encoding="utf-8") as handle:
        handle.write(page.replace("</body>", '<img src="https://example.com/logo.png"><script>boom()</script></body>'))
    dom, log = load_offline(broken)
    assert "example.com/logo.png" in dom and "boom" in log


def postgres_denied(**_):
    """AWS refusing the postgres step's first read (an error answered in place of moto's)."""
    if getattr(aws_module._current_step, "name", "") != "postgres":
        return None
    response = AWSResponse("https://rds", 403, {}, None)
    response._content = (b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not "
                         b"authorized to perform rds:DescribeDBInstances</Message></Error></ErrorResponse>")
    return response


def test_a_failure_stays_in_view_and_in_the_report(live_apply, monkeypatch):
    config, _ = live_apply
    install_session_hooks(monkeypatch, **{"before-send.rds.DescribeDBInstances": postgres_denied})
    shown = on_terminal("apply", config, "--yes", env={"TERM": "xterm-256color"}, monkeypatch=monkeypatch, expect=1)
    final = [line for line in screen(shown) if line]
    failure = "✗ postgres      failed: DescribeDBInstances: AccessDenied: not authorized to perform rds:DescribeDBInstances"
    assert failure in final and final[-2].startswith("Apply FAILED in ") and "failed: postgres" in final[-2]
    assert re.search(r"✗ +postgres +failed +DescribeDBInstances: AccessDenied", strip_controls(shown))  # a live line
    # steps measured against their time in the earlier (unchanged) re-applies of this deployment
    assert re.search(r"vpc +applying +\S+ \d+s / ~\d+s", strip_controls(shown))
    run = json.loads(open("state/acme-test.json").read())["runs"][-1]
    assert run["outcome"] == "failed" and run["steps"]["postgres"]["status"] == "failed"
    page = open(re.search(r"Run report: (\S+)", final[-1])[1], encoding="utf-8").read()
    assert "AccessDenied: not authorized to perform rds:DescribeDBInstances" in page and 'class="bar-failed"' in page


def test_destroy_shows_the_live_view_and_writes_its_report(live_apply, monkeypatch):
    config, _ = live_apply
    shown = on_terminal("destroy", config, "--yes", env={"TERM": "xterm-256color"}, monkeypatch=monkeypatch)
    final = [line for line in screen(shown) if line]
    assert final[-2].startswith("Destroy complete in ") and "destroying:" in shown
    path = re.search(r"Run report: (\S+\.destroy\.[0-9a-f]{12}\.html)", final[-1])[1]
    runs = json.loads(open("state/acme-test.json").read())["runs"]
    assert [r["command"] for r in runs][-1] == "destroy" and os.path.exists(path)
    listed = run_cli("report", config, "--list").out.splitlines()
    assert len(listed) == len(runs) and listed[-1].split()[1] == "destroy"
