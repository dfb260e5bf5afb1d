"""What the command line shows a person: help, usage, progress, and nothing else on stderr.

The parity and bench reports themselves are checked in test_parity_cli.py and test_bench.py.
"""

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from rnn_xframework import cli

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--batch", "2", "--steps", "3", "--features", "3", "--units", "4", "--layers", "2", "--plain"]


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "rnn_xframework", *argv], capture_output=True, text=True, env=env, timeout=600
    )


def test_bare_command_prints_usage():
    out = run_cli()
    assert out.returncode == 2
    assert out.stdout.startswith("usage: rnn-xframework") and "rnn-xframework parity [flags]" in out.stdout


HELPS = [["--help"], ["parity", "--help"], ["parity", "golden", "--help"], ["bench", "--help"]]


@pytest.mark.parametrize("argv", HELPS)
def test_help_has_no_raw_markup_and_no_worker_flags(argv):
    out = run_cli(*argv)
    assert out.returncode == 0, out.stderr
    assert "``" not in out.stdout and ":class:" not in out.stdout, out.stdout
    for internal in ("--worker", "--budget-s", "--min-repeats", "--max-repeats", "--warmup-s", "worker mode"):
        assert not re.search(re.escape(internal) + r"(?![\w-])", out.stdout), out.stdout


def test_parity_help_lists_every_accepted_ordering(capsys):
    with pytest.raises(SystemExit):
        cli.main(["parity", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for ordering in ("timestep", "layer", "torchscript", "tf.function"):
        assert ordering in help_text, help_text
    assert set(cli.all_orderings()) >= {"timestep", "layer", "torchscript", "tf.function"}


def test_parity_prints_a_line_per_group_off_a_terminal(capsys):
    code = cli.main(["parity", "--backends", "numpy", "--cells", "SimpleRNNCell", "GRUCell", *SMALL])
    assert code == 0
    lines = capsys.readouterr().err.splitlines()
    labels = ["SimpleRNNCell float32", "SimpleRNNCell float64", "GRUCell float32", "GRUCell float64"]
    assert len(lines) == 4, lines
    for i, (line, label) in enumerate(zip(lines, labels, strict=True)):
        assert line.startswith(f"rnn-xframework parity: [{i + 1}/4] {label}: ") and "0 failed" in line, line


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_parity_progress_is_a_bar_on_a_terminal():
    pytest.importorskip("rich")
    stream = FakeTerminal()
    with cli.progress_reporter(stream) as progress:
        progress(0, 2, "LSTMCell float32", None)
        progress(0, 2, "LSTMCell float32", [])
    drawn = stream.getvalue()
    assert "LSTMCell float32" in drawn and "1/2" in drawn and "\x1b[" in drawn  # redrawn in place
    assert "rnn-xframework parity: [" not in drawn  # not the line-per-group form


def test_parity_stderr_has_progress_and_nothing_else():
    """No TensorFlow import lines (absl::InitializeLog, oneDNN) and no tf.function retracing warning."""
    require("torch")
    require("tensorflow")
    out = run_cli("parity", "--backends", "torch", "tensorflow", *SMALL)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stderr.splitlines()
    assert len(lines) == 6, out.stderr
    assert all(line.startswith("rnn-xframework parity: [") for line in lines), out.stderr


def test_new_tf_graphs_of_a_known_structure_do_not_retrace(rng):
    """``xf.compile`` of many TF RNNs of one structure, each called once (what the parity suite does):
    one trace, so TensorFlow's retracing warning never fires."""
    require("tensorflow")
    import tensorflow as tf

    from rnn_xframework import compile as compile_rnn
    from rnn_xframework import layers

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    tf.get_logger().addHandler(handler)
    try:
        x = tf.constant(rng.normal(size=(2, 3, 5)).astype("float32"))
        outs = []
        for _ in range(8):
            rnn = layers.RNN([layers.SimpleRNNCell(4, backend="tf"), layers.SimpleRNNCell(4, backend="tf")])
            rnn.build((None, None, 5))
            fast = compile_rnn(rnn, "tf.function")
            outs.append((fast(x).numpy(), rnn(x).numpy()))
    finally:
        tf.get_logger().removeHandler(handler)
    retracing = [r.getMessage() for r in records if "retracing" in r.getMessage()]
    assert not retracing, retracing
    for got, want in outs:  # each compiled RNN still computes with its own weights
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_bench_from_json_is_not_cut_in_a_pipe():
    """The repository's own results, rendered into a pipe: every number shown, no line wrapped."""
    pytest.importorskip("rich")
    path = ROOT / "benchmarks" / "results" / "final_cpu.json"
    out = run_cli("bench", "--from-json", str(path))
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout, out.stdout
    doc = json.loads(path.read_text())
    shown = out.stdout.splitlines()
    for line in doc["header"]:
        assert line in shown, line  # whole, on one line
    first = doc["results"][0]
    assert f"{first['gflops']:.1f}" in out.stdout


def test_bench_header_lines_are_never_broken_even_on_a_narrow_terminal():
    pytest.importorskip("rich")
    from rich.console import Console

    from rnn_xframework.bench.tables import render_all

    doc = json.loads((ROOT / "benchmarks" / "results" / "final_cpu.json").read_text())
    console = Console(file=io.StringIO(), width=60, force_terminal=True, color_system=None)
    render_all(console, doc, [str(w["name"]) for w in doc["workloads"]], "torch nn.RNN")
    shown = console.file.getvalue().splitlines()
    for line in doc["header"]:
        assert line in shown, line  # the terminal wraps it for display; the text keeps it whole
