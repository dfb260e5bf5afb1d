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


# --- variants: masked (random lengths) and bidirectional workloads (issue 20) -------------------
CELL_TYPES = ["SimpleRNNCell", "LSTMCell", "GRUCell"]


@pytest.fixture(params=CELL_TYPES)
def cell_type(request):
    return request.param


@pytest.mark.parametrize("steps", [1, 2, 7, 80, 101])
def test_masked_lengths_are_seeded_and_between_half_and_all_steps(steps):
    import math

    from rnn_xframework.bench.workloads import Workload

    w = Workload("w", batch=64, steps=steps, features=3, units=4).variant(masked=True)
    lengths = w.lengths()
    assert len(lengths) == 64 and lengths == w.lengths()  # seeded: the same draw every time (every worker)
    assert min(lengths) >= math.ceil(steps / 2) and max(lengths) <= steps, lengths
    if steps >= 7:
        assert len(set(lengths)) > 1, lengths  # random, not one fixed length
    assert w.variant(masked=False).lengths() == [steps] * 64
    assert w.to_dict()["lengths"] == lengths  # the JSON keeps the lengths the run used


def test_variant_names_and_flops(cell_type):
    from rnn_xframework.bench.workloads import WORKLOADS

    w1 = WORKLOADS["W1"]
    plain, bi = w1.variant(cell_type), w1.variant(cell_type, bidirectional=True)
    masked, both = w1.variant(cell_type, masked=True), w1.variant(cell_type, bidirectional=True, masked=True)
    short = {"SimpleRNNCell": "W1", "LSTMCell": "W1 LSTM", "GRUCell": "W1 GRU"}[cell_type]
    names = [plain.name, bi.name, masked.name, both.name]
    assert names == [short, f"{short} bi", f"{short} masked", f"{short} bi masked"]
    assert both.base == "W1" and both.variant(masked=False).name == short  # a variant of a variant starts over
    b, t, f, u = w1.batch, w1.steps, w1.features, w1.units
    g = {"SimpleRNNCell": 1, "LSTMCell": 4, "GRUCell": 3}[cell_type]
    assert bi.forward_flops() == 2 * 2 * b * t * g * (f * u + u * u) + 2 * 2 * b * t * g * (2 * u * u + u * u)
    real = sum(masked.lengths())
    assert masked.forward_flops() * b * t == plain.forward_flops() * real  # padding is not counted as work
    assert both.forward_flops() * b * t == bi.forward_flops() * real


def _tiny(cell_type, bidirectional, masked):
    from rnn_xframework.bench.workloads import Workload

    return Workload("3x7x4x5", batch=3, steps=7, features=4, units=5).variant(
        cell_type, bidirectional=bidirectional, masked=masked
    )


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_the_packed_torch_peer_computes_what_our_masked_rnn_does(cell_type, bidirectional):
    """``nn.LSTM`` on a ``PackedSequence`` of the workload's lengths (what the bench times) equals the
    library's eager masked network (what the xf rows time) with the same weights: the same lengths,
    zeros in the padding, the backward direction starting at each sequence's last real step."""
    require("torch")
    import torch
    from conftest import TOL

    import rnn_xframework as xf
    from rnn_xframework.backends.torch import nn_modules
    from rnn_xframework.bench import torch_peers, xf_methods

    w = _tiny(cell_type, bidirectional, masked=True)
    assert len(set(w.lengths())) > 1 and max(w.lengths()) <= w.steps
    net = xf_methods.network("torch", w, "cpu")
    peer = torch_peers._nn_module(w, "cpu")
    state = {}
    if bidirectional:
        for i, layer in enumerate(net):
            fused = nn_modules.to_fused_bidirectional(layer)
            state.update({k.replace("_l0", f"_l{i}"): v for k, v in fused.state_dict().items()})
    else:
        state = xf.to_torch_fused(net[0]).state_dict()
    peer.load_state_dict(state)
    x = torch_peers._input(w, False, "cpu")
    with torch.no_grad():
        got = torch_peers.packed_forward(peer, x, torch.tensor(w.lengths()))
        want = xf_methods.chain(net, torch_peers.mask(w, "cpu"))(x)
        unmasked = xf_methods.chain(net, None)(x)
    assert got.shape == want.shape == (w.batch, w.steps, (2 if bidirectional else 1) * w.units)
    assert (got - want).abs().max().item() <= TOL["float32"]
    for i, length in enumerate(w.lengths()):
        assert not got[i, length:].any()  # the padding is zeros
        diff = (got[i, :length] - unmasked[i, :length]).abs().max().item()
        if bidirectional and length < w.steps:
            assert diff > 1e-3  # the backward direction starts at the last real step, not at the padding
        else:
            assert diff <= TOL["float32"]  # forwards, the real steps come first: as if unmasked


def test_the_masked_keras_peer_computes_each_sequence_on_its_real_steps(cell_type):
    """Keras's stack given the mask (``Sequential`` drops a mask passed to it: the bench calls the
    layers) returns, per sequence, what the same stack returns on that sequence's real steps alone."""
    require("tensorflow")
    import numpy as np
    from conftest import TOL

    from rnn_xframework.bench import tf_peers

    w = _tiny(cell_type, False, masked=True)
    forward, model, x = tf_peers.keras_stack(w, "cpu")
    got = forward(x).numpy()
    layer1, layer2 = model.layers
    for i, length in enumerate(w.lengths()):
        alone = layer2(layer1(x[i : i + 1, :length])).numpy()[0]
        np.testing.assert_allclose(got[i], alone, rtol=0, atol=TOL["float32"])
    assert np.abs(got - model(x).numpy()).max() > 1e-3  # and the mask changed the answer


@pytest.mark.parametrize(
    ("bidirectional", "masked"), [(False, True), (True, False), (True, True)], ids=["masked", "bi", "bi masked"]
)
def test_every_variant_peer_runs_forward_and_backward(cell_type, bidirectional, masked):
    """Set up and call (forward + backward) the peers and our eager methods for the variant, in this
    process: PyTorch's module (packed when masked), Keras's layer, ours. (The tf.function and XLA rows
    wrap the same forward: the end-to-end run below and test_the_new_keras_rows_compile cover them.)"""
    require("torch")
    require("tensorflow")
    from rnn_xframework.bench.methods import METHODS
    from rnn_xframework.bench.worker import load_plugins

    load_plugins([])
    w = _tiny(cell_type, bidirectional, masked)
    names = ["torch nn.RNN", f"keras {cell_type.removesuffix('Cell')} eager", "xf torch eager", "xf tf eager"]
    assert all(METHODS[n].runs(w) for n in names)
    for name in names:
        run, first_s = METHODS[name].setup(w, True, "cpu")
        assert first_s > 0 and run() is not None, name


@pytest.mark.parametrize("name", ["keras LSTM xla", "keras GRU xla"])
def test_the_new_keras_rows_compile(name):
    require("tensorflow")
    from rnn_xframework.bench.methods import METHODS
    from rnn_xframework.bench.worker import load_plugins

    load_plugins([])
    cell = name.split()[1] + "Cell"
    w = _tiny(cell, False, False)
    assert METHODS[name].runs(w) and not METHODS[name].runs(_tiny("SimpleRNNCell", False, False))
    run, _ = METHODS[name].setup(w, False, "cpu")
    assert tuple(run().shape) == (w.batch, w.units)  # Keras's stack: layer 2's last output, as in the tutorial


def test_a_refused_variant_is_an_unsupported_row_not_an_error(monkeypatch):
    """A method whose setup raises UnsupportedConfigError (a compiled method given mask=) gets an
    'unsupported' cell and line with the refusal; the run goes on and the other rows are timed."""
    from rnn_xframework.bench import methods, tables, worker
    from rnn_xframework.bench.timing import Budget
    from rnn_xframework.errors import UnsupportedConfigError

    def refuses(w, grad, device):
        raise UnsupportedConfigError("compile: the test loop takes no mask")

    def runs(w, grad, device):
        return (lambda: None), 0.001

    monkeypatch.setitem(methods.METHODS, "test refuses", methods.Method("test refuses", "numpy", refuses, masks=True))
    monkeypatch.setitem(methods.METHODS, "test runs", methods.Method("test runs", "numpy", runs, masks=True))
    w = _tiny("SimpleRNNCell", False, masked=True)
    job = worker.WorkerJob("numpy", ["test refuses", "test runs"], "cpu", Budget(0.01, 1, 2, 0.0), w)
    refused, timed = (worker._measure_one(job, n) for n in job.methods)
    assert refused["unsupported"] == "compile: the test loop takes no mask" and "error" not in refused
    assert refused["masked"] is True and refused["bidirectional"] is False and refused["workload"] == w.name
    assert timed["median_s"] >= 0 and not tables.timed(refused) and tables.timed(timed)
    text = tables.render_text({"device": "cpu", "results": [refused, timed]}, [w.name], "test runs")
    row = next(line for line in text.splitlines() if line.startswith("│ test refuses"))
    assert "unsupported" in row
    assert f"unsupported: test refuses @ {w.name}: compile: the test loop takes no mask" in text


def test_mask_and_bidirectional_expand_the_workloads_and_filter_the_methods(monkeypatch):
    methods = "torch nn.RNN,torch RNNCell loop,keras LSTM xla,keras SimpleRNN xla,xf torch torchscript"
    argv = ["--workloads", "W1", "--cells", "SimpleRNN,LSTM", "--mask", "both", "--bidirectional", "--methods", methods]
    orchestrate, plan = _plan([*argv, "--gemm", "0"], monkeypatch)
    names = [w.name for w in plan.workloads]
    assert names == ["W1 bi", "W1 bi masked", "W1 LSTM bi", "W1 LSTM bi masked"]
    assert all(w.bidirectional for w in plan.workloads) and [w.masked for w in plan.workloads] == [False, True] * 2
    jobs = {(j.workload.name, j.framework): j.methods for j in plan.jobs}
    assert jobs[("W1 bi masked", "torch")] == ["torch nn.RNN", "xf torch torchscript"]  # no RNNCell loop variant
    assert jobs[("W1 LSTM bi masked", "tensorflow")] == ["keras LSTM xla"]
    assert jobs[("W1 bi", "tensorflow")] == ["keras SimpleRNN xla"]
    job = next(j for j in plan.jobs if j.workload.name == "W1 LSTM bi masked")
    cmd = orchestrate.worker_command(job, plan, "out.json")
    assert cmd[cmd.index("--mask") + 1] == "on" and cmd[cmd.index("--bidirectional") + 1] == "on"
    assert cmd[cmd.index("--cell") + 1] == "LSTMCell"
    _, loops = _plan(["--workloads", "W1", "--mask", "--methods", "torch RNNCell loop", "--gemm", "0"], monkeypatch)
    assert not loops.jobs and loops.notes == [
        "no chosen method runs 'W1 masked' (each method's cells and variants: --list)"
    ]
    _, plain = _plan(["--workloads", "W1", "--methods", methods, "--gemm", "0"], monkeypatch)
    assert [w.name for w in plain.workloads] == ["W1"]
    assert "--mask" not in orchestrate.worker_command(plain.jobs[0], plain, "out.json")


def test_bench_runs_masked_bidirectional_workloads_end_to_end(tmp_path):
    require("torch")
    require("tensorflow")
    path = tmp_path / "bench.json"
    methods = "torch nn.RNN,keras GRU tf.function,xf torch eager,xf tf eager"
    cmd = [sys.executable, "-m", "rnn_xframework", "bench", "--workloads", "2x3x4x5", "--cells", "GRU", "--mask"]
    cmd += ["--bidirectional", "--methods", methods, "--gemm", "0", "--budget-scale", "0.05", "--json", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    doc = json.loads(path.read_text())
    assert not doc["failures"]
    (workload,) = doc["workloads"]
    assert workload["name"] == "2x3x4x5 GRU bi masked" and workload["masked"] and workload["bidirectional"]
    assert all(2 <= n <= 3 for n in workload["lengths"])
    rows = {r["method"]: r for r in doc["results"]}
    assert set(rows) == set(methods.split(","))
    for r in rows.values():
        assert r["masked"] is True and r["bidirectional"] is True and r["cell"] == "GRUCell"
        assert "error" not in r and r["median_s"] > 0, r
    assert "2x3x4x5 GRU bi masked ms" in out.stdout
