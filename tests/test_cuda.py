"""CUDA: the torch backend on a GPU against the NumPy reference (TF32 off, see conftest)."""

import numpy as np
import pytest
from conftest import TOL
from helpers import make_rnn, max_err, random_states, random_weights

import rnn_xframework as xf

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")


def tutorial_problem(seed, dtype):
    """The tutorial's sizes on the NumPy reference: ``(x, weights, states, ref, want)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 80, 100)).astype(dtype)
    weights = random_weights(rng, [100, 64], 64, dtype)
    states = random_states(rng, 2, 4, 64, dtype)
    ref = make_rnn("numpy", 2, 64, dtype, return_sequences=True)
    ref.build((None, None, 100))
    ref.set_weights(weights)
    return x, weights, states, ref, ref(x, states)


@pytest.mark.parametrize("order", ["timestep", "layer", "torchscript"])
def test_cuda_matches_reference(dtype, order):
    x, weights, states, ref, want = tutorial_problem(7, dtype)
    rnn = xf.convert(ref, "torch", device="cuda")
    rnn.order = "layer" if order == "layer" else "timestep"
    model = xf.compile(rnn, "torchscript") if order == "torchscript" else rnn
    got = model(torch.from_numpy(x).cuda(), [[torch.from_numpy(s[0]).cuda()] for s in states])
    assert got.device.type == "cuda"
    assert max_err(got.detach().cpu(), want) <= TOL[dtype]
    back = xf.convert(rnn, "numpy")
    for a, b in zip(back.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["wavefront", "time_major"])
def test_cuda_inference_paths_match_reference(dtype, path):
    """The compiled torch stack without autograd, each inference path forced on, on the GPU."""
    x, _, states, ref, want = tutorial_problem(11, dtype)
    fast = xf.compile(xf.convert(ref, "torch", device="cuda"), "torchscript")
    fast.loop.wavefront_max_units = 10**9 if path == "wavefront" else 0
    fast.loop.chunk_rows = 4 * 16  # time_major: 16-step chunks
    with torch.no_grad():
        got = fast(torch.from_numpy(x).cuda(), [[torch.from_numpy(s[0]).cuda()] for s in states])
    assert got.device.type == "cuda"
    assert max_err(got.cpu(), want) <= TOL[dtype]


def test_cuda_training_path_gradients_match_cpu():
    """The hand-written backward (backends/torch/compile/bptt.py) on the GPU against autograd through the uncompiled
    cells on the CPU, float64."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(4, 30, 20))
    weights = random_weights(rng, [20, 16], 16, "float64")
    cpu = make_rnn("torch", 2, 16, "float64", return_sequences=True)
    cpu.build((None, None, 20))
    cpu.set_weights(weights)
    gpu = xf.convert(cpu, "torch", device="cuda")
    fast = xf.compile(gpu, "torchscript")
    grads = []
    for model, rnn, device in ((cpu, cpu, "cpu"), (fast, gpu, "cuda")):
        xt = torch.tensor(x, device=device, requires_grad=True)
        params = [p for p in rnn.parameters() if p.requires_grad]
        y = model(xt)
        grads.append([g.cpu() for g in torch.autograd.grad((y * y.detach().cos()).sum(), [xt, *params])])
    for a, b in zip(*grads, strict=True):
        assert max_err(a, b) <= 1e-10
