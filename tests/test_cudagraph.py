"""``xf.compile(rnn, "cudagraph")``: the capture cache (static buffers, signatures, LRU,
re-capture, copies in and out) on the CPU with ``EagerCapture`` standing in for the CUDA graph,
and the real graphs on a GPU (``cuda`` marker, run by scripts/gpu_checks.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL
from helpers import KINDS, make_cells, max_err, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers
from rnn_xframework.errors import UnsupportedConfigError

torch = pytest.importorskip("torch")

from rnn_xframework.backends.torch.compile import cudagraph  # noqa: E402 - after the skip


def built(kind, units=6, features=4, n=2, dtype="float32", device="cpu", seed=0, **kw):
    rng = np.random.default_rng(seed)
    rnn = layers.RNN(make_cells("torch", kind, n, units, dtype), return_sequences=True, return_state=True, **kw)
    rnn.build((None, None, features))
    rnn.set_weights(random_cell_weights(rng, kind, [features] + [units] * (n - 1), units, dtype))
    return rnn.to(device)


def close(got, want, dtype="float32"):
    (y, s), (wy, ws) = got, want
    assert max_err(y.detach().cpu(), wy.detach().cpu()) <= TOL[dtype]
    for a_layer, b_layer in zip(s, ws, strict=True):
        for a, b in zip(a_layer, b_layer, strict=True):
            assert max_err(a.detach().cpu(), b.detach().cpu()) <= TOL[dtype]


@pytest.mark.parametrize("kind", KINDS)
def test_capture_cache_logic(kind):
    rnn = built(kind)
    fast = cudagraph.compile_rnn(rnn, cudagraph.EagerCapture)
    loop = fast.loop
    loop.max_captures = 2
    x = torch.randn(3, 5, 4)
    with torch.no_grad():
        close(fast(x), rnn(x))
        x.mul_(-0.5).add_(0.25)  # the caller changes its tensor in place: the next call must see it
        first = fast(x)
        close(first, rnn(x))
        first[0].fill_(7.0)  # the caller owns its outputs: the next call is not affected
        close(fast(x), rnn(x))
        assert loop.n_captured == 1
        for batch, steps in ((2, 5), (3, 2)):  # new shapes capture again; the LRU keeps two
            xb = torch.randn(batch, steps, 4)
            close(fast(xb), rnn(xb))
        assert loop.n_captured == 3 and len(loop.captures) == 2
        close(fast(x), rnn(x))  # evicted above: captured again
        assert loop.n_captured == 4
        new = [w * 0.5 for w in rnn.get_weights()]
        rnn.set_weights(new)  # in place: the replay sees the new weights, no new capture
        close(fast(x), rnn(x))
        assert loop.n_captured == 4
        states = [[torch.randn(3, 6) for _ in layer] for layer in rnn.get_initial_state(3)]
        close(fast(x, states), rnn(x, states))


def test_training_calls_run_uncaptured_with_gradients():
    rnn = built("SimpleRNNCell", dtype="float64")
    fast = cudagraph.compile_rnn(rnn, cudagraph.EagerCapture)
    params = [p for p in rnn.parameters() if p.requires_grad]
    grads = []
    for model in (rnn, fast):
        x = torch.randn(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
        y, _ = model(x)
        grads.append(torch.autograd.grad(y.square().sum(), [x, *params]))
    assert fast.loop.n_captured == 0
    for a, b in zip(*grads, strict=True):
        assert max_err(a, b) <= 1e-12


def test_cpu_tensors_are_refused():
    fast = xf.compile(built("GRUCell"), "cudagraph")
    with torch.no_grad(), pytest.raises(UnsupportedConfigError, match="CUDA tensors"):
        fast(torch.zeros(2, 3, 4))


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_graph_replay_matches_uncompiled(kind, dtype):
    """Issue 9's W1 sizes (batch 4, 80 steps, 100 features, 64 units, 2 layers), where capturing
    the scripted loop failed; the caller's input changes between calls."""
    rnn = built(kind, units=64, features=100, dtype=dtype, device="cuda")
    fast = xf.compile(rnn, "cudagraph")
    x = torch.randn(4, 80, 100, device="cuda", dtype=getattr(torch, dtype))
    with torch.no_grad():
        for _ in range(2):
            close(fast(x), rnn(x), dtype)
            x.normal_()
    assert fast.loop.n_captured == 1
