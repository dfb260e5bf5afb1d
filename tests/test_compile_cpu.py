"""``xf.compile(rnn, "cpu")`` (the C loop of SimpleRNN / LSTM / GRU layers; oneDNN's LSTM primitive for a
float32 LSTM, the C loop forced too) and Keras's ``GRUCell(reset_after=False)`` on torch, eager
and compiled, against the uncompiled RNN (itself in the parity matrix) at the stated tolerances.

Sizes are picked to run every code path of the kernel: 20 units (4*20 = 80 gate columns: the
64-wide and 16-wide vector blocks; 3*20 = 60: the scalar tail), 6 units (tails only), batch 3
(the kernel's own small product) and batch 12 (the BLAS).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import TOL, require
from helpers import max_err, random_cell_states, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers
from rnn_xframework.compile import auto_method
from rnn_xframework.parity import training

torch = pytest.importorskip("torch")
from rnn_xframework.backends.torch.compile import cpu, cpu_build  # noqa: E402

FEATURES, STEPS = 5, 7
# name -> (cell type, cell arguments, float32 LSTM on the C loop instead of oneDNN)
CONFIGS = {
    "LSTM": ("LSTMCell", {}, False),
    "LSTM C loop": ("LSTMCell", {}, True),
    "GRU": ("GRUCell", {}, False),
    "GRU reset_before": ("GRUCell", {"reset_after": False}, False),
    "LSTM no bias": ("LSTMCell", {"use_bias": False}, False),
    "LSTM no bias C loop": ("LSTMCell", {"use_bias": False}, True),
    "GRU reset_before no bias": ("GRUCell", {"reset_after": False, "use_bias": False}, False),
    "SimpleRNN": ("SimpleRNNCell", {}, False),
    "SimpleRNN relu": ("SimpleRNNCell", {"activation": "relu"}, False),
    "SimpleRNN relu no bias": ("SimpleRNNCell", {"activation": "relu", "use_bias": False}, False),
}
SIZES = [(3, 20), (12, 6)]  # (batch, units)


@pytest.fixture(params=list(CONFIGS))
def config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:
    kind, cell_kw, c_loop = CONFIGS[request.param]
    if c_loop:  # float64 LSTMs always run the C loop; float32 ones run oneDNN unless told otherwise
        monkeypatch.setattr(cpu, "ONEDNN_MIN_BATCH", 10**9)
    return kind, cell_kw


@pytest.fixture(scope="module", autouse=True)
def kernel_builds() -> None:
    """The kernel builds on this machine (CI has a C compiler): a failure here is a failure."""
    cpu_build.library()


def built(config, dtype, rng, units, depth=2, **kw):
    kind, cell_kw = config
    require("torch")
    cells = [getattr(layers, kind)(units, backend="torch", dtype=dtype, **cell_kw) for _ in range(depth)]
    rnn = layers.RNN(cells, **kw)
    rnn.build((None, None, FEATURES))
    after = cell_kw.get("reset_after", True)
    dims = [FEATURES] + [units] * (depth - 1)
    weights = random_cell_weights(rng, kind, dims, units, dtype, reset_after=after)
    if not cell_kw.get("use_bias", True):
        weights = [w for i, w in enumerate(weights) if i % 3 != 2]
    rnn.set_weights(weights)
    return rnn


def torch_inputs(rng, kind, dtype, batch, units):
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype))
    states = random_cell_states(rng, kind, 2, batch, units, dtype)
    return x, [[torch.from_numpy(s) for s in layer] for layer in states]


def assert_outputs(got, want, dtype):
    (y, states), (y_want, states_want) = got, want
    assert tuple(y.shape) == tuple(y_want.shape)
    assert max_err(y.detach(), y_want.detach()) <= TOL[dtype]
    flat, flat_want = [s for lay in states for s in lay], [s for lay in states_want for s in lay]
    assert len(flat) == len(flat_want) > 0
    for s, w in zip(flat, flat_want, strict=True):
        assert max_err(s.detach(), w.detach()) <= TOL[dtype]


def assert_gradients(got, want, dtype):
    """The loss and every canonical gradient (inputs, each initial state, each weight) within the
    stated scale-relative tolerance (docs/parity.md: 1e-4 float32, 1e-10 float64)."""
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert abs(got.loss - want.loss) <= tol * max(1.0, abs(want.loss))
    got_all = [got.inputs, *[s for lay in got.states for s in lay], *got.weights]
    want_all = [want.inputs, *[s for lay in want.states for s in lay], *want.weights]
    assert len(got_all) == len(want_all) > 3
    for g, w in zip(got_all, want_all, strict=True):
        assert max_err(g, w) <= tol * max(1.0, float(np.max(np.abs(w))))


@pytest.mark.parametrize(("batch", "units"), SIZES)
@pytest.mark.parametrize("flags", [(True, False), (False, True)])  # (return_sequences, go_backwards)
@pytest.mark.parametrize("method", ["cpu", "auto", "torchscript"])
def test_forward_matches_uncompiled(rng, dtype, config, batch, units, flags, method):
    seq, back = flags
    rnn = built(config, dtype, rng, units, return_sequences=seq, return_state=True, go_backwards=back)
    fast = xf.compile(rnn, method)
    x, states = torch_inputs(rng, config[0], dtype, batch, units)
    want = rnn(x, states)
    assert_outputs(fast(x, states), want, dtype)  # autograd on: the saving forward
    with torch.no_grad():
        assert_outputs(fast(x, states), want, dtype)  # autograd off: one step's scratch
    y = fast(x)  # zero initial states
    assert max_err(y[0].detach(), rnn(x)[0].detach()) <= TOL[dtype]


@pytest.mark.parametrize(("batch", "units"), SIZES)
@pytest.mark.parametrize("steps", [STEPS, 1])
@pytest.mark.parametrize("method", ["cpu", "torchscript"])
def test_gradients_match_uncompiled(rng, dtype, config, batch, units, steps, method):
    """The canonical gradients of the parity loss (inputs, every initial state, every weight)
    through the compiled object; float32 within the stated scale-relative 1e-4."""
    kind = config[0]
    rnn = built(config, dtype, rng, units, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, method)
    x = rng.normal(size=(batch, steps, FEATURES)).astype(dtype)
    states = random_cell_states(rng, kind, 2, batch, units, dtype)
    loss_weights = (rng.uniform(-1, 1, (batch, steps, units)), random_cell_states(rng, kind, 2, batch, units, dtype))
    got = training.loss_and_grads("torch", fast, x, states, loss_weights)
    want = training.loss_and_grads("torch", rnn, x, states, loss_weights)
    assert_gradients(got, want, dtype)


@pytest.mark.parametrize(("batch", "units"), SIZES)
def test_threaded_steps_give_the_same_numbers(rng, dtype, config, batch, units):
    """Every step's elementwise pass on the OpenMP threads (``parallel_min`` 0: at the test sizes
    they run on one thread) gives the one-thread results bit for bit: forward without and with the
    saves for the backward, right-padded masks (sorted and in their own order) and every gradient."""
    lib = cpu_build.library()
    if not lib.xf_openmp():
        pytest.skip("the kernel was built without OpenMP (the compiler has no -fopenmp): one thread")
    kind = config[0]
    rnn = built(config, dtype, rng, units, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, "cpu")
    x, states = torch_inputs(rng, kind, dtype, batch, units)
    mask = np.arange(STEPS)[None, :] < rng.integers(0, STEPS + 1, batch)[:, None]
    loss_weights = (rng.uniform(-1, 1, (batch, STEPS, units)), random_cell_states(rng, kind, 2, batch, units, dtype))
    np_states = [[s.numpy() for s in layer] for layer in states]

    def run():
        with torch.no_grad():
            out = [fast(x, states), fast(x, states, mask=mask)]
        out += [fast(x, states)]
        grads = [
            training.loss_and_grads("torch", fast, x.numpy(), np_states, loss_weights, mask=m) for m in (None, mask)
        ]
        flat = [t.detach().numpy() for y, st in out for t in [y, *(s for layer in st for s in layer)]]
        return flat + [a for g in grads for a in [g.inputs, *(s for lay in g.states for s in lay), *g.weights]]

    one_thread = run()
    lib.xf_set_parallel_min(0)
    try:
        threaded = run()
    finally:
        lib.xf_set_parallel_min(cpu_build.PARALLEL_MIN)
    assert len(threaded) == len(one_thread)
    assert all(np.array_equal(a, b) for a, b in zip(threaded, one_thread, strict=True))


@pytest.mark.parametrize(
    ("batch", "grad", "trainable", "runs"),
    [(12, False, True, "oneDNN"), (12, True, False, "oneDNN"), (12, True, True, "C loop"), (3, False, True, "C loop")],
)
def test_which_float32_lstm_runs(rng, batch, grad, trainable, runs, monkeypatch):
    """oneDNN's primitive for a float32 LSTM above ``ONEDNN_MIN_BATCH`` that autograd does not record
    (no autograd, or nothing that requires a gradient); the C loop for a recorded call (its BPTT) and
    for small batches. Same numbers either way."""
    rnn = built(("LSTMCell", {}), "float32", rng, 6, return_sequences=True)
    for p in rnn.parameters():
        p.requires_grad_(trainable)
    fast = xf.compile(rnn, "cpu")
    calls = []
    onednn = cpu._onednn_lstm
    monkeypatch.setattr(cpu, "_onednn_lstm", lambda *a: calls.append(1) or onednn(*a))
    x, _ = torch_inputs(rng, "LSTMCell", "float32", batch, 6)
    with torch.set_grad_enabled(grad):
        got = fast(x)
    assert len(calls) == (2 if runs == "oneDNN" else 0)  # two layers
    assert max_err(got.detach(), rnn(x).detach()) <= TOL["float32"]


def test_gradients_of_only_what_requires_them(rng, config):
    """The projection's gradients come from the recurrence's own backward (``_projection_grads``): only
    those autograd asks for. Layer 0's input kernel frozen, layer 1's biases frozen, the input without
    a gradient, the initial states with: the same gradients as autograd through the uncompiled RNN."""
    rnn = built(config, "float64", rng, 6, return_sequences=True)
    fast = xf.compile(rnn, "cpu")
    first, second = (cell.cell for cell in rnn.cells)
    first.weight_ih.requires_grad_(False)
    for b in (second.bias_ih, second.bias_hh):
        if b is not None:
            b.requires_grad_(False)
    x, states = torch_inputs(rng, config[0], "float64", 12, 6)
    states = [[s.requires_grad_() for s in lay] for lay in states]
    wanted = [p for p in rnn.parameters() if p.requires_grad] + [s for lay in states for s in lay]
    weights = torch.from_numpy(rng.uniform(-1, 1, (12, STEPS, 6)))
    got = torch.autograd.grad((fast(x, states) * weights).sum(), wanted)
    want = torch.autograd.grad((rnn(x, states) * weights).sum(), wanted)
    for g, w in zip(got, want, strict=True):
        assert max_err(g, w) <= 1e-10 * max(1.0, float(w.abs().max()))


def test_cpu_trains_the_cells_own_parameters(rng):
    rnn = built(CONFIGS["GRU reset_before"][:2], "float32", rng, 6, return_sequences=True)
    fast = xf.compile(rnn, "cpu")
    x, _ = torch_inputs(rng, "GRUCell", "float32", 3, 6)
    fast(x).square().sum().backward()
    trained = [p for p in rnn.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
def test_auto_picks_cpu_for_cpu_stacks(kind, monkeypatch):
    rnn = layers.RNN([getattr(layers, kind)(6, backend="torch") for _ in range(2)])
    rnn.build((None, None, FEATURES))
    assert auto_method(rnn) == "cpu" and xf.compile(rnn, "auto").method == "cpu"
    mixed = layers.RNN([layers.SimpleRNNCell(6, backend="torch"), getattr(layers, kind)(6, backend="torch")])
    mixed.build((None, None, FEATURES))
    simple = layers.RNN([layers.SimpleRNNCell(6, backend="torch") for _ in range(2)])
    simple.build((None, None, FEATURES))
    assert auto_method(mixed) == auto_method(simple) == "cpu"  # SimpleRNN layers too (docs/performance.md)
    assert all(isinstance(c, cpu.CpuSimpleRNNLayer) for c in xf.compile(simple, "cpu").loop.cells)
    monkeypatch.setattr(cpu_build, "available", lambda: False)  # no compiler here: auto keeps TorchScript
    assert auto_method(rnn) == "torchscript"


def test_cpu_refuses_where_the_kernel_cannot_build(monkeypatch):
    rnn = layers.RNN([layers.LSTMCell(6, backend="torch")])
    rnn.build((None, None, FEATURES))
    monkeypatch.setattr(cpu_build, "_load", lambda: "cc failed to build cpu_cells.c: no such file")
    with pytest.raises(xf.UnsupportedConfigError, match=r"no such file.*'torchscript'"):
        xf.compile(rnn, "cpu")


def test_cpu_saves_as_torchscript(rng):
    rnn = built(CONFIGS["GRU reset_before"][:2], "float64", rng, 6, return_sequences=True)
    fast = xf.compile(rnn, "cpu")
    x, _ = torch_inputs(rng, "GRUCell", "float64", 3, 6)
    buffer = io.BytesIO()
    torch.jit.save(fast, buffer)
    buffer.seek(0)
    assert max_err(torch.jit.load(buffer)(x).detach(), rnn(x).detach()) <= TOL["float64"]


def test_kernel_is_built_once_per_machine(tmp_path, monkeypatch):
    """A new cache directory gets the library; a second build finds it (no compile)."""
    monkeypatch.setenv("RNN_XFRAMEWORK_CACHE", str(tmp_path))
    first = cpu_build._build("cc")
    assert first.parent == tmp_path / "cpu" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert cpu_build._build("cc") == first and first.stat().st_mtime_ns == stamp


def test_gru_reset_before_eager_torch_matches_numpy(rng):
    """``GRUCell(reset_after=False)`` on torch (refused before: nn.GRUCell lacks it) computes
    NumPy's step, holds the same weights, and its gradients pass a finite-difference check."""
    w = random_cell_weights(rng, "GRUCell", [3], 4, "float64", reset_after=False)
    ref = layers.GRUCell(4, backend="numpy", dtype="float64", reset_after=False)
    ref.set_weights(w)
    cell = xf.convert(ref, "torch")
    for a, b in zip(cell.get_weights(), w, strict=True):
        np.testing.assert_array_equal(a, b)
    x, h = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    got, _ = cell(torch.from_numpy(x), [torch.from_numpy(h)])
    assert max_err(got.detach(), ref(x, [h])[0]) <= TOL["float64"]
    params = [p for p in cell.parameters() if p.requires_grad]
    assert len(params) == 3  # kernel, recurrent kernel, the one bias (bias_hh frozen, as Keras has one)

    def step(xt, ht, *_):
        return cell(xt, [ht])[0]

    xt, ht = torch.from_numpy(x).requires_grad_(), torch.from_numpy(h).requires_grad_()
    assert torch.autograd.gradcheck(step, (xt, ht, *params))
    with pytest.raises(xf.UnsupportedConfigError, match="reset_after"):
        xf.to_torch(ref)  # torch.nn has no such cell


def test_supports_cell_rule():
    lstm = layers.LSTMCell(4, backend="torch", input_size=3)
    assert cpu.supports_cell(lstm) and cpu.supports_cell(
        layers.GRUCell(4, backend="torch", reset_after=False, input_size=3)
    )
    simple = layers.SimpleRNNCell(4, backend="torch", activation="relu", input_size=3)
    assert cpu.supports_cell(simple) and cpu.auto_picks(simple) and cpu.auto_picks(lstm)
    assert isinstance(cpu.layer_for(simple), cpu.CpuSimpleRNNLayer) and cpu.layer_for(simple).relu


ACTIVE = [11, 11, 9, 9, 6, 3, 3, 1, 0]  # rows real per step (non-increasing); the batch has 12: row 11 never


@pytest.mark.parametrize("relu", [False, True])
def test_rnn_kernel_active_rows(rng, dtype, relu):
    """``xf_rnn_fwd`` / ``xf_rnn_bwd`` with ``active`` through ctypes: each row is the plain recurrence
    over its own first steps, then holds its last state (the identity step of ``hold_rows``, as the
    LSTM / GRU functions); the backward is torch autograd's of that function, so ``dz`` is zero at
    a held step and ``dh`` of a row that is never real passes through (plus its ``dy``). Batch 12:
    the BLAS at the steps with more than 8 rows, the kernel's small product below."""
    tdt = getattr(torch, dtype)
    steps, batch, hid = len(ACTIVE), 12, 20
    lengths = [sum(a > b for a in ACTIVE) for b in range(batch)]
    xp = torch.from_numpy(rng.normal(size=(steps, batch, hid))).to(tdt)
    w = torch.from_numpy(rng.uniform(-1, 1, (hid, hid)) * np.sqrt(1.5 / hid)).to(tdt)
    h0, dy, dh_in = (torch.from_numpy(rng.normal(size=s)).to(tdt) for s in [(batch, hid), xp.shape, (batch, hid)])
    active = torch.tensor(ACTIVE, dtype=torch.int32)

    xr, hr = xp.clone().requires_grad_(), h0.clone().requires_grad_()  # the reference, row by row in torch
    act = torch.relu if relu else torch.tanh
    rows = []
    for b, n in enumerate(lengths):
        h, out = hr[b], []
        for t in range(steps):
            h = act(xr[t, b] + w @ h) if t < n else h
            out.append(h)
        rows.append(torch.stack(out))
    want = torch.stack(rows, 1)
    dz_want, dh_want = torch.autograd.grad((dy * want).sum() + (dh_in * want[-1]).sum(), [xr, hr])

    y = torch.full((steps, batch, hid), float("nan"), dtype=tdt)
    u = w.t().contiguous()
    p = torch.Tensor.data_ptr
    cpu_build.kernel("rnn_fwd", tdt)(steps, batch, hid, int(relu), p(xp), p(u), p(h0), p(y), p(active), None, 0)
    assert max_err(y, want.detach()) <= TOL[dtype]
    order = torch.from_numpy(rng.permutation(batch))  # lengths (hold_past): the rows in any order, NULL active
    y_rows, lens = torch.full_like(y, float("nan")), torch.tensor(lengths, dtype=torch.int32)[order]
    xp_rows, h0_rows = xp[:, order].contiguous(), h0[order].contiguous()
    cpu_build.kernel("rnn_fwd", tdt)(
        steps, batch, hid, int(relu), p(xp_rows), p(u), p(h0_rows), p(y_rows), None, p(lens), 0
    )
    assert max_err(y_rows, want.detach()[:, order]) <= TOL[dtype]
    dh, dz = dh_in.clone(), torch.full_like(xp, float("nan"))
    cpu_build.kernel("rnn_bwd", tdt)(steps, batch, hid, int(relu), p(w), p(y), p(dy), p(dh), p(dz), p(active))
    assert max_err(dz, dz_want) <= TOL[dtype] * max(1.0, float(dz_want.abs().max()))
    assert max_err(dh, dh_want) <= TOL[dtype] * max(1.0, float(dh_want.abs().max()))
    never = lengths.index(0)
    assert max_err(dh[never], dh_in[never] + dy[:, never].sum(0)) <= TOL[dtype] * 10
    for t, n in enumerate(ACTIVE):  # a held step: no gradient reaches its projection
        assert torch.all(dz[t, n:] == 0)
    inplace = xp.clone()  # the forward may write over its projection, as the layer does
    cpu_build.kernel("rnn_fwd", tdt)(
        steps, batch, hid, int(relu), p(inplace), p(u), p(h0), p(inplace), p(active), None, 0
    )
    assert torch.equal(inplace, y)
    full, every = torch.empty_like(y), torch.full((steps,), batch, dtype=torch.int32)
    y_every = torch.empty_like(y)
    cpu_build.kernel("rnn_fwd", tdt)(steps, batch, hid, int(relu), p(xp), p(u), p(h0), p(full), None, None, 0)
    cpu_build.kernel("rnn_fwd", tdt)(steps, batch, hid, int(relu), p(xp), p(u), p(h0), p(y_every), p(every), None, 0)
    assert torch.equal(full, y_every)  # NULL: every row at every step
    real = torch.arange(batch)[None, :] < active[:, None]  # packed (row0): only the real rows, step after step
    xp_packed = xp[real].contiguous()
    y_half, y_packed = torch.full_like(y, float("nan")), torch.full_like(xp_packed, float("nan"))
    for flag, out in [(1, y_half), (3, y_packed)]:  # xp packed; xp and y packed
        cpu_build.kernel("rnn_fwd", tdt)(
            steps, batch, hid, int(relu), p(xp_packed), p(u), p(h0), p(out), p(active), None, flag
        )
    assert torch.equal(y_half, y)
    assert torch.equal(y_packed, y[real])
    cpu_build.kernel("rnn_fwd", tdt)(
        steps, batch, hid, int(relu), p(xp_packed), p(u), p(h0), p(xp_packed), p(active), None, 3
    )
    assert torch.equal(xp_packed, y[real])  # in place, as the layer runs it
