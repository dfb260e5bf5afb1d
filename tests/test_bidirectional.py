"""``layers.Bidirectional`` on every backend against Keras's own ``keras.layers.Bidirectional``:
every merge_mode, masked and not, return_state, initial_state, go_backwards on the inner layer;
weights in Keras's order (get/set, transfer, convert, files); ports both ways."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, inference_mode, max_err, native, numpy

import rnn_xframework as xf
from rnn_xframework import layers

keras = pytest.importorskip("keras")

MERGE_MODES = ["concat", "sum", "mul", "ave", None]
BATCH, STEPS, FEATURES, UNITS = 3, 6, 4, 5


def flat(out):
    """Every tensor of an output structure, in order: ``(y, [[h, c], [h, c]])`` and Keras's flat
    ``[y, h, c, h, c]`` give the same list."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flat(o)]
    return [out]


def keras_bidirectional(kind, dtype, merge_mode="concat", **kw):
    layer = getattr(keras.layers, kind.removesuffix("Cell"))(UNITS, dtype=dtype, **kw)
    bi = keras.layers.Bidirectional(layer, merge_mode=merge_mode, dtype=dtype)
    bi.build((None, None, FEATURES))
    return bi


def problem(rng, dtype, masked):
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype)
    mask = np.ones((BATCH, STEPS), bool)
    if masked:
        mask[1, 4:] = False  # right-padded, as Embedding(mask_zero=True) gives
        mask[2, 1:] = False
    return x, (mask if masked else None)


def call(backend, obj, x, mask=None, **kw):
    m = None if mask is None else native(backend, mask)
    return obj(native(backend, x), mask=m, **kw)


def library_like(backend, keras_bi, kind, dtype, merge_mode, **kw):
    rnn = getattr(layers, kind.removesuffix("Cell"))(UNITS, backend=backend, dtype=dtype, **kw)
    return layers.Bidirectional(rnn, merge_mode=merge_mode, weights=keras_bi.get_weights())


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("merge_mode", MERGE_MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_sequences_match_keras(backend, rng, kind, merge_mode, masked):
    require(backend)
    k = keras_bidirectional(kind, "float64", merge_mode, return_sequences=True)
    x, mask = problem(rng, "float64", masked)
    want = flat(k(x, mask=mask))
    bi = library_like(backend, k, kind, "float64", merge_mode, return_sequences=True)
    got = flat(call(backend, bi, x, mask))
    assert len(got) == len(want) == (2 if merge_mode is None else 1)
    assert max(max_err(numpy(backend, g), w) for g, w in zip(got, want, strict=True)) <= TOL["float64"]
    if masked:  # Keras's rule: zeros at the padding in both directions (zero_output_for_mask)
        assert all(np.all(numpy(backend, g)[~mask] == 0) for g in got)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_return_state_matches_keras(backend, dtype, rng, masked, return_sequences):
    require(backend)
    k = keras_bidirectional("LSTMCell", dtype, return_sequences=return_sequences, return_state=True)
    x, mask = problem(rng, dtype, masked)
    want = flat(k(x, mask=mask))  # [y, h_f, c_f, h_b, c_b]
    bi = library_like(backend, k, "LSTMCell", dtype, "concat", return_sequences=return_sequences, return_state=True)
    y, states = call(backend, bi, x, mask)
    assert [len(s) for s in states] == [2, 2]  # forward [h, c], then backward [h, c]
    got = flat([y, states])
    assert max(max_err(numpy(backend, g), w) for g, w in zip(got, want, strict=True)) <= TOL[dtype]


def test_initial_state_first_half_forward(backend, rng):
    require(backend)
    k = keras_bidirectional("GRUCell", "float64", "sum", return_sequences=True)
    x, _ = problem(rng, "float64", False)
    h_f, h_b = (rng.normal(size=(BATCH, UNITS)) for _ in range(2))
    want = k(x, initial_state=[h_f, h_b])
    bi = library_like(backend, k, "GRUCell", "float64", "sum", return_sequences=True)
    nested = call(backend, bi, x, initial_state=[[native(backend, h_f)], [native(backend, h_b)]])
    keras_flat = call(backend, bi, x, initial_state=[native(backend, h_f), native(backend, h_b)])
    assert max_err(numpy(backend, nested), want) <= TOL["float64"]
    assert max_err(numpy(backend, keras_flat), want) <= TOL["float64"]
    with pytest.raises(xf.StateStructureError, match="even length"):
        call(backend, bi, x, initial_state=[native(backend, h_f)])


def test_go_backwards_inner_layer_with_backward_layer(backend, rng):
    """Keras's own pairing: a forward layer that goes backwards, with a backward_layer that does not."""
    require(backend)
    fwd = keras.layers.SimpleRNN(UNITS, return_sequences=True, go_backwards=True, dtype="float64")
    bwd = keras.layers.SimpleRNN(UNITS, return_sequences=True, activation="relu", dtype="float64")
    k = keras.layers.Bidirectional(fwd, backward_layer=bwd, dtype="float64")
    k.build((None, None, FEATURES))
    x, mask = problem(rng, "float64", True)
    want = k(x, mask=mask)
    ours_fwd = layers.SimpleRNN(UNITS, return_sequences=True, go_backwards=True, backend=backend, dtype="float64")
    ours_bwd = layers.SimpleRNN(UNITS, return_sequences=True, activation="relu", backend=backend, dtype="float64")
    bi = layers.Bidirectional(ours_fwd, backward_layer=ours_bwd, weights=k.get_weights())
    assert bi.backward_layer is ours_bwd and bi.forward_layer is not ours_fwd  # Keras's rule: layer is copied
    assert max_err(numpy(backend, call(backend, bi, x, mask)), want) <= TOL["float64"]
    with pytest.raises(xf.UnsupportedConfigError, match="different go_backwards"):
        layers.Bidirectional(ours_fwd)  # Keras raises too: both layers would go backwards
    with pytest.raises(xf.UnsupportedConfigError, match="merge_mode"):
        layers.Bidirectional(ours_bwd, merge_mode="max")


def test_weights_in_keras_order_transfer_convert_and_files(backend, rng, tmp_path):
    require(backend)
    k = keras_bidirectional("LSTMCell", "float32", return_sequences=True)
    bi = library_like(backend, k, "LSTMCell", "float32", "concat", return_sequences=True)
    assert all(np.array_equal(a, b) for a, b in zip(bi.get_weights(), k.get_weights(), strict=True))
    x, mask = problem(rng, "float32", True)
    want = numpy(backend, call(backend, bi, x, mask))
    for other in xf.backends.installed():
        copy = xf.convert(bi, other)
        assert layers.Bidirectional._is(copy) and copy.backend == other
        assert max_err(numpy(other, call(other, copy, x, mask)), want) <= TOL["float32"]
    fresh = layers.Bidirectional(layers.LSTM(UNITS, return_sequences=True, backend=backend), input_size=FEATURES)
    assert max_err(numpy(backend, call(backend, fresh, x, mask)), want) > 1e-3  # new weights differ
    xf.transfer_weights(bi, fresh)
    assert max_err(numpy(backend, call(backend, fresh, x, mask)), want) <= TOL["float32"]
    path = xf.save_weights(bi, tmp_path / "bi")
    again = layers.Bidirectional(layers.LSTM(UNITS, return_sequences=True, backend=backend))  # unbuilt
    xf.load_weights(again, path)
    assert max_err(numpy(backend, call(backend, again, x, mask)), want) <= TOL["float32"]
    stack = layers.RNN([layers.LSTMCell(UNITS, backend=backend), layers.LSTMCell(UNITS, backend=backend)])
    with pytest.raises(xf.WeightsError, match="Bidirectional"):
        xf.transfer_weights(bi, stack)
    before = bi.get_weights()
    with pytest.raises(xf.WeightsError):
        bi.set_weights(before[:3])
    assert all(np.array_equal(a, b) for a, b in zip(bi.get_weights(), before, strict=True))


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
def test_from_keras_and_to_keras(backend, rng, merge_mode):
    require(backend)
    k = keras_bidirectional("GRUCell", "float32", merge_mode, return_sequences=True, return_state=True)
    x, mask = problem(rng, "float32", True)
    want = flat(k(x, mask=mask))
    ported = xf.from_keras(k, backend=backend)
    assert layers.Bidirectional._is(ported) and ported.merge_mode == merge_mode
    assert ported.forward_layer.zero_output_for_mask and ported.backward_layer.go_backwards
    got = flat(call(backend, ported, x, mask))
    assert max(max_err(numpy(backend, g), w) for g, w in zip(got, want, strict=True)) <= TOL["float32"]
    back = xf.to_keras(ported)
    assert type(back) is keras.layers.Bidirectional and back.merge_mode == merge_mode
    again = flat(back(x, mask=mask))
    assert max(max_err(a, w) for a, w in zip(again, want, strict=True)) <= TOL["float32"]


def test_from_keras_forward_layer_with_zero_output_for_mask(backend, rng):
    """The layer Keras builds inside every Bidirectional(return_sequences=True) ports on its own."""
    require(backend)
    k = keras_bidirectional("LSTMCell", "float32", return_sequences=True)
    assert k.forward_layer.zero_output_for_mask
    x, mask = problem(rng, "float32", True)
    for keras_layer in (k.forward_layer, k.backward_layer):
        rnn = xf.from_keras(keras_layer, backend=backend)
        assert rnn.zero_output_for_mask
        want = keras_layer(x, mask=mask)
        assert max_err(numpy(backend, call(backend, rnn, x, mask)), want) <= TOL["float32"]
        assert xf.to_keras(rnn).zero_output_for_mask


def test_model_with_bidirectional_ports(backend, rng):
    require(backend)
    inp = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(20, FEATURES, mask_zero=True)(inp)
    out = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=True), name="bi")(emb)
    model = keras.Model(inp, out)
    tokens = rng.integers(1, 20, size=(BATCH, STEPS))
    tokens[1, 3:] = 0
    ported = xf.from_keras(model, backend=backend)
    assert list(ported) == ["bi"]
    vectors = model.layers[1](tokens).numpy()
    got = call(backend, ported["bi"], vectors, tokens != 0)
    assert max_err(numpy(backend, got), model(tokens)) <= TOL["float32"]


def test_torch_module(rng):
    """A torch Bidirectional is a real module: parameters before the first call, state_dict,
    .to(), train()/eval() dropout, TorchScript."""
    torch = pytest.importorskip("torch")
    bi = layers.Bidirectional(
        layers.LSTM(UNITS, return_sequences=True, return_state=True, backend="torch"), input_size=FEATURES
    )
    assert isinstance(bi, torch.nn.Module) and len(list(bi.parameters())) == 8  # 4 per direction
    assert sum(p.requires_grad for p in bi.parameters()) == 6  # bias_hh frozen at zero: Keras's 6
    assert "backward_layer.cell.cells.0.cell.weight_ih" in bi.state_dict()
    x = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES)))
    bi64 = bi.to(torch.float64)
    y, states = bi64(x)
    assert y.dtype == torch.float64 and y.shape == (BATCH, STEPS, 2 * UNITS) and len(states) == 2
    scripted = torch.jit.script(bi64)
    ys, ss = scripted(x)
    assert max_err(ys.detach(), y.detach()) <= TOL["float64"]
    assert max(max_err(a.detach(), b.detach()) for a, b in zip(flat(ss), flat(states), strict=True)) <= 1e-12
    for merge_mode in ("ave", None):
        plain = layers.Bidirectional(layers.GRU(UNITS, backend="torch"), merge_mode=merge_mode, input_size=FEATURES)
        want = flat(plain(x.float()))
        got = flat(torch.jit.script(plain)(x.float()))
        assert max(max_err(a.detach(), b.detach()) for a, b in zip(got, want, strict=True)) <= TOL["float32"]
    exported = torch.export.export(bi64.eval(), (x,))  # TorchScript's successor
    assert max_err(exported.module()(x)[0].detach(), y.detach()) <= TOL["float64"]
    drop = layers.Bidirectional(layers.GRU(UNITS, dropout=0.5, backend="torch"), input_size=FEATURES).double()
    assert not torch.equal(drop(x), drop(x))  # a new module trains (PyTorch's default): new masks per call
    inference_mode(drop)
    assert torch.equal(drop(x), drop(x)) and not torch.equal(drop(x), drop(x, training=True))


def test_torch_gradients_match_keras_after_one_sgd_step(rng):
    torch = pytest.importorskip("torch")
    import tensorflow as tf

    k = keras_bidirectional("LSTMCell", "float64", "concat", return_sequences=True)
    x, mask = problem(rng, "float64", True)
    target = rng.normal(size=(BATCH, STEPS, 2 * UNITS))
    bi = library_like("torch", k, "LSTMCell", "float64", "concat", return_sequences=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((k(x, mask=mask) - target) ** 2)
    keras_grads = tape.gradient(loss, k.trainable_weights)
    lr = 0.25  # exact in float32, the dtype of Keras's learning-rate variable (0.1 would differ by 1.5e-9)
    keras.optimizers.SGD(lr).apply(keras_grads, k.trainable_weights)
    opt = torch.optim.SGD([p for p in bi.parameters() if p.requires_grad], lr=lr)
    torch_loss = ((bi(torch.from_numpy(x), mask=torch.from_numpy(mask)) - torch.from_numpy(target)) ** 2).mean()
    opt.zero_grad()
    torch_loss.backward()
    opt.step()
    assert abs(float(torch_loss.detach()) - float(loss)) <= TOL["float64"]
    assert max(max_err(a, b) for a, b in zip(bi.get_weights(), k.get_weights(), strict=True)) <= TOL["float64"]


@pytest.mark.parametrize("module", ["RNN", "LSTM", "GRU"])
def test_torch_bidirectional_modules_both_ways(backend, rng, module):
    """A one-layer ``nn.LSTM(bidirectional=True)`` is Bidirectional(merge_mode="concat"), both ways."""
    require(backend)
    torch = pytest.importorskip("torch")
    native_module = getattr(torch.nn, module)(FEATURES, UNITS, batch_first=True, bidirectional=True).double()
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    want = native_module(torch.from_numpy(x))[0].detach().numpy()
    bi = xf.from_torch(native_module, backend=backend)
    assert layers.Bidirectional._is(bi) and bi.return_sequences and not bi.time_major
    assert max_err(numpy(backend, call(backend, bi, x)), want) <= TOL["float64"]
    back = xf.to_torch(bi)
    assert type(back) is type(native_module) and back.bidirectional
    assert max_err(back(torch.from_numpy(x))[0].detach(), want) <= TOL["float64"]
    summed = layers.Bidirectional(layers.GRU(UNITS, backend=backend), merge_mode="sum", input_size=FEATURES)
    with pytest.raises(xf.UnsupportedConfigError, match="concat"):
        xf.to_torch(summed)


def test_tensorflow_layer_saves_in_keras_files(rng, tmp_path):
    require("tensorflow")
    x, _ = problem(rng, "float32", False)
    bi = layers.Bidirectional(layers.GRU(UNITS, return_sequences=True, backend="tf"), merge_mode="mul")
    inp = keras.Input((STEPS, FEATURES))
    model = keras.Model(inp, bi(inp))
    model.save(tmp_path / "bi.keras")
    again = keras.saving.load_model(tmp_path / "bi.keras")
    assert max_err(again(x), model(x)) <= TOL["float32"]


@pytest.mark.parametrize("backend", ["numpy", "torch", "tensorflow"])
def test_reverse_time_is_the_restacked_reversal(backend, rng):
    """Every backend's ``reverse_time`` (one native op) equals the default, the steps restacked in
    reverse (what a backend without its own gets), which equals NumPy's reversal."""
    require(backend)
    from rnn_xframework import registry

    ops = registry.get(backend)
    x = rng.normal(size=(BATCH, STEPS, UNITS))
    got, default = ops.reverse_time(native(backend, x)), registry.Backend.reverse_time(ops, native(backend, x))
    np.testing.assert_array_equal(numpy(backend, got), x[:, ::-1])
    np.testing.assert_array_equal(numpy(backend, default), x[:, ::-1])
