"""The benchmark harness runs end to end (no timing is asserted: speed is the bench's job, and
these machines are shared). Tiny sizes and budgets; each framework in its own worker process."""

import json
import subprocess
import sys

import pytest
from conftest import require

METHODS = [
    "torch nn.RNN",
    "torch RNNCell loop",
    "xf torch cell loop",
    "xf torch torchscript",
    "keras cell loop eager",
    "xf tf cell loop",
    "xf tf xla",
    "numpy reference loop",
]


def test_bench_runs_every_kind_of_method_and_writes_json(tmp_path):
    require("torch")
    require("tensorflow")
    path = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "rnn_xframework", "bench", "--workloads", "2x3x4x5", "--methods", ",".join(METHODS)]
    cmd += ["--grad-methods", "torch nn.RNN,xf torch cell loop", "--grad", "--gemm", "0", "--budget-scale", "0.05"]
    out = subprocess.run([*cmd, "--json", str(path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    doc = json.loads(path.read_text())
    assert not doc["failures"]
    rows = {(r["method"], r["grad"]): r for r in doc["results"]}
    assert set(rows) == {(m, False) for m in METHODS} | {("torch nn.RNN", True), ("xf torch cell loop", True)}
    for r in rows.values():
        assert r["median_s"] > 0 and r["flops"] > 0 and r["repeats"] >= 1
    assert "xf torch cell loop" in out.stdout  # the table is printed too
    # Off a terminal the progress is a line per worker on stderr; stdout (a log) starts with the report.
    assert out.stdout.startswith("rnn_xframework peers benchmark, "), out.stdout[:500]
    progress = [line for line in out.stderr.splitlines() if line.startswith("rnn-xframework bench: [")]
    assert len(progress) == 4 and progress[-1].startswith("rnn-xframework bench: [4/4] "), out.stderr


def test_bench_lists_the_librarys_methods():
    out = subprocess.run([sys.executable, "-m", "rnn_xframework", "bench", "--list"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("xf torch eager", "xf torch cell loop", "xf torch auto", "xf tf xla", "keras SimpleRNN xla"):
        assert name in out.stdout


@pytest.mark.parametrize("argv", [["--methods", "no such method"], ["--workloads", "W9"], ["--workloads", "0x3x4x5"]])
def test_bench_rejects_bad_flags_in_one_line(argv):
    out = subprocess.run([sys.executable, "-m", "rnn_xframework", "bench", *argv], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("rnn-xframework bench: error: ") and len(out.stderr.strip().splitlines()) == 1
