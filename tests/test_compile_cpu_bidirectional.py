"""``xf.compile(Bidirectional, "cpu")`` on torch (issue 20): both directions in one call
(``cpu_bidirectional.py``), unmasked and right-padded masked, against the uncompiled
``Bidirectional`` (Keras's semantics): merged outputs, every final state and every gradient, at
the stated tolerances; NaN in the padding reaching nothing; and the calls that must defer to the
two compiled RNNs doing so.

Every test that expects the fused call makes the generic path (``BidirectionalMixin.run``) and the
RNNs' scripted masked loops fail: a pass is proof that the fused call and the C loops ran. The
cell configurations are ``test_compile_cpu.py``'s (every SimpleRNN / LSTM / GRU form, oneDNN's
LSTM and the C loop's), each direction a two-layer stack.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_compile_cpu as base
from conftest import TOL
from helpers import assert_all_close, flat, max_err, random_cell_states, random_cell_weights
from test_compile_cpu import FEATURES, STEPS
from test_compile_cpu_masked import CASES, Spy, lengths_for, mask_of, same_draws
from test_compile_masks import poisoned

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")
from rnn_xframework.backends.torch.compile import cpu_bidirectional  # noqa: E402

config = base.config  # every SimpleRNN / LSTM / GRU form
kernel_builds = base.kernel_builds
BATCH, UNITS = 5, 6  # a float32 LSTM batch under ONEDNN_MIN_BATCH: "LSTM" runs oneDNN only at 12 (below)


def make(config, dtype, rng, *, merge_mode="concat", **kw):
    kind, cell_kw = config
    cells = [getattr(layers, kind)(UNITS, backend="torch", dtype=dtype, **cell_kw) for _ in range(2)]
    bi = layers.Bidirectional(layers.RNN(cells, **kw), merge_mode=merge_mode, input_size=FEATURES)
    after = cell_kw.get("reset_after", True)
    weights = []
    for _ in range(2):
        w = random_cell_weights(rng, kind, [FEATURES, UNITS], UNITS, dtype, reset_after=after)
        weights += w if cell_kw.get("use_bias", True) else [a for i, a in enumerate(w) if i % 3 != 2]
    bi.set_weights(weights)
    return bi


def _generic(*args, **kwargs):
    raise AssertionError("a compiled RNN's own call ran: the fused call should have run both directions")


def _scripted(*args):
    raise AssertionError("the scripted masked loop ran: the C loop should have run this right-padded call")


def fused_only(fast):
    """``fast`` whose calls fail unless the fused call runs them in the C loop: the generic call
    calls each compiled RNN (its ``forward``), the fused one their loops."""
    assert isinstance(fast, cpu_bidirectional.FusedBidirectional)
    for layer in fast.layers:
        layer.forward = _generic
        layer.masked_loop.fallback = _scripted
    return fast


def assert_close(got, want, dtype):
    assert_all_close(got, want, TOL[dtype])


def random_states(config, rng, batch, dtype):
    return [[torch.from_numpy(s) for s in lay] for lay in random_cell_states(rng, config[0], 4, batch, UNITS, dtype)]


@pytest.mark.parametrize("batch", [BATCH, 12])
@pytest.mark.parametrize("case", ["unmasked", *CASES])
@pytest.mark.parametrize(
    ("return_sequences", "merge_mode", "time_major"),
    [(True, "concat", False), (False, "concat", False), (True, None, True), (True, "sum", False)],
)
def test_fused_call_matches_the_uncompiled(rng, dtype, config, batch, case, return_sequences, merge_mode, time_major):
    bi = make(config, dtype, rng, merge_mode=merge_mode, return_sequences=return_sequences, return_state=True)
    for layer in bi.layers:
        layer.time_major = time_major
    fast = fused_only(xf.compile(bi, "cpu"))
    mask = None if case == "unmasked" else mask_of(lengths_for(case, batch, rng))
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype))
    x = x.transpose(0, 1) if time_major else x
    states = random_states(config, rng, batch, dtype)
    want = bi(x, initial_state=states, mask=mask)
    assert_close(fast(x, initial_state=states, mask=mask), want, dtype)  # autograd on: the saving forward
    with torch.no_grad():
        assert_close(fast(x, initial_state=states, mask=None if mask is None else torch.from_numpy(mask)), want, dtype)


@pytest.mark.parametrize("case", ["unmasked", "unsorted", "none real"])
def test_fused_gradients_match(rng, dtype, config, case):
    """Gradients of a weighted loss over the merged output and every final state, with respect
    to the inputs, every initial state and every parameter; scale-relative 1e-4 / 1e-10."""
    bi = make(config, dtype, rng, return_sequences=True, return_state=True)
    mask = None if case == "unmasked" else mask_of(lengths_for(case, BATCH, rng))
    x0 = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype)
    s0 = random_cell_states(rng, config[0], 4, BATCH, UNITS, dtype)
    w_y = torch.from_numpy(rng.uniform(-1, 1, (BATCH, STEPS, 2 * UNITS)).astype(dtype))
    w_s = [torch.from_numpy(s) for lay in random_cell_states(rng, config[0], 4, BATCH, UNITS, dtype) for s in lay]

    def grads(model):
        x = torch.from_numpy(x0).requires_grad_(True)
        states = [[torch.from_numpy(s).requires_grad_(True) for s in lay] for lay in s0]
        y, final = model(x, initial_state=states, mask=mask)
        loss = (y * w_y).sum() + sum((s * w).sum() for s, w in zip(flat(final), w_s, strict=True))
        leaves = [x, *(s for lay in states for s in lay), *(p for p in bi.parameters() if p.requires_grad)]
        return [loss, *torch.autograd.grad(loss, leaves)]

    got, want = grads(fused_only(xf.compile(bi, "cpu"))), grads(bi)
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert len(got) == len(want) > 5
    for g, w in zip(got, want, strict=True):
        assert max_err(g.detach(), w.detach()) <= tol * max(1.0, float(w.detach().abs().max()))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_in_right_padding_never_leaks(rng, config):
    """NaN / inf in the padding: the fused call's outputs, states and every gradient as with
    zeros there, all finite (both directions read the padding only after the real steps)."""
    bi = make(config, "float64", rng, return_sequences=True, return_state=True)
    fast = fused_only(xf.compile(bi, "cpu"))
    mask = mask_of(lengths_for("unsorted", BATCH, rng))
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    clean = torch.from_numpy(np.where(mask[:, :, None], x, 0.0))
    want = bi(clean, mask=mask)
    for grad in (False, True):
        bad = torch.from_numpy(poisoned(x, mask)).requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            got = fast(bad, mask=mask)
        assert all(bool(torch.isfinite(t).all()) for t in flat(got))
        assert_close(got, want, "float64")
    loss = sum(t.square().sum() for t in flat(got))
    params = [p for p in bi.parameters() if p.requires_grad]
    g_bad = torch.autograd.grad(loss, [bad, *params])
    ref = clean.clone().requires_grad_(True)
    g_clean = torch.autograd.grad(sum(t.square().sum() for t in flat(bi(ref, mask=mask))), [ref, *params])
    for g, w in zip(g_bad, g_clean, strict=True):
        assert bool(torch.isfinite(g).all())
        assert max_err(g, w) <= TOL["float64"] * max(1.0, float(w.abs().max()))


@pytest.mark.parametrize("case", ["gaps", "left-padded", "dropout", "torchscript", "hooked"])
def test_other_calls_run_the_two_compiled_rnns(rng, case):
    """Where the fused call cannot run a call, each compiled RNN runs its own part (same results)."""
    rate = 0.3 if case == "dropout" else 0.0
    bi = make(("LSTMCell", {"dropout": rate}), "float64", rng, return_sequences=True)
    fast = xf.compile(bi, "torchscript" if case == "torchscript" else "cpu")
    spies = [Spy(layer.forward) for layer in fast.layers]
    for layer, spy in zip(fast.layers, spies, strict=True):
        layer.forward = spy
    hooked = []
    if case == "hooked":
        fast.forward_layer.register_forward_hook(lambda *args: hooked.append(1))
    lengths = np.array([STEPS, 3, 5, 0, 2])
    mask = {"gaps": np.array([[1, 0, 1, 1, 1, 1, 0]] * BATCH, bool), "left-padded": mask_of(lengths)[:, ::-1]}.get(
        case, None
    )
    x = torch.from_numpy(rng.normal(size=(BATCH, STEPS, FEATURES)))
    got, want = same_draws(fast, bi, x, mask, case == "dropout")
    assert [s.calls for s in spies] == [1, 1]
    assert hooked == ([1] if case == "hooked" else [])
    assert max_err(got.detach(), want.detach()) <= TOL["float64"]


def test_fused_call_refuses_as_the_rnns_do(rng):
    """The fused call runs each RNN's own checks first: the same typed errors, nothing run."""
    fast = xf.compile(make(("GRUCell", {}), "float32", rng, return_sequences=True), "cpu")
    x = torch.zeros(BATCH, STEPS, FEATURES)
    with pytest.raises(xf.InputShapeError, match="mask"):
        fast(x, mask=np.ones((BATCH, STEPS + 1), bool))
    with pytest.raises(xf.InputShapeError):
        fast(torch.zeros(BATCH, STEPS, FEATURES + 1))
    with pytest.raises(xf.StateStructureError):
        fast(x, initial_state=[torch.zeros(BATCH, UNITS)])


def test_reversal_index_is_its_own_inverse():
    index = cpu_bidirectional.reversal_index(np.array([3, 0, 5, 1]), 5)
    assert index.tolist() == [[2, 1, 0, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]
    assert (np.take_along_axis(index, index, 1) == np.arange(5)).all()
