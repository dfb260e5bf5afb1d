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
    assert max(len(line) for line in out.stdout.splitlines()) > 120  # a pipe gets the whole table, not 80 columns
    # Off a terminal the progress is a line per worker on stderr; stdout (a log) starts with the report.
    assert out.stdout.startswith("rnn_xframework peers benchmark, "), out.stdout[:500]
    progress = [line for line in out.stderr.splitlines() if line.startswith("rnn-xframework bench: [")]
    assert len(progress) == 4 and progress[-1].startswith("rnn-xframework bench: [4/4] "), out.stderr


def test_bench_lists_the_librarys_methods():
    out = subprocess.run([sys.executable, "-m", "rnn_xframework", "bench", "--list"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("xf torch eager", "xf torch cell loop", "xf torch auto", "xf tf xla", "keras SimpleRNN xla"):
        assert name in out.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--methods", "no such method"],
        ["--workloads", "W9"],
        ["--workloads", "0x3x4x5"],
        *(["--budget-scale", bad] for bad in ("0", "-1", "nan", "inf")),
    ],
)
def test_bench_rejects_bad_flags_in_one_line(argv):
    out = subprocess.run([sys.executable, "-m", "rnn_xframework", "bench", *argv], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("rnn-xframework bench: error: ") and len(out.stderr.strip().splitlines()) == 1


def _plan(argv, monkeypatch, missing=()):
    from rnn_xframework.bench import orchestrate
    from rnn_xframework.bench.harness import build_parser
    from rnn_xframework.bench.worker import load_plugins

    load_plugins([])
    monkeypatch.setattr(orchestrate, "_installed", lambda fw: fw not in missing)
    return orchestrate, orchestrate.build_plan(build_parser().parse_args(argv))


def test_cells_expand_the_workloads_and_filter_the_methods(monkeypatch):
    methods = "torch nn.RNN,xf torch torchscript,keras SimpleRNN eager"
    _, plan = _plan(["--workloads", "W1", "--cells", "all", "--methods", methods, "--gemm", "0"], monkeypatch)
    assert [w.name for w in plan.workloads] == ["W1", "W1 LSTM", "W1 GRU"]
    assert [w.cell for w in plan.workloads] == ["SimpleRNNCell", "LSTMCell", "GRUCell"]
    jobs = {(j.workload.name, j.framework): j.methods for j in plan.jobs}
    assert jobs[("W1 LSTM", "torch")] == ["torch nn.RNN", "xf torch torchscript"]
    assert ("W1 LSTM", "tensorflow") not in jobs  # the Keras SimpleRNN peer has no LSTM
    assert jobs[("W1", "tensorflow")] == ["keras SimpleRNN eager"]
    assert plan.workloads[1].forward_flops() == 4 * plan.workloads[0].forward_flops()


def test_a_missing_framework_is_skipped_with_a_note(monkeypatch):
    """A torch-only GPU machine: the TensorFlow methods (and GEMM worker) drop out of the plan."""
    argv = ["--workloads", "W1", "--methods", "torch nn.RNN,xf tf xla", "--grad", "--gemm", "64"]
    _, plan = _plan(argv, monkeypatch, missing=("tensorflow",))
    assert "tensorflow" not in {j.framework for j in plan.jobs} and "torch" in {j.framework for j in plan.jobs}
    assert "skipped the tensorflow methods: tensorflow is not installed here" in plan.notes


def test_a_framework_without_the_device_is_skipped_not_fatal(monkeypatch):
    """A worker that reports the device unusable (TensorFlow without GPU support) drops that
    framework with a note; the others' results stay and the run does not fail."""
    argv = ["--workloads", "2x3x4x5", "--methods", "torch nn.RNN,xf tf xla", "--gemm", "0"]
    orchestrate, plan = _plan(argv, monkeypatch)
    calls = []

    def fake_worker(job, plan, on_progress):
        calls.append(job.framework)
        if job.framework == "tensorflow":
            return {"fatal": "TensorFlow sees no GPU", "returncode": 3}
        record = {"method": job.methods[0], "workload": job.workload.name, "grad": False, "median_s": 1.0}
        return {"versions": {}, "results": [record], "returncode": 0}

    monkeypatch.setattr(orchestrate, "run_worker", fake_worker)
    doc = orchestrate.run_plan(plan, [])
    assert "fatal" not in doc and calls == ["torch", "tensorflow"]
    assert [r["method"] for r in doc["results"]] == ["torch nn.RNN"]
    assert "skipped the tensorflow methods: TensorFlow sees no GPU" in doc["notes"]


@pytest.mark.parametrize("argv", [["--cells", "LSTM,Transformer"], ["--cells", ""]])
def test_bad_cells_are_one_line(argv):
    out = subprocess.run([sys.executable, "-m", "rnn_xframework", "bench", *argv], capture_output=True, text=True)
    assert out.returncode == 2 and "--cells" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"budget_s": 0},
        {"budget_s": -1.0},
        {"budget_s": float("nan")},
        {"warmup_s": -0.1},
        {"min_sample_s": 0.0},
        {"min_repeats": 0},
        {"max_repeats": 2.5},
        {"min_repeats": True},
        {"min_repeats": 9, "max_repeats": 3},
    ],
)
def test_a_budget_that_cannot_be_measured_with_is_refused(bad):
    from rnn_xframework.bench.timing import Budget

    with pytest.raises(ValueError, match="budget: "):
        Budget(**bad)
    assert Budget(warmup_s=0.0, min_repeats=1, max_repeats=1).max_repeats == 1  # the edges are fine
