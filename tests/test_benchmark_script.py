"""The apply benchmark runs end to end and reports its ratios (the figures themselves are
for the closing note, not asserted: timing is not a test)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_apply_prints_ratios_and_call_counts():
    result = subprocess.run([sys.executable, "scripts/bench_apply.py", "--scale", "0.003"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.count("wall / critical path") == 2 and out.count("sum of steps / wall") == 2
    assert out.count("critical path") >= 2 and out.count("(vpc -> eks -> ") == 2
    assert out.count("no-op re-apply AWS calls  0 mutating") == 2
    assert re.search(r"our wall time / reference wall time: \d+\.\d\d", out)
