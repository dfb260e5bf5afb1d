"""CUDA: the torch backend on a GPU against the NumPy reference (TF32 off, see conftest)."""

import numpy as np
import pytest
from conftest import TOL
from helpers import make_rnn, max_err, random_states, random_weights

import rnn_xframework as xf

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("order", ["timestep", "layer", "torchscript"])
def test_cuda_matches_reference(dtype, order):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 80, 100)).astype(dtype)
    weights = random_weights(rng, [100, 64], 64, dtype)
    states = random_states(rng, 2, 4, 64, dtype)
    ref = make_rnn("numpy", 2, 64, dtype, return_sequences=True)
    ref.build((None, None, 100))
    ref.set_weights(weights)
    want = ref(x, states)
    rnn = xf.convert(ref, "torch", device="cuda")
    rnn.order = "layer" if order == "layer" else "timestep"
    model = xf.compile(rnn, "torchscript") if order == "torchscript" else rnn
    got = model(torch.from_numpy(x).cuda(), [[torch.from_numpy(s[0]).cuda()] for s in states])
    assert got.device.type == "cuda"
    assert max_err(got.detach().cpu(), want) <= TOL[dtype]
    back = xf.convert(rnn, "numpy")
    for a, b in zip(back.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
