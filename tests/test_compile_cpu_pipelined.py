"""Two LSTM layers of a ``"cpu"``-compiled stack in one pipelined C call (``cpu_cells.c``'s
``xf_lstm2_fwd``, :meth:`~rnn_xframework.backends.torch.compile.cpu.CpuLSTMLayer.pipelined`): calls
autograd does not record, batches up to ``PIPELINE_MAX_BATCH`` rows, torch on two threads or more.
Against the uncompiled RNN at the stated tolerances, with a count of the pipelined calls that ran; and
where it must not run.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import TOL, require
from helpers import max_err, random_cell_states, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")
from rnn_xframework.backends.torch.compile import cpu, cpu_build, cpu_scratch  # noqa: E402
from rnn_xframework.backends.torch.compile import cpu_recurrences as rec  # noqa: E402

FEATURES, STEPS = 5, 7


@pytest.fixture(autouse=True)
def two_threads():
    """torch on two threads (the pipelined call's condition), whatever this machine's default."""
    cpu_build.library()  # the kernel builds here (CI has a C compiler): a failure is a failure
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def counted(monkeypatch, name):
    """``rec.<name>`` wrapped: the list it returns gets one entry per call, the threads that ran (its last output)."""
    ran: list[int] = []
    real = getattr(rec, name)

    def wrapper(*args, **kw):
        out = real(*args, **kw)
        ran.append(out[-1])
        return out

    monkeypatch.setattr(rec, name, wrapper)
    return ran


@pytest.fixture
def pairs(monkeypatch):
    """The pipelined calls made: one entry (the threads that ran) per pair of layers."""
    return counted(monkeypatch, "lstm_pair_forward")


def stack(rng, dtype, kinds, units, bias=True, **kw):
    require("torch")
    cells = [
        getattr(layers, k)(u, backend="torch", dtype=dtype, use_bias=bias) for k, u in zip(kinds, units, strict=True)
    ]
    rnn = layers.RNN(cells, return_state=True, **kw)
    rnn.build((None, None, FEATURES))
    dims = [FEATURES, *units[:-1]]
    weights = []
    for kind, d, u in zip(kinds, dims, units, strict=True):
        w = random_cell_weights(rng, kind, [d], u, dtype)
        weights += w if bias else w[:2]
    rnn.set_weights(weights)
    return rnn


def states_for(rng, kinds, units, batch, dtype):
    out = []
    for kind, u in zip(kinds, units, strict=True):
        out += [[torch.from_numpy(s) for s in layer] for layer in random_cell_states(rng, kind, 1, batch, u, dtype)]
    return out


def assert_same(got, want, dtype):
    (y, states), (y_want, states_want) = got, want
    assert max_err(y, y_want) <= TOL[dtype]
    for a, b in zip((s for lay in states for s in lay), (s for lay in states_want for s in lay), strict=True):
        assert max_err(a, b) <= TOL[dtype]


@pytest.mark.parametrize("units", [(20, 6), (6, 20, 9), (20, 6, 20, 6)], ids=["2 layers", "3 layers", "4 layers"])
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("given", [True, False], ids=["initial states", "zero states"])
def test_pipelined_pairs_match_the_uncompiled_rnn(rng, dtype, pairs, units, batch, bias, sequences, given):
    """Every pair of LSTM layers from the bottom runs pipelined on two threads (a third layer alone);
    outputs and every final state as the uncompiled RNN's."""
    kinds = ["LSTMCell"] * len(units)
    rnn = stack(rng, dtype, kinds, list(units), bias, return_sequences=sequences)
    fast = xf.compile(rnn, "cpu")
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype))
    states = states_for(rng, kinds, units, batch, dtype) if given else None
    with torch.no_grad():
        got, want = fast(x, states), rnn(x, states)
    assert_same(got, want, dtype)
    assert pairs == [2] * (len(units) // 2)


def test_one_thread_and_two_give_the_same_bits(rng, dtype):
    """The kernel's serial form (one thread) and its pipelined form compute the same numbers, bit for bit."""
    h1, h2, batch = 20, 6, 3
    t = lambda *shape: torch.from_numpy(rng.normal(size=shape).astype(dtype))  # noqa: E731
    x = t(STEPS, batch, FEATURES)
    args = (x, t(4 * h1, FEATURES), t(4 * h1), t(4 * h1, h1), t(4 * h2, h1), t(4 * h2), t(4 * h2, h2))
    state, up = [t(batch, h1), t(batch, h1)], [t(batch, h2), t(batch, h2)]
    one = rec.lstm_pair_forward(*args, state, up, threads=1)
    two = rec.lstm_pair_forward(*args, state, up, threads=2)
    assert (one[3], two[3]) == (1, 2)
    flat = lambda r: [r[0], *r[1], *r[2]]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(flat(one), flat(two), strict=True))
    # and both as the two layers one after the other (the projections summed in another order)
    xp1 = torch.addmm(args[2], x.reshape(-1, FEATURES), args[1].t()).view(STEPS, batch, 4 * h1)
    y1, c1 = rec.lstm_forward(xp1, args[3], *state, False)[:2]
    xp2 = torch.addmm(args[5], y1.reshape(-1, h1), args[4].t()).view(STEPS, batch, 4 * h2)
    y2, c2 = rec.lstm_forward(xp2, args[6], *up, False)[:2]
    for a, b in zip(flat(two), [y2, y1[-1], c1, y2[-1], c2], strict=True):
        assert max_err(a, b) <= TOL[dtype]


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "SimpleRNNCell"])
@pytest.mark.parametrize("change", ["in place", "data", "load_state_dict"])
def test_changed_weights_show_in_the_next_call(rng, change, kind):
    """The C loop keeps its transposed weights between calls (``cpu_scratch.transposed``),
    rebuilt where the weights' bytes changed: an in-place update, a write through ``.data`` (which autograd's
    version counter does not see) and ``load_state_dict`` each show in the next call as in the uncompiled RNN."""
    rnn = stack(rng, "float32", [kind] * 2, [20, 6])
    fast = xf.compile(rnn, "cpu")
    x = torch.from_numpy(rng.normal(size=(3, STEPS, FEATURES)).astype("float32"))
    with torch.no_grad():
        first = fast(x)[0]
        assert max_err(first, rnn(x)[0]) <= TOL["float32"]
        for cell in rnn.cells:
            if change == "in place":
                cell.cell.weight_hh.mul_(0.5)
                cell.cell.weight_ih.add_(0.1)
            elif change == "data":
                cell.cell.weight_hh.data[0, 0] += 1.0
                cell.cell.weight_ih.data[-1, -1] -= 1.0
        if change == "load_state_dict":
            state = {k: v * 0.7 for k, v in rnn.state_dict().items()}
            rnn.load_state_dict(state)
        got, want = fast(x)[0], rnn(x)[0]
    assert max_err(got, want) <= TOL["float32"] and max_err(got, first) > 1e-3


def test_nan_in_the_input_reaches_the_outputs_as_in_the_uncompiled_rnn(rng, dtype, pairs):
    """A NaN in one row's input reaches that row only (rows are independent), as uncompiled."""
    rnn = stack(rng, dtype, ["LSTMCell"] * 2, [20, 6], return_sequences=True)
    x = torch.from_numpy(rng.normal(size=(3, STEPS, FEATURES)).astype(dtype))
    x[1, 2, 0] = float("nan")
    with torch.no_grad():
        y = xf.compile(rnn, "cpu")(x)[0]
        want = rnn(x)[0]
    assert pairs == [2]
    assert torch.equal(torch.isnan(y), torch.isnan(want)) and not torch.isnan(y[[0, 2]]).any()
    assert max_err(y[[0, 2]], want[[0, 2]]) <= TOL[dtype]


@pytest.mark.parametrize(
    "case", ["recorded", "batch 9", "one thread", "float32 oneDNN batch", "GRU above", "GRU below"]
)
def test_not_pipelined_where_it_must_not(rng, pairs, case):
    """Calls autograd records, batches above PIPELINE_MAX_BATCH, torch on one thread, and pairs that are
    not two LSTM layers run layer by layer, with the same results."""
    dtype = "float32" if case == "float32 oneDNN batch" else "float64"
    kinds = {"GRU above": ["LSTMCell", "GRUCell"], "GRU below": ["GRUCell", "LSTMCell", "LSTMCell"]}.get(
        case, ["LSTMCell", "LSTMCell"]
    )
    units = [20, 6, 9][: len(kinds)]
    rnn = stack(rng, dtype, kinds, units, return_sequences=True)
    batch = {"batch 9": rec.PIPELINE_MAX_BATCH + 1, "float32 oneDNN batch": cpu.ONEDNN_MIN_BATCH + 1}.get(case, 3)
    if case == "one thread":
        torch.set_num_threads(1)
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype))
    x.requires_grad_(case == "recorded")
    fast = xf.compile(rnn, "cpu")
    with torch.no_grad() if case != "recorded" else torch.enable_grad():
        got, want = fast(x), rnn(x)
    detached = lambda r: (r[0].detach(), [[s.detach() for s in lay] for lay in r[1]])  # noqa: E731
    assert_same(detached(got), detached(want), dtype)
    assert pairs == ([2] if case == "GRU below" else [])
    if case == "recorded":
        (g,) = torch.autograd.grad(got[0].sum(), x)
        (g_want,) = torch.autograd.grad(want[0].sum(), x)
        assert max_err(g, g_want) <= TOL[dtype]


def test_two_threads_calling_at_once(rng, pairs):
    """Two Python threads call one compiled stack at once (each call its own OpenMP team)."""
    rnn = stack(rng, "float32", ["LSTMCell"] * 2, [20, 6], return_sequences=True)
    fast = xf.compile(rnn, "cpu")
    xs = [torch.from_numpy(rng.normal(size=(4, STEPS, FEATURES)).astype("float32")) for _ in range(2)]
    with torch.no_grad():
        want = [rnn(x)[0] for x in xs]
    errors: list[float] = []

    def work(i):
        with torch.no_grad():
            for _ in range(20):
                errors.append(max_err(fast(xs[i])[0], want[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(errors) == 40 and max(errors) <= TOL["float32"] and len(pairs) == 40
    assert np.all(np.asarray(pairs) >= 1)


@pytest.fixture
def both(monkeypatch):
    """The two-direction calls made (``lstm_forward_both``): one entry (the threads that ran) per call."""
    return counted(monkeypatch, "lstm_forward_both")


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("given", [True, False], ids=["initial states", "zero states"])
def test_bidirectional_directions_side_by_side(rng, dtype, both, batch, merge_mode, sequences, given):
    """A ``"cpu"``-compiled ``Bidirectional`` of one LSTM layer each way runs both directions in one C call on
    two threads; outputs and states as the uncompiled ``Bidirectional``'s."""
    forward = stack(rng, dtype, ["LSTMCell"], [20], return_sequences=sequences)
    bi = layers.Bidirectional(forward, merge_mode=merge_mode)
    bi.build((None, None, FEATURES))
    bi.set_weights([rng.normal(scale=0.5, size=np.shape(w)) for w in bi.get_weights()])
    fast = xf.compile(bi, "cpu")
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype))
    states = states_for(rng, ["LSTMCell"] * 2, [20, 20], batch, dtype) if given else None
    with torch.no_grad():
        got, want = fast(x, states), bi(x, states)
    (y, s), (y_want, s_want) = got, want
    ys, ys_want = (y, y_want) if merge_mode is None else ([y], [y_want])
    assert all(max_err(a, b) <= TOL[dtype] for a, b in zip(ys, ys_want, strict=True))
    flat = lambda st: [t for lay in st for t in lay]  # noqa: E731
    assert all(max_err(a, b) <= TOL[dtype] for a, b in zip(flat(s), flat(s_want), strict=True))
    assert both == [2]


def test_both_directions_one_thread_and_two_give_the_same_bits(rng, dtype):
    t = lambda *shape: torch.from_numpy(rng.normal(size=shape).astype(dtype))  # noqa: E731
    a = (t(STEPS, 3, 80), t(80, 20), t(3, 20), t(3, 20))
    b = (t(STEPS, 3, 24), t(24, 6), t(3, 6), t(3, 6))
    one, two = rec.lstm_forward_both(a, b, threads=1), rec.lstm_forward_both(a, b, threads=2)
    assert (one[2], two[2]) == (1, 2)
    for got, want in ((two[0], rec.lstm_forward(*a, False)[:2]), (two[1], rec.lstm_forward(*b, False)[:2])):
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))  # as two separate calls, bit for bit
    assert all(torch.equal(g, w) for g, w in zip([*one[0], *one[1]], [*two[0], *two[1]], strict=True))


@pytest.mark.parametrize("case", ["recorded", "GRU", "two layers each way", "batch 9"])
def test_bidirectional_side_by_side_only_where_it_may(rng, both, case):
    """Recorded calls, other cell types, deeper RNNs and larger batches run the directions one after the other."""
    kind = "GRUCell" if case == "GRU" else "LSTMCell"
    depth = 2 if case == "two layers each way" else 1
    forward = stack(rng, "float64", [kind] * depth, [20] * depth, return_sequences=True)
    bi = layers.Bidirectional(forward)
    bi.build((None, None, FEATURES))
    fast = xf.compile(bi, "cpu")
    batch = rec.PIPELINE_MAX_BATCH + 1 if case == "batch 9" else 3
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES))).requires_grad_(case == "recorded")
    with torch.no_grad() if case != "recorded" else torch.enable_grad():
        got, want = fast(x)[0], bi(x)[0]
    assert max_err(got.detach(), want.detach()) <= TOL["float64"]
    assert both == []


@pytest.mark.parametrize("units", [(20, 6), (6, 20, 9)], ids=["2 layers", "3 layers"])
@pytest.mark.parametrize("zero", [False, True], ids=["held outputs", "zero outputs"])
@pytest.mark.parametrize("sequences", [True, False])
def test_right_padded_masks_pipelined_too(rng, dtype, pairs, units, zero, sequences):
    """A right-padded masked call of up to 8 rows without autograd (rows in their own order, each ended row
    holding its state) runs its LSTM pairs pipelined too; outputs and states as the uncompiled masked RNN's,
    NaN in the padding reaching nothing."""
    kinds = ["LSTMCell"] * len(units)
    rnn = stack(rng, dtype, kinds, list(units), return_sequences=sequences, zero_output_for_mask=zero)
    lengths = np.array([STEPS, 0, 3, 1, STEPS - 1])
    mask = np.arange(STEPS)[None, :] < lengths[:, None]
    x = rng.normal(size=(5, STEPS, FEATURES)).astype(dtype)
    poisoned = np.where(mask[:, :, None], x, np.nan).astype(dtype)
    states = states_for(rng, kinds, units, 5, dtype)
    with torch.no_grad():
        got = xf.compile(rnn, "cpu")(torch.from_numpy(poisoned), states, mask=mask)
        want = rnn(torch.from_numpy(x), states, mask=mask)
    assert pairs == [2]
    assert_same(got, want, dtype)


def test_transposed_is_exact_and_follows_every_write(rng, dtype):
    """``cpu_scratch.transposed(w)`` is ``w.t()`` bit for bit: fresh, kept, after a write through ``.data``, for another
    tensor of the same shape, past the cache's size (entries dropped and made again), and for a matrix too
    large to keep."""
    w = torch.from_numpy(rng.normal(size=(12, 5)).astype(dtype)).requires_grad_()
    assert torch.equal(cpu_scratch.transposed(w), w.detach().t())
    assert torch.equal(cpu_scratch.transposed(w), w.detach().t())  # kept
    w.data[3, 4] = 7.0
    assert torch.equal(cpu_scratch.transposed(w), w.detach().t())
    others = [
        torch.from_numpy(rng.normal(size=(12, 5)).astype(dtype)) for _ in range(cpu_scratch.TRANSPOSED_PER_THREAD + 2)
    ]
    for o in others:
        assert torch.equal(cpu_scratch.transposed(o), o.t())
    assert torch.equal(cpu_scratch.transposed(w), w.detach().t())
    big = torch.from_numpy(rng.normal(size=(cpu_scratch.TRANSPOSED_MAX // 4 + 1, 4)).astype(dtype))
    assert torch.equal(cpu_scratch.transposed(big), big.t())
