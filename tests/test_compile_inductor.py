"""``xf.compile(rnn, "inductor")`` (``torch.compile``): few, small tests, since each shape
compiles for seconds on a small CPU. One mixed stack covers the three cell types."""

from __future__ import annotations

import pytest
from conftest import TOL
from helpers import max_err

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")

KINDS = ("SimpleRNNCell", "LSTMCell", "GRUCell")


def mixed_stack(dtype, **kw):
    cells = [getattr(layers, kind)(5, backend="torch", dtype=dtype) for kind in KINDS]
    rnn = layers.RNN(cells, return_sequences=True, return_state=True, **kw)
    rnn.build((None, None, 3))
    return rnn


def states_like(rnn, batch, dtype):
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(batch, 5, generator=g, dtype=dtype) for _ in c.state_sizes] for c in rnn.cells]


@pytest.mark.slow  # about 15 s each on 2 cores; kept in the default run
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inductor_matches_and_trains(dtype):
    rnn = mixed_stack(dtype, order="timestep" if dtype == "float32" else "layer")
    fast = xf.compile(rnn, "inductor")
    tdtype = getattr(torch, dtype)
    x = torch.randn(2, 4, 3, dtype=tdtype, generator=torch.Generator().manual_seed(0))
    init = states_like(rnn, 2, tdtype)
    (y, states), (y_ref, states_ref) = fast(x, init), rnn(x, init)
    assert max_err(y.detach(), y_ref.detach()) <= TOL[dtype]
    for layer, layer_ref in zip(states, states_ref, strict=True):
        for s, s_ref in zip(layer, layer_ref, strict=True):
            assert max_err(s.detach(), s_ref.detach()) <= TOL[dtype]
    params = [p for p in rnn.parameters() if p.requires_grad]
    grads = torch.autograd.grad(y.sum() + states[-1][0].sum(), params)
    grads_ref = torch.autograd.grad(y_ref.sum() + states_ref[-1][0].sum(), params)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert max_err(g, g_ref) <= TOL[dtype]


@pytest.mark.slow
def test_no_torchscript_deprecation_warning_reaches_users():
    """torch 2.13's inductor imports a module built with the deprecated torch.jit.script_method;
    in a fresh process with every warning an error, compiling and calling must still work."""
    import subprocess
    import sys

    code = (
        "import torch, rnn_xframework as xf\n"
        "from rnn_xframework import layers\n"
        "rnn = layers.RNN([layers.SimpleRNNCell(4, backend='torch')])\n"
        "rnn.build((None, None, 3))\n"
        "for method in ('torchscript', 'inductor'):\n"
        "    xf.compile(rnn, method)(torch.ones(2, 5, 3)).sum().backward()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True, timeout=600
    )
    assert out.stdout.strip() == "ok", out.stderr[-3000:]
