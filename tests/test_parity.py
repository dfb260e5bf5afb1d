"""The parity suite catches what it must: each check kind fails on a perturbed weight, a trainable
``bias_hh`` or a wrong Adam epsilon; it passes on the real thing; golden files round-trip."""

import json

import numpy as np
import pytest
from conftest import require

from rnn_xframework import backends, parity, registry, transfer
from rnn_xframework.parity import matrix, training
from rnn_xframework.parity.problem import orderings_for
from rnn_xframework.parity.report import FAIL, PASS, SKIP
from rnn_xframework.parity.training import Optimizer
from rnn_xframework.testing import GOLDEN_DIR

DTYPES = ("float32", "float64")

SMALL = parity.Sizes(batch=2, steps=6, features=5, units=7, layers=2)


def small_run(**kw):
    return parity.run(parity.Config(sizes=SMALL, **kw))


MASKED = ("masked", "masked:wide", "masked:grad")  # the call with mask=: outputs and states (and on a wide
# shuffled batch without autograd), gradients


def by_check(report, backend):
    out = {}
    for r in report.results:
        if r.backend == backend:
            out.setdefault(r.check, set()).add(r.status)
    return out


def test_every_check_passes_on_torch_and_tensorflow():
    require("torch")
    require("tensorflow")
    report = small_run(backends=["numpy", "torch", "tensorflow"])
    assert report.passed, parity.format_plain(report)
    torch_checks = by_check(report, "torch")
    assert torch_checks == {c: {PASS} for c in ("forward", "backward", "train:sgd", "train:adam", *MASKED)}
    numpy_checks = by_check(report, "numpy")
    skips = {c: {SKIP} for c in ("backward", "train:sgd", "train:adam", "masked:grad")}
    assert numpy_checks == {"forward": {PASS}, "masked": {PASS}, "masked:wide": {PASS}, **skips}
    notes = {}
    for r in report.results:
        if r.backend == "torch" and r.check.startswith("train"):
            notes.setdefault(r.cell, set()).add(r.note)
    # Keras has one bias where torch has two: bias_hh stays frozen at zero in both layers.
    assert notes["SimpleRNNCell"] == notes["LSTMCell"] == {"2 frozen params unchanged"}
    assert notes["GRUCell"] == {""}  # both GRU biases are Keras's two bias rows, both trained


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_perturbed_weight_fails_every_check(monkeypatch, dtype):
    """1e-3 added to one recurrent weight of every torch model: forward, backward and training fail."""
    require("torch")
    real = transfer.transfer_weights

    def perturbed(src, dst):
        real(src, dst)
        if dst.backend == "torch":
            weights = dst.get_weights()
            weights[1][0, 0] += 1e-3
            dst.set_weights(weights)
        return dst

    monkeypatch.setattr(transfer, "transfer_weights", perturbed)
    report = small_run(backends=["torch"], dtypes=[dtype])
    statuses = by_check(report, "torch")
    checks = ("forward", "backward", "train:sgd", "train:adam", *MASKED)
    assert statuses == {c: {FAIL} for c in checks}, parity.format_plain(report)
    assert not report.passed
    assert all("worst:" in r.note for r in report.results)


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_a_mask_ignored_fails_the_masked_checks(monkeypatch, backend):
    """Compiled objects that drop the mask (run the call unmasked) pass forward, backward and
    training, and the masked rows alone catch them."""
    require(backend)
    require("tensorflow")
    if backend == "torch":
        from rnn_xframework.backends.torch.compile.compiled_module import CompiledRNN as cls

        name = "forward"
    else:
        from rnn_xframework.backends.tensorflow.compile.function import CompiledRNN as cls

        name = "__call__"
    real = getattr(cls, name)
    monkeypatch.setattr(
        cls, name, lambda self, x, initial_state=None, training=None, mask=None: real(self, x, initial_state, training)
    )
    report = small_run(backends=[backend], dtypes=["float64"])
    compiled_rows = [r for r in report.results if r.ordering not in ("timestep", "layer", "all")]
    assert compiled_rows and not report.passed
    for r in compiled_rows:
        assert r.status == (FAIL if r.check in MASKED else PASS), parity.format_plain(report)
    assert all(r.status == PASS for r in report.results if r.ordering in ("timestep", "layer"))


def test_a_trainable_bias_hh_fails_training(monkeypatch):
    """A torch cell that trains both biases moves the canonical bias twice as far: caught."""
    require("torch")
    require("tensorflow")
    make_cell = parity.problem.layers.make_cell

    def with_bias_hh(kind, *, backend=None, **kw):
        if backend == "torch":
            kw["train_recurrent_bias"] = True
        return make_cell(kind, backend=backend, **kw)

    monkeypatch.setattr(parity.problem.layers, "make_cell", with_bias_hh)
    # SimpleRNN and LSTM have one Keras bias (GRU's two biases are both Keras's and both train).
    cells = ["SimpleRNNCell", "LSTMCell"]
    report = small_run(backends=["torch"], dtypes=["float64"], orderings=["timestep"], checks=["training"], cells=cells)
    rows = [r for r in report.results if r.backend == "torch"]
    assert [r.status for r in rows] == [FAIL] * 4, parity.format_plain(report)
    assert all(r.note in ("worst: update of weights[2]", "worst: update of weights[5]") for r in rows)  # a bias
    assert all(r.max_rel > 0.5 for r in rows)


def test_without_tensorflow_torch_on_the_cpu_is_the_gradient_reference(monkeypatch):
    """A GPU box with torch but no TensorFlow: backward and training compare with torch on the CPU."""
    require("torch")
    installed = registry.installed()
    monkeypatch.setattr(registry, "installed", lambda: [b for b in installed if b != "tensorflow"])
    report = small_run(backends=["torch"], dtypes=["float64"])
    assert report.passed, parity.format_plain(report)
    assert "backward and training vs torch (timestep, cpu)" in report.references[1]
    grads = {(r.ordering, r.reference) for r in report.results if r.check == "backward"}
    every = {(o, "torch") for o in orderings_for("torch", "cpu")}  # timestep, layer, torchscript, cpu
    assert grads == every - {("timestep", "torch")}  # the reference is not compared with itself


def test_torch_gradients_with_a_trainable_bias_hh_are_refused(rng):
    require("torch")
    problem = parity.random_problem("SimpleRNNCell", SMALL, "float64")
    model = parity.build(problem, "torch")
    for cell in model.cells:
        cell.train_recurrent_bias = True
    with pytest.raises(ValueError, match="bias_hh frozen"):
        training.loss_and_grads("torch", model, problem.x, problem.states, problem.loss_weights)


def test_adam_epsilon_is_mapped_to_torchs_placement():
    """Keras adds epsilon to sqrt(v), torch to sqrt(v)/sqrt(1-beta_2): with gradients as small as
    epsilon the two only agree with the mapped epsilon (Keras's default 1e-7 here)."""
    require("torch")
    require("tensorflow")
    import keras
    import tensorflow as tf
    import torch

    from rnn_xframework.parity.train_torch import adam_epsilon

    g = np.array([3e-7, -1e-6, 2e-8, 0.5])
    lr, b1, b2, eps = matrix.LEARNING_RATE, matrix.BETA_1, matrix.BETA_2, 1e-7
    var = tf.Variable(np.zeros(4))
    keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps).apply_gradients([(tf.constant(g), var)])

    def torch_step(torch_eps):
        p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        p.grad = torch.from_numpy(g)
        torch.optim.Adam([p], lr=lr, betas=(b1, b2), eps=torch_eps).step()
        return p.detach().numpy()

    mapped = torch_step(adam_epsilon(Optimizer("adam", lr, b1, b2, eps)))  # what train_torch.train_step uses
    assert np.max(np.abs(mapped - var.numpy())) <= 1e-10 * lr
    assert np.max(np.abs(torch_step(eps) - var.numpy())) > 0.1 * lr  # the naive setting differs


def test_train_step_backends_agree_with_kerass_default_epsilon():
    """The same through the backends: tiny gradients, Keras's epsilon 1e-7, float64."""
    require("torch")
    require("tensorflow")
    problem = parity.random_problem("SimpleRNNCell", SMALL, "float64")
    w_y, w_s = problem.loss_weights
    problem.loss_weights = (w_y * 1e-6, [[s * 1e-6 for s in layer] for layer in w_s])
    opt = Optimizer("adam", matrix.LEARNING_RATE, matrix.BETA_1, matrix.BETA_2, epsilon=1e-7)
    tf_updates, _ = matrix.train(problem, "tensorflow", "timestep", "cpu", opt, None)
    torch_updates, note = matrix.train(problem, "torch", "timestep", "cpu", opt, None)
    _, rel, worst = parity.report.compare(torch_updates, tf_updates, [str(i) for i in range(len(tf_updates))])
    assert rel <= 1e-10, worst
    assert note == "2 frozen params unchanged"


def test_golden_round_trip_and_a_corrupted_file_fails(tmp_path):
    require("tensorflow")
    paths = parity.write_golden(tmp_path / "g", sizes=SMALL, dtypes=["float64"])
    assert sorted(p.name for p in paths) == ["GRUCell-float64.npz", "LSTMCell-float64.npz", "SimpleRNNCell-float64.npz"]
    paths = [p for p in paths if p.name.startswith("SimpleRNNCell")]
    with np.load(paths[0], allow_pickle=False) as f:
        assert {"inputs", "outputs", "grads.inputs", "grads.weights.0", "__meta__"} <= set(f.files)
    assert parity.check_golden(tmp_path / "g", ["tensorflow"]).passed
    with np.load(paths[0], allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["grads.weights.1"] = arrays["grads.weights.1"] * (1 + 1e-6)
    np.savez(paths[0], **arrays)
    report = parity.check_golden(tmp_path / "g", ["tensorflow"])
    simple = [r for r in report.results if r.cell == "SimpleRNNCell"]
    assert [r.status for r in simple if r.check == "backward"] == [FAIL] * len(orderings_for("tensorflow"))
    assert all(r.status == PASS for r in report.results if r.cell != "SimpleRNNCell")
    assert all("d weights[1]" in r.note for r in report.results if r.status == FAIL)


def test_shipped_golden_checks_torch_and_numpy_forward():
    require("torch")
    report = parity.check_golden(GOLDEN_DIR, ["torch", "numpy"], ["cpu"])
    assert report.passed, parity.format_plain(report)
    rows = {(r.backend, r.check, r.dtype): r.status for r in report.results}
    for dtype in ("float32", "float64"):
        assert rows[("torch", "forward", dtype)] == PASS and rows[("torch", "backward", dtype)] == PASS
        assert rows[("numpy", "forward", dtype)] == PASS and rows[("numpy", "backward", dtype)] == SKIP


def test_golden_check_of_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no golden"):
        parity.check_golden(tmp_path)


def test_strict_numerics_turns_tf32_off_and_restores_it():
    require("torch")
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with backends.get("torch").strict_numerics() as settings:
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert settings == [
                "torch.backends.cuda.matmul.allow_tf32: True -> False (restored after)",
                "torch.backends.cudnn.allow_tf32: True -> False (restored after)",
            ]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_plan_rejects_bad_configs():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        parity.plan(parity.Config(backends=["jax"]))
    with pytest.raises(ValueError, match="unknown ordering"):
        parity.plan(parity.Config(backends=["numpy"], orderings=["sideways"]))
    with pytest.raises(ValueError, match="unknown cell type"):
        parity.plan(parity.Config(backends=["numpy"], cells=["LSTMCellX"]))
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        parity.plan(parity.Config(backends=["numpy"], devices=["cuda"]))
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        parity.Sizes(batch=0)


def test_json_report(tmp_path):
    report = small_run(backends=["numpy"], dtypes=["float64"])
    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is True and data["counts"]["FAIL"] == 0
    assert data["tolerances"]["float64/cpu"] == {"forward": 1e-12, "gradient": 1e-10, "training": 1e-10}
    row = data["results"][0]
    assert {"check", "backend", "ordering", "device", "dtype", "max_abs", "max_rel", "tolerance", "status"} <= set(row)


def test_plain_table_without_rich(monkeypatch, capsys):
    monkeypatch.setattr(parity.report, "rich_available", lambda: False)
    report = small_run(backends=["numpy"], dtypes=["float32"])
    parity.print_report(report)
    out = capsys.readouterr().out
    assert "max abs err" in out and "PASS" in out and out.strip().endswith(report.verdict())


def test_golden_dir_is_shipped_with_the_package():
    names = sorted(p.name for p in GOLDEN_DIR.glob("*.npz"))
    assert names == [f"{cell}-{dtype}.npz" for cell in ("GRUCell", "LSTMCell", "SimpleRNNCell") for dtype in DTYPES]
    assert sum(p.stat().st_size for p in GOLDEN_DIR.iterdir()) < 2 * 1024 * 1024
    assert GOLDEN_DIR.is_dir() and all(p.is_file() for p in GOLDEN_DIR.glob("*.npz"))  # real files, not zip members


def test_parity_testing_and_cli_import_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, rnn_xframework.parity, rnn_xframework.testing, rnn_xframework.cli\n"
        "rnn_xframework.cli.build_parser()\n"
        "print(' '.join(m for m in ('torch', 'tensorflow', 'keras', 'rich') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_cell_type_at_the_chapter_sizes(dtype):
    """Forward, gradients and both optimizer steps of SimpleRNN, LSTM and GRU stacks at the
    chapter's sizes (batch 4, 80 steps, 100 features, 64 units, 2 layers), torch vs TensorFlow."""
    require("torch")
    require("tensorflow")
    report = parity.run(parity.Config(backends=["torch", "tensorflow"], dtypes=[dtype], orderings=["timestep"]))
    assert report.passed, parity.format_plain(report)
    checked = {(r.cell, r.check) for r in report.results if r.backend == "torch" and r.status == PASS}
    for cell in ("SimpleRNNCell", "LSTMCell", "GRUCell"):
        assert {(cell, c) for c in ("forward", "backward", "train:sgd", "train:adam")} <= checked
