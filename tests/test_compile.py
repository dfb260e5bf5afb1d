"""``xf.compile(rnn, "torchscript")``: same call, same outputs, shared parameters, no warning."""

import warnings

import numpy as np
import pytest
from conftest import TOL
from helpers import make_rnn, max_err, random_states, random_weights

import rnn_xframework as xf

torch = pytest.importorskip("torch")


def built(rng, dtype, **kw):
    rnn = make_rnn("torch", 2, 8, dtype, **kw)
    rnn.build((None, None, 5))
    rnn.set_weights(random_weights(rng, [5, 8], 8, dtype))
    return rnn


@pytest.mark.parametrize("order", ["timestep", "layer"])
@pytest.mark.parametrize(
    "flags", [(False, False, False), (True, True, False), (True, False, True), (False, True, True)]
)
def test_compiled_matches_uncompiled(rng, dtype, order, flags):
    seq, state, back = flags
    rnn = built(rng, dtype, return_sequences=seq, return_state=state, go_backwards=back, order=order)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the TorchScript deprecation warning must not reach users
        fast = xf.compile(rnn, "torchscript")
        x = torch.from_numpy(rng.normal(size=(3, 7, 5)).astype(dtype))
        init = [[torch.from_numpy(s[0])] for s in random_states(rng, 2, 3, 8, dtype)]
        got, want = fast(x, init), rnn(x, init)
    if state:
        assert max_err(got[0].detach(), want[0].detach()) <= TOL[dtype]
        assert [len(s) for s in got[1]] == [1, 1]
        for g, w in zip(got[1], want[1], strict=True):
            assert max_err(g[0].detach(), w[0].detach()) <= TOL[dtype]
    else:
        assert max_err(got.detach(), want.detach()) <= TOL[dtype]


def test_compiled_shares_parameters_and_trains(rng):
    rnn = built(rng, "float64", return_sequences=True)
    fast = xf.compile(rnn)
    assert {id(p) for p in fast.parameters()} == {id(p) for p in rnn.parameters()}
    fast(torch.ones(2, 3, 5, dtype=torch.float64)).sum().backward()
    assert rnn.cells[0].cell.weight_ih.grad is not None
    rnn.set_weights([np.zeros_like(w) for w in rnn.get_weights()])
    assert not fast(torch.ones(2, 3, 5, dtype=torch.float64)).detach().numpy().any()


def test_compiled_checks_inputs_like_the_source(rng):
    fast = xf.compile(built(rng, "float32"))
    with pytest.raises(xf.InputShapeError):
        fast(torch.ones(2, 3, 6))
    with pytest.raises(xf.DTypeMismatchError):
        fast(torch.ones(2, 3, 5, dtype=torch.float64))


def test_compile_errors(rng):
    with pytest.raises(ValueError, match="unknown compile method 'tvm'"):
        xf.compile(built(rng, "float32"), "tvm")
    with pytest.raises(TypeError, match="takes a torch RNN"):
        xf.compile(make_rnn("numpy", 1, 3, "float32"), "torchscript")
    # An unbuilt RNN is no error: it compiles on its first call (tests/test_pickle.py).
    assert not xf.compile(make_rnn("torch", 1, 3, "float32"), "torchscript").built
