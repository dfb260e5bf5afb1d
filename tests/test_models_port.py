"""Whole Keras models -> one torch.nn.Module (xf.to_torch), checked against Keras with xf.compare:
forward within the stated tolerance (float32 1e-5, float64 1e-12), the same trainable parameter
count, and one SGD step giving the same loss and the same weights (tests/port_models.py has the
models: every layer of the vocabulary, alone and together, masked and not)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require

require("torch"), require("tensorflow")

import keras  # noqa: E402
import torch  # noqa: E402
from port_models import MODELS, build  # noqa: E402

import rnn_xframework as xf  # noqa: E402
from rnn_xframework.parity.report import PASS, SKIP  # noqa: E402

L = keras.layers
FLOAT64 = ["sentiment", "rnn_library", "normalization", "bidirectional"]
FLOAT64 += [pytest.param(n, marks=pytest.mark.slow) for n in ("dense", "rnn_stack", "encoder_decoder", "merges")]
FLOAT64 += [pytest.param(n, marks=pytest.mark.slow) for n in ("masked_merges", "convolution", "shared", "activations")]
# the models that need the library's torch layers (Keras dropout, go_backwards, stacks, mixed directions)
LIBRARY = {"rnn_library", "bidirectional_library"}


def check(model, module, inputs=None, steps=1):
    report = xf.compare(model, module, inputs, steps=steps, show=False)
    assert report.passed, [(r.check, r.max_abs, r.max_rel, r.note) for r in report.results]
    rows = {r.check for r in report.results}
    assert "forward" in rows
    dtype = report.results[0].dtype
    assert all(r.max_abs <= TOL[dtype] for r in report.results if r.check == "forward")
    keras_count = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    torch_count = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert torch_count == keras_count
    if steps and keras_count:
        assert {"loss", "weights"} <= rows and all(r.status == PASS for r in report.results)
    return report


@pytest.mark.parametrize("name", list(MODELS))
def test_model_matches_keras_float32(name):
    model = build(name)
    module = xf.to_torch(model)
    assert isinstance(module, torch.nn.Module)
    report = check(model, module)
    assert report.results[0].ordering == ("library layers" if name in LIBRARY else "native")


@pytest.mark.parametrize("name", FLOAT64)
def test_model_matches_keras_float64(name):
    model = build(name, "float64")
    module = xf.to_torch(model)
    assert all(p.dtype == torch.float64 for p in module.parameters())
    check(model, module)


def test_gru_reset_before_ports_on_the_librarys_layer():
    """``GRU(reset_after=False)``, which ``nn.GRU`` cannot express, ports through the library's
    torch GRU (its own parameters and loop), trained and compared with Keras."""
    model = keras.Sequential([keras.Input((5, 3)), L.GRU(4, reset_after=False, return_sequences=True), L.Dense(2)])
    report = check(model, xf.to_torch(model))
    assert report.results[0].ordering == "library layers"


def test_two_sgd_steps_and_check_true():
    model = build("normalization")
    report = check(model, xf.to_torch(model, check=True), steps=2)
    assert any("2 SGD step(s)" in s for s in report.settings)


def test_native_layers_are_pytorchs_own():
    module = xf.to_torch(build("sentiment"))
    kinds = {type(m) for m in module.children()}
    assert kinds == {torch.nn.Embedding, torch.nn.LSTM, torch.nn.Linear}
    assert not module.lstm.bias_hh_l0.requires_grad and module.lstm.bias_ih_l0.requires_grad
    assert torch.count_nonzero(module.lstm.bias_hh_l0) == 0


def test_batch_norm_momentum_and_moving_statistics():
    model = build("normalization")
    module = xf.to_torch(model)
    bn, keras_bn = module.batch_normalization, model.layers[0]
    assert bn.momentum == pytest.approx(1 - keras_bn.momentum) and bn.eps == keras_bn.epsilon
    assert np.array_equal(bn.running_mean.numpy(), keras_bn.moving_mean.numpy())
    assert not np.allclose(bn.running_var.numpy(), 1.0)


def test_shared_layers_stay_one_module():
    module = xf.to_torch(build("shared"))
    assert [name for name, _ in module.named_children()] == ["dense", "lstm"]
    assert "self.lstm(" in module.source() and module.source().count("self.lstm(") == 2


def test_nested_model_is_inlined():
    module = xf.to_torch(build("nested"))
    assert [name for name, _ in module.named_children()] == ["inner_dense", "inner_lstm", "dense_1"]


def test_masks_with_gaps_need_masks_any():
    x = keras.Input((6, 3))
    y = L.LSTM(4, return_sequences=True)(L.Masking(0.0)(x))
    model = keras.Model(x, L.GRU(2)(y))
    gaps = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    gaps[0, 2] = 0.0  # a masked step before real ones
    with pytest.raises(ValueError, match="not right-padded"):
        xf.to_torch(model)(torch.from_numpy(gaps))
    module = xf.to_torch(model, masks="any")
    assert not any(isinstance(m, (torch.nn.LSTM, torch.nn.GRU)) for m in module.children())
    check(model, module, [gaps])


def test_stateful_rnn_carries_states_and_resets():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(batch_shape=(2, 4, 3)), L.LSTM(3, stateful=True), L.Dense(2)])
    module = xf.to_torch(model).eval()
    xs = [np.random.default_rng(i).normal(size=(2, 4, 3)).astype("float32") for i in range(3)]
    want = [np.asarray(model(x)) for x in xs]
    got = [module(torch.from_numpy(x)).detach().numpy() for x in xs]
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True)) <= TOL["float32"]
    assert float(np.abs(want[0] - want[1]).max()) > 1e-3  # the state was carried
    module.reset_states()
    model.layers[0].reset_states()
    assert float(np.abs(module(torch.from_numpy(xs[0])).detach().numpy() - want[0]).max()) <= TOL["float32"]


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (L.Dense(3, activation="relu"), (None, 5, 4)),
        (L.LSTM(3, return_state=True), (None, 5, 4)),
        (L.GRU(3, go_backwards=True, return_sequences=True), (None, 5, 4)),
        (L.Conv1D(2, 3, padding="same"), (None, 6, 4)),
        (L.Bidirectional(L.LSTM(2, return_sequences=True)), (None, 5, 4)),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, tuple) else None,
)
def test_single_layer(layer, shape):
    layer.build(shape)
    module = xf.to_torch(layer)
    x = np.random.default_rng(0).normal(size=(2, *shape[1:])).astype("float32")
    want = layer(x)
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    got = module(torch.from_numpy(x))
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want)
    assert max(float(np.abs(np.asarray(w) - g.detach().numpy()).max()) for g, w in zip(got, want, strict=True)) <= 1e-5


def test_library_objects_still_go_to_torch_nn():
    from rnn_xframework import layers

    rnn = layers.LSTM(4, backend="numpy")
    rnn.build((None, None, 3))
    assert type(xf.to_torch(rnn)) is torch.nn.LSTM


def test_dropout_follows_module_train():
    model = build("dropouts")
    module = xf.to_torch(model)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 6, 4)).astype("float32"))
    module.eval()
    assert torch.equal(module(x), module(x))
    module.train()
    torch.manual_seed(0)
    assert not torch.equal(module(x), module(x))


def test_compare_prints_the_parity_table(capsys):
    model = build("dense")
    report = xf.compare(model, xf.to_torch(model), steps=1)
    out = capsys.readouterr().out
    assert "xf.compare: Dense (Keras)" in out and "max abs err" in out
    assert {r.status for r in report.results} <= {PASS, SKIP}
    assert report.as_dict()["passed"] is True
