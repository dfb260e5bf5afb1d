"""``mask=`` on the compiled methods (issue 20): every method that takes masks against the
uncompiled masked RNN (Keras's semantics: states kept, outputs repeated or zeroed per
``zero_output_for_mask``), SimpleRNN, LSTM and GRU stacks, both orderings, both dtypes (stated
tolerances), the flags, autograd, right-padded and general masks, and NaN/inf in the padding
(never in the outputs, never in the gradients). ``inductor`` compiles for seconds per shape: it
has a few cases of its own here.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, make_cells, max_err, native, numpy, random_cell_states
from test_compile_methods import BATCH, FEATURES, METHODS, STEPS, UNITS, assert_same, assert_same_gradients, built

import rnn_xframework as xf
from rnn_xframework import layers
from rnn_xframework.parity import training

# a general mask (holes, a row starting masked, a row all masked) and a right-padded one (lengths
# 4, 2, 3: every row real for 2 steps, none at the last: the TorchScript loop's two shortcuts)
GENERAL = np.array([[1, 1, 0, 1, 1], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]], bool)
LENGTHS = np.array([4, 2, 3])
RIGHT_PADDED = np.arange(STEPS)[None, :] < LENGTHS[:, None]
MASKS = {"general": GENERAL, "right-padded": RIGHT_PADDED}
EDGES = {**MASKS, "all real": np.ones((BATCH, STEPS), bool), "none real": np.zeros((BATCH, STEPS), bool)}


def poisoned(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x`` with NaN, inf and -inf in every masked step (the eager path's test of its rule)."""
    bad = x.copy()
    rows, steps = np.nonzero(~mask)
    for i, (r, t) in enumerate(zip(rows, steps, strict=True)):
        bad[r, t] = (np.nan, np.inf, -np.inf)[i % 3]
    return bad


@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["timestep", "layer"])
@pytest.mark.parametrize("mask", sorted(MASKS))
def test_masked_method_matches_uncompiled(rng, dtype, backend, method, kind, order, mask):
    """Before issue 20 every compiled method raised here ("the ... loop takes no mask")."""
    rnn = built(backend, kind, dtype, rng, return_sequences=True, return_state=True, order=order)
    fast = xf.compile(rnn, method)
    x = native(backend, rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype))
    states = [[native(backend, s) for s in layer] for layer in random_cell_states(rng, kind, 2, BATCH, UNITS, dtype)]
    assert_same(backend, fast(x, states, mask=MASKS[mask]), rnn(x, states, mask=MASKS[mask]), dtype)


@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "flags",  # return_sequences, return_state, go_backwards, zero_output_for_mask, time_major
    [
        (False, False, False, False, False),
        (True, False, True, True, False),
        (True, True, True, False, True),
        (False, True, False, True, True),
    ],
)
def test_masked_method_flags(rng, backend, method, kind, flags):
    seq, state, back, zero, time_major = flags
    rnn = built(
        backend,
        kind,
        "float64",
        rng,
        return_sequences=seq,
        return_state=state,
        go_backwards=back,
        zero_output_for_mask=zero,
        time_major=time_major,
    )
    fast = xf.compile(rnn, method)
    shape = (STEPS, BATCH, FEATURES) if time_major else (BATCH, STEPS, FEATURES)
    x = native(backend, rng.normal(size=shape))
    got, want = fast(x, mask=GENERAL), rnn(x, mask=GENERAL)  # the mask stays [batch, time]
    if state:
        assert_same(backend, got, want, "float64")
    else:
        assert tuple(got.shape) == tuple(want.shape)
        assert max_err(numpy(backend, got), numpy(backend, want)) <= TOL["float64"]


def _gradients(backend, model, x, mask, kind, rng_loss):
    states = random_cell_states(rng_loss, kind, 2, BATCH, UNITS, "float64")
    w_states = random_cell_states(rng_loss, kind, 2, BATCH, UNITS, "float64")
    loss_weights = (rng_loss.uniform(-1, 1, (BATCH, STEPS, UNITS)), w_states)
    return training.loss_and_grads(backend, model, x, states, loss_weights, mask=mask)


@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask", sorted(EDGES))
def test_masked_method_gradients_match(rng, backend, method, kind, mask):
    """Autograd through the masked compiled loop: the canonical gradients of the parity loss."""
    rnn = built(backend, kind, "float64", rng, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, method)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    got = _gradients(backend, fast, x, EDGES[mask], kind, np.random.default_rng(7))
    want = _gradients(backend, rnn, x, EDGES[mask], kind, np.random.default_rng(7))
    assert abs(got.loss - want.loss) <= TOL["float64"] * max(1.0, abs(want.loss))
    assert_same_gradients(got, want)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_nan_in_masked_padding_never_leaks(rng, backend, method, kind, order):
    """NaN/inf in the padding: outputs and states as with zeros there (the eager path's rule,
    orderings.hold), and every gradient finite and equal to the zero-padded one."""
    rnn = built(backend, kind, "float64", rng, return_sequences=True, return_state=True, order=order)
    fast = xf.compile(rnn, method)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    clean = np.where(GENERAL[:, :, None], x, 0.0)
    got = fast(native(backend, poisoned(x, GENERAL)), mask=GENERAL)
    want = rnn(native(backend, clean), mask=GENERAL)
    assert np.isfinite(numpy(backend, got[0])).all()
    assert_same(backend, got, want, "float64")
    grads = _gradients(backend, fast, poisoned(x, GENERAL), GENERAL, kind, np.random.default_rng(3))
    want_grads = _gradients(backend, rnn, clean, GENERAL, kind, np.random.default_rng(3))
    flat = [grads.inputs, *(s for layer in grads.states for s in layer), *grads.weights]
    assert all(np.isfinite(g).all() for g in flat)
    assert_same_gradients(grads, want_grads)


@pytest.mark.parametrize(("backend", "method"), METHODS)
def test_masked_method_checks_the_mask(rng, backend, method):
    rnn = built(backend, "LSTMCell", "float32", rng, return_sequences=True)
    fast = xf.compile(rnn, method)
    x = native(backend, rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32"))
    with pytest.raises(xf.InputShapeError, match=r"RNN mask: expected shape \(3, 5\)"):
        fast(x, mask=np.ones((BATCH, STEPS + 1), bool))
    as_ints = fast(x, mask=GENERAL.astype("int32"))  # nonzero = real step, as the uncompiled RNN reads it
    assert max_err(numpy(backend, as_ints), numpy(backend, rnn(x, mask=GENERAL))) <= TOL["float32"]


@pytest.mark.parametrize(("backend", "method"), METHODS)
def test_masked_native_mask_and_unmasked_after(rng, backend, method):
    """A native boolean mask works, and an unmasked call after a masked one runs the unmasked loop."""
    rnn = built(backend, "GRUCell", "float64", rng, return_sequences=True)
    fast = xf.compile(rnn, method)
    x = native(backend, rng.normal(size=(BATCH, STEPS, FEATURES)))
    got = fast(x, mask=native(backend, RIGHT_PADDED))
    assert max_err(numpy(backend, got), numpy(backend, rnn(x, mask=RIGHT_PADDED))) <= TOL["float64"]
    assert max_err(numpy(backend, fast(x)), numpy(backend, rnn(x))) <= TOL["float64"]


@pytest.mark.parametrize("kind", KINDS)
def test_inductor_masked_matches_uncompiled(rng, kind):
    """``torch.compile`` of the masked loop: outputs and gradients (one shape, float64)."""
    require("torch")
    from rnn_xframework.backends.torch.compile import inductor

    rnn = built("torch", kind, "float64", rng, return_sequences=True, return_state=True, order="layer")
    fast = xf.compile(rnn, "inductor")
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    got = _gradients("torch", fast, poisoned(x, GENERAL), GENERAL, kind, np.random.default_rng(5))
    want = _gradients("torch", rnn, np.where(GENERAL[:, :, None], x, 0.0), GENERAL, kind, np.random.default_rng(5))
    assert abs(got.loss - want.loss) <= TOL["float64"] * max(1.0, abs(want.loss))
    assert_same_gradients(got, want)
    assert isinstance(fast.masked_loop.loop, inductor.CompiledLoop)  # made on the first masked call


def test_methods_without_a_masked_loop_refuse_naming_those_with_one(rng):
    """A compiled object made without a masked loop (every built-in torch method has one, so a
    third-party loop here): a typed refusal naming the methods that take masks."""
    require("torch")
    from rnn_xframework.backends.torch.compile import compiled_module

    def loop(x, states):
        raise AssertionError("the refusal comes before the loop")

    rnn = built("torch", "SimpleRNNCell", "float32", rng)
    fast = compiled_module.CompiledRNN(rnn, loop, "a plugin's")
    x = native("torch", rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32"))
    with pytest.raises(xf.UnsupportedConfigError, match=r"a plugin's loop takes no mask.*'torchscript'.*'triton'"):
        fast(x, mask=GENERAL)


def test_cudagraph_masked_runs_the_scripted_masked_loop(rng):
    """``cudagraph`` runs masked calls through the scripted masked loop, uncaptured (as its
    training calls); the CPU stand-in capture lets it run here."""
    require("torch")
    from rnn_xframework.backends.torch.compile import cudagraph

    rnn = built("torch", "LSTMCell", "float64", rng, return_sequences=True, return_state=True)
    fast = cudagraph.compile_rnn(rnn, capture_class=cudagraph.EagerCapture)
    x = native("torch", rng.normal(size=(BATCH, STEPS, FEATURES)))
    assert_same("torch", fast(x, mask=GENERAL), rnn(x, mask=GENERAL), "float64")
    on_cpu = cudagraph.compile_rnn(rnn)
    with pytest.raises(xf.UnsupportedConfigError, match="CUDA graphs need CUDA tensors"):
        on_cpu(x, mask=GENERAL)


@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
def test_compiled_bidirectional_takes_the_mask(rng, backend, method, kind):
    """``xf.compile(Bidirectional)`` compiles both RNNs: a mask reaches both masked loops (zeros
    in the padding, as Keras's Bidirectional sets)."""
    require(backend)
    inner = layers.RNN([getattr(layers, kind)(UNITS, backend=backend, dtype="float64")], return_sequences=True)
    bi = layers.Bidirectional(inner, input_size=FEATURES)
    x = native(backend, rng.normal(size=(BATCH, STEPS, FEATURES)))
    got, want = xf.compile(bi, method)(x, mask=RIGHT_PADDED), bi(x, mask=RIGHT_PADDED)
    assert max_err(numpy(backend, got), numpy(backend, want)) <= TOL["float64"]


@pytest.mark.parametrize("method", ["torchscript", "cpu"])
@pytest.mark.parametrize("mask", sorted(EDGES))
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_torch_gru_reset_before_masked_matches_uncompiled(rng, method, mask, order):
    """Keras's ``GRUCell(reset_after=False)`` on torch, masked and compiled (it was refused, typed):
    outputs, states and the canonical gradients against the uncompiled masked RNN."""
    require("torch")
    cells = make_cells("torch", "GRUCell", 2, UNITS, "float64", reset_after=False)
    rnn = layers.RNN(cells, return_sequences=True, return_state=True, order=order)
    rnn.build((None, None, FEATURES))
    rnn.set_weights([rng.normal(scale=0.5, size=np.shape(w)) for w in rnn.get_weights()])
    try:
        fast = xf.compile(rnn, method)
    except xf.UnsupportedConfigError as e:  # "cpu" where no C compiler builds its kernel
        pytest.skip(f"compile {method!r} unavailable here: {e}")
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    xt = native("torch", x)
    assert_same("torch", fast(xt, mask=EDGES[mask]), rnn(xt, mask=EDGES[mask]), "float64")
    got = _gradients("torch", fast, x, EDGES[mask], "GRUCell", np.random.default_rng(7))
    want = _gradients("torch", rnn, x, EDGES[mask], "GRUCell", np.random.default_rng(7))
    assert abs(got.loss - want.loss) <= TOL["float64"] * max(1.0, abs(want.loss))
    assert_same_gradients(got, want)


@pytest.mark.parametrize("rates", [(0.3, 0.0), (0.0, 0.4), (0.3, 0.4)])  # dropout, recurrent_dropout
@pytest.mark.parametrize("masked", [False, True])
def test_torch_gru_reset_before_dropout_matches_uncompiled(rng, rates, masked):
    """Dropout in training on the compiled ``GRUCell(reset_after=False)`` (it was refused): the same
    masks as the uncompiled cells draw (same seeds), the same outputs, states and gradients."""
    require("torch")
    import torch

    weights = None
    pair = []
    for _ in range(2):  # seed=: the cells' own generators, the same draws in both RNNs
        cells = make_cells(
            "torch", "GRUCell", 2, UNITS, "float64", reset_after=False, dropout=rates[0], recurrent_dropout=rates[1],
            seed=10,
        )  # fmt: skip
        rnn = layers.RNN(cells, return_sequences=True, return_state=True)
        rnn.build((None, None, FEATURES))
        weights = weights or [rng.normal(scale=0.5, size=np.shape(w)) for w in rnn.get_weights()]
        rnn.set_weights(weights)
        pair.append(rnn)
    eager, fast = pair[0], xf.compile(pair[1], "torchscript")
    mask = GENERAL if masked else None
    x = torch.tensor(rng.normal(size=(BATCH, STEPS, FEATURES)), requires_grad=True)
    results = []
    for model in (eager, fast):
        y, states = model(x, mask=mask, training=True)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum()
        loss = loss + sum((s * 0.5).sum() for layer in states for s in layer)
        params = [p for c in model.cells for p in c.cell.parameters() if p.requires_grad]
        results.append([y, *(s for layer in states for s in layer), *torch.autograd.grad(loss, [x, *params])])
    assert not torch.equal(results[0][0], eager(x, mask=mask, training=False)[0])  # dropout applied
    for got, want in zip(results[1], results[0], strict=True):
        assert max_err(got.detach(), want.detach()) <= TOL["float64"]
