"""Right-padded masks on ``xf.compile(rnn, "cpu")`` (issue 20): the C loop with the batch sorted
longest first and the rows that have ended skipped (``cpu_masked.py``), against the uncompiled
masked RNN (Keras's semantics), outputs, final states and every gradient, at the stated
tolerances; NaN / inf in the padding reaching nothing; and the calls that must not take this
path (gaps, left padding, ``go_backwards``, dropout) running the scripted masked loop.

Every test here that expects the C loop replaces the fallback by one that fails: a pass is
proof that the C loop ran. The configurations and sizes are ``test_compile_cpu.py``'s (both
product paths of the kernel, SimpleRNN tanh / relu, every LSTM / GRU form, with and without bias).
"""

from __future__ import annotations

import numpy as np
import pytest
import test_compile_cpu as base
from conftest import TOL
from helpers import max_err, random_cell_states
from test_compile_cpu import FEATURES, SIZES, STEPS, assert_gradients, assert_outputs, built
from test_compile_masks import poisoned

import rnn_xframework as xf
from rnn_xframework.parity import training

torch = pytest.importorskip("torch")
from rnn_xframework.backends.torch.compile import cpu_masked  # noqa: E402

config = base.config  # the fixtures of test_compile_cpu.py: every SimpleRNN / LSTM / GRU form; the kernel builds
kernel_builds = base.kernel_builds


def lengths_for(case: str, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Row lengths: ``unsorted`` (an empty row, a full one, random others), ``sorted`` (longest
    first: no permutation), ``all real``, ``none real``."""
    if case == "all real":
        return np.full(batch, STEPS)
    if case == "none real":
        return np.zeros(batch, int)
    lengths = rng.integers(1, STEPS, batch)
    lengths[0], lengths[-1] = 0, STEPS
    return np.sort(lengths)[::-1].copy() if case == "sorted" else lengths


CASES = ["unsorted", "sorted", "all real", "none real"]


def mask_of(lengths: np.ndarray) -> np.ndarray:
    return np.arange(STEPS)[None, :] < lengths[:, None]


def fallback_fails(fast, loop_type, path):
    """``fast`` (its masked loop a ``loop_type``) with its fallback, the scripted masked loop,
    replaced by a failure naming ``path``, the one that should have run."""
    assert isinstance(fast.masked_loop, loop_type)

    def fails(*args):
        raise AssertionError(f"the scripted masked loop ran: {path} should have run this right-padded call")

    fast.masked_loop.fallback = fails
    return fast


def c_loop_only(fast):
    return fallback_fails(fast, cpu_masked.CpuMaskedLoop, "the C loop")


@pytest.mark.parametrize(("batch", "units"), SIZES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("flags", [(True, False), (False, True), (True, True), (False, False)])  # (sequences, zero)
def test_right_padded_runs_the_c_loop(rng, dtype, config, batch, units, case, flags):
    seq, zero = flags
    rnn = built(config, dtype, rng, units, return_sequences=seq, return_state=True, zero_output_for_mask=zero)
    fast = c_loop_only(xf.compile(rnn, "cpu"))
    mask = mask_of(lengths_for(case, batch, rng))
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype))
    states = [[torch.from_numpy(s) for s in lay] for lay in random_cell_states(rng, config[0], 2, batch, units, dtype)]
    want = rnn(x, states, mask=mask)
    assert_outputs(fast(x, states, mask=mask), want, dtype)  # autograd on: the saving forward
    with torch.no_grad():
        assert_outputs(fast(x, states, mask=torch.from_numpy(mask)), want, dtype)  # a torch mask, scratch states


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("case", ["unsorted", "sorted", "none real"])
@pytest.mark.parametrize("sequences", [True, False])
def test_packed_layers_at_any_depth(rng, dtype, config, depth, case, sequences):
    """Batch 12 without autograd (``_packed_layers``): one layer (the gather of ``x`` projected, the
    output written ``[T, B, H]``) or three (a middle layer packed in and out); the outputs and every
    layer's final states against the uncompiled masked RNN."""
    kind = config[0]
    rnn = built(config, dtype, rng, 6, depth=depth, return_sequences=sequences, return_state=True)
    fast = c_loop_only(xf.compile(rnn, "cpu"))
    mask = mask_of(lengths_for(case, 12, rng))
    x = torch.from_numpy(rng.normal(size=(12, STEPS, FEATURES)).astype(dtype))
    states = [[torch.from_numpy(s) for s in lay] for lay in random_cell_states(rng, kind, depth, 12, 6, dtype)]
    with torch.no_grad():
        assert_outputs(fast(x, states, mask=mask), rnn(x, states, mask=mask), dtype)
        x_strided = torch.from_numpy(rng.normal(size=(STEPS, 12, FEATURES)).astype(dtype)).transpose(0, 1)
        assert_outputs(fast(x_strided, states, mask=mask), rnn(x_strided, states, mask=mask), dtype)


@pytest.mark.parametrize(("batch", "units"), SIZES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("zero", [False, True], ids=["held outputs", "zero outputs"])
def test_right_padded_gradients_match(rng, dtype, config, batch, units, case, zero):
    """The canonical gradients of the parity loss (inputs, every initial state, every weight);
    float32 within the stated scale-relative 1e-4."""
    kind = config[0]
    rnn = built(config, dtype, rng, units, return_sequences=True, return_state=True, zero_output_for_mask=zero)
    fast = c_loop_only(xf.compile(rnn, "cpu"))
    mask = mask_of(lengths_for(case, batch, rng))
    x = rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype)
    states = random_cell_states(rng, kind, 2, batch, units, dtype)
    loss_weights = (rng.uniform(-1, 1, (batch, STEPS, units)), random_cell_states(rng, kind, 2, batch, units, dtype))
    got = training.loss_and_grads("torch", fast, x, states, loss_weights, mask=mask)
    want = training.loss_and_grads("torch", rnn, x, states, loss_weights, mask=mask)
    assert_gradients(got, want, dtype)


@pytest.mark.parametrize("layout", ["batch-first", "time-major seen batch-first", "strided"])
@pytest.mark.parametrize("permuted", [False, True])
def test_rows_zeroed_and_its_backward(rng, layout, permuted):
    """``RowsZeroed`` (a recorded masked call's sort of the input rows with their padding zeroed, and the
    output's way back): the values against indexing and ``torch.where``, the backward by ``gradcheck``."""
    batch, steps, n = 5, 4, 3
    base = torch.from_numpy(rng.normal(size=(steps, batch, 2 * n) if layout != "batch-first" else (batch, steps, n)))
    seq = {"batch-first": base, "time-major seen batch-first": base[..., :n].contiguous().transpose(0, 1)}.get(
        layout, base.transpose(0, 1)[..., ::2]
    )
    seq = seq.detach().requires_grad_(True)
    index = rng.permutation(batch) if permuted else None
    cut = np.array([0, 4, 2, 1, 3])
    out = cpu_masked.RowsZeroed.apply(seq, index, cut)
    keep = torch.from_numpy(np.arange(steps)[None, :] < cut[:, None]).unsqueeze(2)
    rows = seq if index is None else seq[torch.from_numpy(index)]
    assert torch.equal(out, torch.where(keep, rows, torch.zeros(())))
    assert out.transpose(0, 1).is_contiguous()  # time-major: what the layers read without a copy
    assert torch.autograd.gradcheck(lambda s: cpu_masked.RowsZeroed.apply(s, index, cut), (seq,))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_in_right_padding_never_leaks(rng, config):
    """NaN / inf in the padding: outputs and states as with zeros there, every gradient finite
    and equal to the zero-padded call's."""
    kind, batch, units = config[0], 12, 6
    rnn = built(config, "float64", rng, units, return_sequences=True, return_state=True)
    fast = c_loop_only(xf.compile(rnn, "cpu"))
    mask = mask_of(lengths_for("unsorted", batch, rng))
    x = rng.normal(size=(batch, STEPS, FEATURES))
    clean = np.where(mask[:, :, None], x, 0.0)
    want_outputs = rnn(torch.from_numpy(clean), mask=mask)
    got = fast(torch.from_numpy(poisoned(x, mask)), mask=mask)
    assert torch.isfinite(got[0]).all()
    assert_outputs(got, want_outputs, "float64")
    with torch.no_grad():  # no zeroing there: the C loop never reads a padding step's projection
        got = fast(torch.from_numpy(poisoned(x, mask)), mask=mask)
    assert torch.isfinite(got[0]).all()
    assert_outputs(got, want_outputs, "float64")
    states = random_cell_states(rng, kind, 2, batch, units, "float64")
    w_states = random_cell_states(rng, kind, 2, batch, units, "float64")
    loss_weights = (rng.uniform(-1, 1, (batch, STEPS, units)), w_states)
    grads = training.loss_and_grads("torch", fast, poisoned(x, mask), states, loss_weights, mask=mask)
    want = training.loss_and_grads("torch", rnn, clean, states, loss_weights, mask=mask)
    flat = [grads.inputs, *(s for lay in grads.states for s in lay), *grads.weights]
    flat_want = [want.inputs, *(s for lay in want.states for s in lay), *want.weights]
    for g, w in zip(flat, flat_want, strict=True):
        assert np.isfinite(g).all()
        assert max_err(g, w) <= TOL["float64"] * max(1.0, float(np.max(np.abs(w))))


def same_draws(fast, reference, x, mask, dropout):
    """``(fast(x, mask=mask), reference(x, mask=mask))``, with ``training=True`` and the same
    generator state for both (the same dropout draws) when ``dropout``."""
    out = []
    for model in (fast, reference):
        torch.manual_seed(5)
        out.append(model(x, mask=mask, training=True) if dropout else model(x, mask=mask))
    return out


class Spy:
    """Counts the calls of ``fallback`` (any callable) and passes them on."""

    def __init__(self, fallback):
        self.fallback, self.calls = fallback, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fallback(*args, **kwargs)


@pytest.mark.parametrize("case", ["gaps", "left-padded", "go_backwards", "dropout"])
def test_other_masked_calls_run_the_scripted_masked_loop(rng, case):
    """Where the C loop cannot express the call, the scripted masked loop runs it (same results)."""
    back, rate = case == "go_backwards", 0.3 if case == "dropout" else 0.0
    rnn = built(("LSTMCell", {"dropout": rate}), "float64", rng, 6, return_sequences=True, go_backwards=back)
    fast = xf.compile(rnn, "cpu")
    spy = fast.masked_loop.fallback = Spy(fast.masked_loop.fallback)
    lengths = np.array([STEPS, 3, 5])
    mask = {"gaps": np.array([[1, 0, 1, 1, 1, 1, 0]] * 3, bool), "left-padded": mask_of(lengths)[:, ::-1]}.get(
        case, mask_of(lengths)
    )
    x = torch.from_numpy(rng.normal(size=(3, STEPS, FEATURES)))
    got, want = same_draws(fast, rnn, x, mask, case == "dropout")
    assert spy.calls == 1
    assert max_err(got.detach(), want.detach()) <= TOL["float64"]


def test_right_padded_lengths_rule():
    keep = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    lengths, padded = cpu_masked.read_mask(keep)
    assert lengths.dtype == np.int32 and lengths.tolist() == [2, 1, 0, 3] and padded == 3
    assert cpu_masked.read_mask(torch.ones(2, 3, dtype=torch.bool))[1] == 0
    assert cpu_masked.read_mask(keep[:, ::2])[0].tolist() == [1, 1, 0, 2]  # a strided mask
    assert cpu_masked.read_mask(torch.tensor([[1, 0, 1]], dtype=torch.bool)) == (None, -1)
    assert cpu_masked.read_mask(torch.tensor([[0, 1, 1]], dtype=torch.bool)) == (None, -1)
    active = cpu_masked.active_counts(np.array([3, 2, 2, 0]), 4)
    assert active.dtype == torch.int32 and active.tolist() == [3, 3, 1, 0]


@pytest.fixture(params=["packed GEMM", "sgemm_ only"])
def blas_products(request: pytest.FixtureRequest, dtype):
    """Both BLAS paths of the kernel's products: MKL's packed GEMM (where libtorch_cpu has it)
    and ``sgemm_`` / ``dgemm_`` alone."""
    from rnn_xframework.backends.torch.compile import cpu_build

    lib = cpu_build.library()
    packed = cpu_build._packed_gemm(cpu_build._torch_library())
    if request.param == "packed GEMM" and packed[0 if dtype == "float32" else 3] is None:
        pytest.skip(f"this PyTorch's BLAS has no packed GEMM for {dtype} (cblas_?gemm_pack)")
    if request.param == "sgemm_ only":
        lib.xf_set_packed(*[None] * len(packed))
    yield request.param
    lib.xf_set_packed(*packed)


@pytest.mark.parametrize("case", ["unsorted", "all real"])
def test_blas_paths_agree(rng, dtype, config, blas_products, case):
    """Batch 12 (the BLAS's products): every step of an all-real call, and the steps before the
    first row ends, compute from the packed matrix; the shorter steps from ``sgemm_``."""
    rnn = built(config, dtype, rng, 6, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, "cpu")
    mask = mask_of(lengths_for(case, 12, rng))
    x = rng.normal(size=(12, STEPS, FEATURES)).astype(dtype)
    states = random_cell_states(rng, config[0], 2, 12, 6, dtype)
    loss_weights = (rng.uniform(-1, 1, (12, STEPS, 6)), random_cell_states(rng, config[0], 2, 12, 6, dtype))
    for m in (mask, None):
        got = training.loss_and_grads("torch", fast, x, states, loss_weights, mask=m)
        want = training.loss_and_grads("torch", rnn, x, states, loss_weights, mask=m)
        tol = 1e-4 if dtype == "float32" else 1e-10
        for g, w in zip(
            [got.inputs, *got.weights], [want.inputs, *want.weights], strict=True
        ):  # fmt: skip
            assert max_err(g, w) <= tol * max(1.0, float(np.max(np.abs(w))))


@pytest.mark.parametrize(("batch", "grad", "rows"), [(3, False, "lengths"), (3, True, "active"), (12, False, "packed")])
def test_which_rows_a_right_padded_call_runs(rng, batch, grad, rows, monkeypatch):
    """Up to ``UNSORTED_MAX_BATCH`` rows, a call autograd does not record runs its rows in their own
    order (``lengths``); a recorded call sorts them (``active``); a larger batch autograd does not
    record sorts them and packs the real steps (``packed``)."""
    rnn = built(("GRUCell", {}), "float64", rng, 6, return_sequences=True, zero_output_for_mask=True)
    fast = c_loop_only(xf.compile(rnn, "cpu"))
    seen = []
    layers, packed = cpu_masked.CpuMaskedLoop._layers, cpu_masked.CpuMaskedLoop._packed_layers
    monkeypatch.setattr(
        cpu_masked.CpuMaskedLoop,
        "_layers",
        lambda self, *a, **rows: seen.append(sorted(rows)) or layers(self, *a, **rows),
    )
    monkeypatch.setattr(
        cpu_masked.CpuMaskedLoop, "_packed_layers", lambda self, *a: seen.append(["packed"]) or packed(self, *a)
    )
    mask = mask_of(lengths_for("unsorted", batch, rng))
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)))
    with torch.set_grad_enabled(grad):
        got = fast(x, mask=mask)
    assert seen == [[rows]]
    assert max_err(got.detach(), rnn(x, mask=mask).detach()) <= TOL["float64"]


def test_unsorted_rows_have_no_backward(rng):
    """``lengths`` saves nothing for a backward: a recorded call with it is refused, not run wrong."""
    rnn = built(("LSTMCell", {}), "float64", rng, 6, return_sequences=True)
    layer = xf.compile(rnn, "cpu").loop.cells[0]
    x = torch.from_numpy(rng.normal(size=(3, STEPS, FEATURES)))
    state = [torch.zeros(3, 6, dtype=torch.float64)] * 2
    with pytest.raises(RuntimeError, match="no backward"):
        layer(x, state, lengths=torch.tensor([2, 7, 0], dtype=torch.int32))


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.integers(0, 6), st.integers(1, 9), st.data())
def test_read_mask_is_the_right_padded_rule(batch, steps, data):
    """``read_mask`` (one C pass) against the rule written in NumPy, on random masks and on
    right-padded ones."""
    if data.draw(st.booleans()):
        lengths = np.array(data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch)), int)
        keep = np.arange(steps)[None, :] < lengths[:, None]
    else:
        keep = np.array(data.draw(st.lists(st.booleans(), min_size=batch * steps, max_size=batch * steps)), bool)
        keep = keep.reshape(batch, steps)
    got, padded = cpu_masked.read_mask(torch.from_numpy(keep))
    lengths = keep.sum(1)
    if np.array_equal(keep, np.arange(steps)[None, :] < lengths[:, None]):
        assert got.tolist() == lengths.tolist() and padded == int((lengths < steps).sum())
    else:
        assert got is None and padded == -1
