"""The Triton kernels (``xf.compile(rnn, "triton")``) against the NumPy reference and
against autograd through the uncompiled cells.

Without a GPU the kernels run in Triton's interpreter on CPU tensors: each test sets
``TRITON_INTERPRET=1`` for itself only (monkeypatch; the kernels read it per call, so nothing
leaks into other tests). With a GPU (``scripts/gpu_checks.py``) the same tests run compiled on
CUDA. Sizes are small because interpreted kernels are slow; they cover batch 1, 3 and 17 (two
programs of 16 rows), units that are not a power of two, one time step, one and two layers,
initial states given and not, and every cell type in float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL
from helpers import KINDS, make_cells, max_err, random_cell_states, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers
from rnn_xframework.errors import UnsupportedConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from rnn_xframework.backends.torch.compile import triton as triton_host  # noqa: E402 - after the skips

# (batch, steps, features, units, layers, initial states given)
SIZES = [
    (1, 1, 3, 5, 1, True),
    (3, 4, 5, 6, 2, False),
    (17, 3, 4, 20, 2, True),
]


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> str:
    if torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        return "cuda"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return "cpu"


def problem(kind, dtype, sizes, seed=0, **kw):
    """``(torch RNN, numpy RNN, x, states)`` with the same random canonical weights."""
    batch, steps, features, units, n, _ = sizes
    rng = np.random.default_rng(seed)
    weights = random_cell_weights(rng, kind, [features] + [units] * (n - 1), units, dtype)
    models = []
    for backend in ("torch", "numpy"):
        rnn = layers.RNN(make_cells(backend, kind, n, units, dtype), return_sequences=True, return_state=True, **kw)
        rnn.build((None, None, features))
        rnn.set_weights(weights)
        models.append(rnn)
    x = rng.normal(size=(batch, steps, features)).astype(dtype)
    return *models, x, random_cell_states(rng, kind, n, batch, units, dtype)


def to_torch(a, device, grad=False):
    return torch.tensor(a, device=device, requires_grad=grad)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "b{}t{}f{}u{}l{}{}".format(*s[:5], "s" if s[5] else ""))
@pytest.mark.parametrize("kind", KINDS)
def test_outputs_match_numpy_reference(device, dtype, kind, sizes):
    rnn, ref, x, states = problem(kind, dtype, sizes)
    rnn.to(device)
    fast = xf.compile(rnn, "triton")
    given = sizes[5]
    want_y, want_s = ref(x, states) if given else ref(x)
    with torch.no_grad():
        args = [[to_torch(s, device) for s in layer] for layer in states] if given else None
        y, got_s = fast(to_torch(x, device), args)
    assert y.device.type == device and y.dtype == getattr(torch, dtype)
    assert tuple(y.shape) == want_y.shape
    assert max_err(y.cpu(), want_y) <= TOL[dtype]
    for g_layer, w_layer in zip(got_s, want_s, strict=True):
        assert len(g_layer) == len(w_layer)
        for g, w in zip(g_layer, w_layer, strict=True):
            assert max_err(g.cpu(), w) <= TOL[dtype]


def assert_gradients_match(rnn, x, states, device):
    """Every gradient (input, initial states, every trainable parameter) of a loss that weighs
    the output sequence and the final states, through ``xf.compile(rnn, "triton")`` and through
    the uncompiled RNN's autograd: equal to 1e-12 (float64)."""
    rnn.to(device)
    fast = xf.compile(rnn, "triton")
    params = [p for p in rnn.parameters() if p.requires_grad]
    grads = []
    for model in (rnn, fast):
        xt = to_torch(x, device, grad=True)
        st = [[to_torch(s, device, grad=True) for s in layer] for layer in states]
        y, ends = model(xt, st)
        loss = (y * y.detach().cos()).sum() + sum((s * (k + 1.5)).sum() for k, e in enumerate(ends) for s in e)
        grads.append(torch.autograd.grad(loss, [xt, *(s for layer in st for s in layer), *params]))
    assert len(grads[1]) == 1 + sum(len(s) for s in states) + len(params)
    for a, b in zip(*grads, strict=True):
        assert max_err(a.cpu(), b.cpu()) <= 1e-12


@pytest.mark.parametrize("sizes", SIZES[1:], ids=["b3t4u6l2", "b17t3u20l2"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_autograd_through_cells(device, kind, sizes):
    """Every gradient (input, initial states, every trainable parameter) of a loss that weighs
    the output sequence and the final states, float64, against the uncompiled RNN's autograd."""
    rnn, _, x, states = problem(kind, "float64", sizes, seed=3)
    assert_gradients_match(rnn, x, states, device)


def test_flags_and_reuse(device):
    """``go_backwards``, ``return_sequences=False``, no ``return_state``, a mixed stack (relu
    SimpleRNN, LSTM, GRU), and a second call with new inputs on the same compiled object."""
    cells = [
        layers.SimpleRNNCell(7, activation="relu", backend="torch", dtype="float32"),
        layers.LSTMCell(5, backend="torch", dtype="float32"),
        layers.GRUCell(6, backend="torch", dtype="float32"),
    ]
    rnn = layers.RNN(cells, go_backwards=True)
    rnn.build((None, None, 4))
    rng = np.random.default_rng(5)
    rnn.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype("float32") for w in rnn.get_weights()])
    rnn.to(device)
    fast = xf.compile(rnn, "triton")
    for steps in (3, 5):
        x = to_torch(rng.normal(size=(2, steps, 4)).astype("float32"), device)
        with torch.no_grad():
            got, want = fast(x), rnn(x)
        assert got.shape == (2, 6)
        assert max_err(got.cpu(), want.cpu()) <= TOL["float32"]


def test_refuses_what_it_does_not_cover(device):
    """Typed errors naming the unsupported thing, before any kernel runs (masks and dropout:
    ``tests/test_triton_masked.py``)."""
    half = layers.RNN([layers.SimpleRNNCell(4, backend="torch")])
    half.build((None, None, 3))
    with pytest.raises(UnsupportedConfigError, match=r"float16"):
        xf.compile(half.to(torch.float16), "triton")
    with pytest.raises(UnsupportedConfigError, match=r"bfloat16"):  # the kernels' check, called directly
        triton_host.check_tensor(torch.zeros(2, 3, dtype=torch.bfloat16))


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rnn = layers.RNN([layers.SimpleRNNCell(4, backend="torch")])
    rnn.build((None, None, 3))
    with pytest.raises(UnsupportedConfigError, match="TRITON_INTERPRET=1"):
        xf.compile(rnn, "triton")(torch.zeros(2, 3, 3))


def test_wide_layers_take_the_column_split_kernels():
    """A layer whose recurrent weights do not fit one program runs the split step kernels."""
    rnn = layers.RNN([layers.LSTMCell(64, backend="torch"), layers.SimpleRNNCell(128, backend="torch")])
    wide = layers.RNN([layers.LSTMCell(65, backend="torch")])  # 4 x 128 x 128 weights
    for r in (rnn, wide):
        r.build((None, None, 3))
    assert [p[2] for p in triton_host.StackRunner(rnn).plans] == [False, False]
    assert [p[2] for p in triton_host.StackRunner(wide).plans] == [True]
    assert triton_host.supports(rnn) and triton_host.supports(wide)


SPLIT = (17, 3, 4, 40, 2, True)  # two row blocks, two column blocks of 32, two K slices


@pytest.mark.parametrize("kind", KINDS)
def test_split_kernels_match_numpy_reference(device, dtype, kind, monkeypatch):
    monkeypatch.setattr(triton_host, "MAX_WEIGHT_ELEMENTS", 0)  # every layer split
    rnn, ref, x, states = problem(kind, dtype, SPLIT, seed=8)
    fast = xf.compile(rnn.to(device), "triton")
    assert all(p[2] for p in fast.loop.plans)
    want_y, want_s = ref(x, states)
    with torch.no_grad():
        y, got_s = fast(to_torch(x, device), [[to_torch(s, device) for s in layer] for layer in states])
    assert max_err(y.cpu(), want_y) <= TOL[dtype]
    for g_layer, w_layer in zip(got_s, want_s, strict=True):
        for g, w in zip(g_layer, w_layer, strict=True):
            assert max_err(g.cpu(), w) <= TOL[dtype]


@pytest.mark.parametrize("kind", KINDS)
def test_split_kernels_gradients_match_autograd(device, kind, monkeypatch):
    monkeypatch.setattr(triton_host, "MAX_WEIGHT_ELEMENTS", 0)
    rnn, _, x, states = problem(kind, "float64", SPLIT, seed=9)
    assert_gradients_match(rnn, x, states, device)


@pytest.mark.cuda
def test_auto_on_cuda_picks_torchscript_and_triton_stays_reachable():
    """Until GPU results under benchmarks/results/ prove the kernels, ``auto`` picks TorchScript
    on CUDA; ``"triton"`` is still there by name."""
    from rnn_xframework.compile import auto_method

    rnn = layers.RNN([layers.GRUCell(32, backend="torch", device="cuda")])
    rnn.build((None, None, 3))
    assert auto_method(rnn) == "torchscript"
    assert xf.compile(rnn, "triton").method == "triton"


@pytest.mark.parametrize("kind", KINDS)
def test_two_layer_stack_in_one_launch(device, dtype, kind):
    """Inference of a small two-layer stack runs both layers in one launch (kernels/triton/two_layer.py);
    the per-layer kernels give the same numbers; both match the NumPy reference. Unequal units."""
    rng = np.random.default_rng(11)
    cells = [getattr(layers, kind)(u, backend="torch", dtype=dtype) for u in (5, 9)]
    rnn = layers.RNN(cells, return_sequences=True, return_state=True)
    rnn.build((None, None, 4))
    weights = [(rng.uniform(-1, 1, w.shape) * 0.6).astype(dtype) for w in rnn.get_weights()]
    rnn.set_weights(weights)
    ref = layers.RNN([getattr(layers, kind)(u, backend="numpy", dtype=dtype) for u in (5, 9)], return_sequences=True)
    ref.return_state = True
    ref.build((None, None, 4))
    ref.set_weights(weights)
    x = rng.normal(size=(17, 4, 4)).astype(dtype)
    n_states = len(rnn.get_initial_state(1)[0])
    states = [[rng.uniform(-1, 1, (17, u)).astype(dtype) for _ in range(n_states)] for u in (5, 9)]
    want_y, want_s = ref(x, states)
    fast = xf.compile(rnn.to(device), "triton")
    assert fast.loop.two_layer
    results = []
    for two_layer in (True, False):
        fast.loop.two_layer = two_layer
        with torch.no_grad():
            results.append(fast(to_torch(x, device), [[to_torch(s, device) for s in layer] for layer in states]))
    for y, got_s in results:
        assert max_err(y.cpu(), want_y) <= TOL[dtype]
        for g_layer, w_layer in zip(got_s, want_s, strict=True):
            for g, w in zip(g_layer, w_layer, strict=True):
                assert max_err(g.cpu(), w) <= TOL[dtype]


def test_two_layer_kernel_only_where_it_fits():
    def runner(*cells):
        rnn = layers.RNN(list(cells))
        rnn.build((None, None, 3))
        return triton_host.StackRunner(rnn)

    assert runner(layers.SimpleRNNCell(64, backend="torch"), layers.SimpleRNNCell(64, backend="torch")).two_layer
    assert not runner(layers.LSTMCell(64, backend="torch"), layers.LSTMCell(64, backend="torch")).two_layer  # too big
    assert not runner(layers.LSTMCell(8, backend="torch"), layers.GRUCell(8, backend="torch")).two_layer  # mixed
    assert not runner(layers.GRUCell(8, backend="torch")).two_layer  # one layer


@pytest.mark.parametrize("path", ["persistent", "two_layer", "split"])
def test_relu_propagates_nan_forward_and_backward(device, path, monkeypatch):
    """A NaN in the input of a relu SimpleRNN stays NaN (issue 18: ``tl.maximum(a, 0)`` made it 0,
    and the outputs went on finite and wrong): the outputs and every gradient are NaN exactly
    where the uncompiled RNN's are, and equal to it elsewhere. ``path``: one layer (persistent
    kernel), two layers in inference (the two-layer kernel), a layer split across programs."""
    if path == "split":
        monkeypatch.setattr(triton_host, "MAX_WEIGHT_ELEMENTS", 8)
    n = 1 if path == "persistent" else 2
    rng = np.random.default_rng(11)
    cells = [layers.SimpleRNNCell(5, activation="relu", backend="torch", dtype="float64") for _ in range(n)]
    rnn = layers.RNN(cells, return_sequences=True, return_state=True)
    rnn.build((None, None, 3))
    rnn.set_weights([rng.uniform(-0.8, 0.8, w.shape) for w in rnn.get_weights()])
    rnn.to(device)
    fast = xf.compile(rnn, "triton")
    x = rng.normal(size=(3, 4, 3))
    x[1, 1, 0] = np.nan
    with torch.no_grad():
        (want, _), (got, _) = rnn(to_torch(x, device)), fast(to_torch(x, device))
    assert np.isnan(want.cpu().numpy()[1, 1:]).all() and np.isfinite(want.cpu().numpy()[[0, 2]]).all()
    np.testing.assert_allclose(got.cpu().numpy(), want.cpu().numpy(), rtol=0, atol=1e-12, equal_nan=True)
    if path == "two_layer":
        return  # the two-layer kernel serves inference only; training takes the per-layer kernels
    params = [p for p in rnn.parameters() if p.requires_grad]
    grads = []
    for model in (rnn, fast):
        xt = to_torch(x, device, grad=True)
        y, _ = model(xt)
        grads.append(torch.autograd.grad((y * 0.5).nansum() + y[0].sum(), [xt, *params]))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(b.cpu().numpy(), a.cpu().numpy(), rtol=0, atol=1e-12, equal_nan=True)
