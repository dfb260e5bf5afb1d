"""Masked calls of ``xf.compile(rnn, "triton")`` (issue 20): right-padded batches in the
persistent kernels (``MASKED``: each row holds its state past its length), against the uncompiled
masked RNN (Keras's semantics) -- outputs, final states, every gradient --, NaN in padding reaching
nothing, and every other masked call (gaps, left padding, ``go_backwards``, dropout, a layer too
wide for one program) running the scripted masked loop.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (``tests/test_triton.py``'s
``device`` fixture); with one (``scripts/gpu_checks.py``) compiled on CUDA. Every test that expects
the kernels replaces the fallback by one that fails: a pass is proof that the kernels ran.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_triton  # its importorskips: torch and triton
from conftest import TOL
from helpers import KINDS, make_cells, max_err, random_cell_states, random_cell_weights
from test_compile_cpu_masked import Spy, fallback_fails, same_draws
from test_compile_masks import poisoned

import rnn_xframework as xf
from rnn_xframework import layers
from rnn_xframework.errors import UnsupportedConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from rnn_xframework.backends.torch.compile import triton as triton_host  # noqa: E402 - after the skips
from rnn_xframework.backends.torch.compile import triton_masked  # noqa: E402

device = test_triton.device  # the fixture: CUDA where there is one, else the interpreter on the CPU

STEPS, FEATURES, UNITS = 5, 3, 6
LENGTHS = {3: np.array([2, 0, STEPS]), 17: np.array([STEPS, 0, 1, 3, 4, 2, 5, 1, 0, 3, 4, 5, 2, 2, 1, 3, 4])}


def mask_of(lengths):
    return np.arange(STEPS)[None, :] < lengths[:, None]


def built(kind, dtype, seed=0, **kw):
    rng = np.random.default_rng(seed)
    rnn = layers.RNN(make_cells("torch", kind, 2, UNITS, dtype), **kw)
    rnn.build((None, None, FEATURES))
    rnn.set_weights(random_cell_weights(rng, kind, [FEATURES, UNITS], UNITS, dtype))
    return rnn


def kernels_only(fast):
    return fallback_fails(fast, triton_masked.TritonMaskedLoop, "the kernels")


def tensor(a, device, grad=False):
    return torch.tensor(a, device=device, requires_grad=grad)


@pytest.mark.parametrize("batch", [3, 17])
@pytest.mark.parametrize("flags", [(True, False), (True, True), (False, False)])  # (return_sequences, zero_output)
@pytest.mark.parametrize("kind", KINDS)
def test_right_padded_runs_the_kernels(device, dtype, kind, batch, flags):
    seq, zero = flags
    rnn = built(kind, dtype, return_sequences=seq, return_state=True, zero_output_for_mask=zero).to(device)
    fast = kernels_only(xf.compile(rnn, "triton"))
    rng = np.random.default_rng(1)
    mask = mask_of(LENGTHS[batch])
    x = tensor(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype), device)
    states = [[tensor(s, device) for s in lay] for lay in random_cell_states(rng, kind, 2, batch, UNITS, dtype)]
    with torch.no_grad():
        (y, ends), (y_want, ends_want) = fast(x, states, mask=mask), rnn(x, states, mask=mask)
        assert tuple(y.shape) == tuple(y_want.shape)
        assert max_err(y.cpu(), y_want.cpu()) <= TOL[dtype]
        for g, w in zip([s for lay in ends for s in lay], [s for lay in ends_want for s in lay], strict=True):
            assert max_err(g.cpu(), w.cpu()) <= TOL[dtype]


def gradients(model, x, states, mask, device, w_y):
    xt = tensor(x, device, grad=True)
    st = [[tensor(s, device, grad=True) for s in lay] for lay in states]
    y, ends = model(xt, st, mask=mask)
    loss = (y * w_y).sum() + sum((s * (k + 1.5)).sum() for k, lay in enumerate(ends) for s in lay)
    params = [p for p in model.parameters() if p.requires_grad]
    return [loss, *torch.autograd.grad(loss, [xt, *(s for lay in st for s in lay), *params])]


@pytest.mark.parametrize("kind", KINDS)
def test_right_padded_gradients_match(device, kind):
    """Every gradient (input, initial states, every parameter) of a loss over the outputs and the
    final states, float64, against autograd through the uncompiled masked RNN: 1e-12."""
    rnn = built(kind, "float64", seed=2, return_sequences=True, return_state=True).to(device)
    fast = kernels_only(xf.compile(rnn, "triton"))
    rng = np.random.default_rng(3)
    mask = mask_of(LENGTHS[17])
    x = rng.normal(size=(17, STEPS, FEATURES))
    states = random_cell_states(rng, kind, 2, 17, UNITS, "float64")
    w_y = tensor(rng.uniform(-1, 1, (17, STEPS, UNITS)), device)
    got, want = gradients(fast, x, states, mask, device, w_y), gradients(rnn, x, states, mask, device, w_y)
    assert len(got) == len(want) > 5
    for g, w in zip(got, want, strict=True):
        assert max_err(g.detach().cpu(), w.detach().cpu()) <= 1e-12


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("kind", KINDS)
def test_nan_in_right_padding_never_leaks(device, kind):
    """NaN / inf in the padding: results and every gradient as with zeros there, all finite."""
    rnn = built(kind, "float64", seed=4, return_sequences=True, return_state=True).to(device)
    fast = kernels_only(xf.compile(rnn, "triton"))
    rng = np.random.default_rng(5)
    mask = mask_of(LENGTHS[3])
    x = rng.normal(size=(3, STEPS, FEATURES))
    clean, bad = np.where(mask[:, :, None], x, 0.0), poisoned(x, mask)
    states = random_cell_states(rng, kind, 2, 3, UNITS, "float64")
    with torch.no_grad():
        y, _ = fast(tensor(bad, device), mask=mask)
        y_want, _ = rnn(tensor(clean, device), mask=mask)
    assert bool(torch.isfinite(y).all()) and max_err(y.cpu(), y_want.cpu()) <= TOL["float64"]
    w_y = tensor(rng.uniform(-1, 1, (3, STEPS, UNITS)), device)
    got, want = gradients(fast, bad, states, mask, device, w_y), gradients(rnn, clean, states, mask, device, w_y)
    for g, w in zip(got, want, strict=True):
        assert bool(torch.isfinite(g).all())
        assert max_err(g.detach().cpu(), w.detach().cpu()) <= 1e-12


@pytest.mark.parametrize("case", ["gaps", "left-padded", "go_backwards", "dropout", "wide layer"])
def test_other_masked_calls_run_the_scripted_masked_loop(device, case, monkeypatch):
    """Where the kernels cannot express the call, the scripted masked loop runs it (same results)."""
    if case == "wide layer":
        monkeypatch.setattr(triton_host, "MAX_WEIGHT_ELEMENTS", 0)  # every layer column-split
    rnn = layers.RNN(
        make_cells("torch", "LSTMCell", 2, UNITS, "float64", dropout=0.3 if case == "dropout" else 0.0),
        return_sequences=True,
        go_backwards=case == "go_backwards",
    )
    rnn.build((None, None, FEATURES))
    rnn.to(device)
    fast = xf.compile(rnn, "triton")
    spy = fast.masked_loop.fallback = Spy(fast.masked_loop.fallback)
    lengths = LENGTHS[3]
    mask = {"gaps": np.array([[1, 0, 1, 1, 1]] * 3, bool), "left-padded": mask_of(lengths)[:, ::-1]}.get(
        case, None if case == "dropout" else mask_of(lengths)
    )
    x = tensor(np.random.default_rng(6).normal(size=(3, STEPS, FEATURES)), device)
    got, want = same_draws(fast, rnn, x, mask, case == "dropout")
    assert spy.calls == 1
    assert max_err(got.detach().cpu(), want.detach().cpu()) <= TOL["float64"]


def test_masked_cpu_calls_need_the_interpreter(monkeypatch):
    """A masked call refuses where an unmasked one does (CPU tensors without the interpreter),
    whichever loop would run it."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    fast = xf.compile(built("GRUCell", "float32", return_sequences=True), "triton")
    for mask in (mask_of(LENGTHS[3]), np.array([[1, 0, 1, 1, 1]] * 3, bool)):
        with pytest.raises(UnsupportedConfigError, match="TRITON_INTERPRET=1"):
            fast(torch.zeros(3, STEPS, FEATURES), mask=mask)


def test_right_padded_lengths_rule():
    keep = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    assert triton_masked.right_padded_lengths(keep).tolist() == [2, 1, 0, 3]
    assert triton_masked.right_padded_lengths(torch.tensor([[1, 0, 1]], dtype=torch.bool)) is None
    assert triton_masked.right_padded_lengths(torch.tensor([[0, 1, 1]], dtype=torch.bool)) is None
