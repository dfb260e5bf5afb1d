"""PyTorch peers: ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``num_layers=2``; cuDNN on CUDA), the
same CUDA-graphed, and a raw ``nn.RNNCell`` loop. For a bidirectional workload the module has
``bidirectional=True``; for a masked one ``nn.RNN`` runs on a ``PackedSequence`` of the workload's
lengths (:func:`packed_forward`).

Forward calls run under ``torch.no_grad()``. With ``grad=True`` a call is
forward + ``torch.autograd.grad(sum(outputs), [x, *weights])``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rnn_xframework.bench.framework_setup import check_device, sync_fn
from rnn_xframework.bench.methods import Runner
from rnn_xframework.bench.timing import time_first_call
from rnn_xframework.bench.workloads import Workload

if TYPE_CHECKING:
    import torch


def _input(w: Workload, grad: bool, device: str) -> torch.Tensor:
    import torch

    check_device("torch", device)
    torch.manual_seed(0)
    x = torch.randn(w.batch, w.steps, w.features, device=device)
    return x.requires_grad_(grad)


def _finish(
    forward: Callable[[], torch.Tensor],
    x: torch.Tensor,
    params: list[torch.Tensor],
    grad: bool,
    device: str,
) -> tuple[Runner, float]:
    """Wrap ``forward`` (returns the output sequence) for fwd or fwd+bwd; time call 1."""
    import torch

    if grad:
        inputs = [x, *params]

        def run() -> object:
            out = forward()
            return torch.autograd.grad(out.sum(), inputs)
    else:

        def run() -> object:
            with torch.no_grad():
                return forward()

    return run, time_first_call(run, sync_fn("torch", device))


NN_MODULES = {"SimpleRNNCell": "RNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}


def _nn_module(w: Workload, device: str) -> torch.nn.Module:
    import torch

    module = getattr(torch.nn, NN_MODULES[w.cell])
    return module(w.features, w.units, num_layers=2, batch_first=True, bidirectional=w.bidirectional).to(device)


def mask(w: Workload, device: str) -> torch.Tensor:
    """The ``[batch, steps]`` boolean mask of ``w.lengths()`` (true for real steps, right-padded)."""
    import torch

    lengths = torch.tensor(w.lengths())
    return (torch.arange(w.steps)[None, :] < lengths[:, None]).to(device)


def packed_forward(module: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``module`` (batch-first) over the real steps only, as a PyTorch user writes it:
    ``pack_padded_sequence(x, lengths, enforce_sorted=False)``, the module, then
    ``pad_packed_sequence`` back to ``x``'s steps (zeros in the padding)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(module(packed)[0], batch_first=True, total_length=x.shape[1])[0]


def setup_nn_rnn(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """``torch.nn.RNN`` (``LSTM``, ``GRU`` for those workloads) ``(features, units,
    num_layers=2, batch_first=True, bidirectional=w.bidirectional)``: cuDNN on CUDA. Masked: on a
    ``PackedSequence`` (packing and unpacking are in the timed call)."""
    import torch

    x = _input(w, grad, device)
    rnn = _nn_module(w, device)
    lengths = torch.tensor(w.lengths())  # on the CPU, as pack_padded_sequence wants them

    def forward() -> torch.Tensor:
        return rnn(x)[0]

    def forward_packed() -> torch.Tensor:
        return packed_forward(rnn, x, lengths)

    return _finish(forward_packed if w.masked else forward, x, list(rnn.parameters()), grad, device)


def setup_nn_rnn_graphed(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The same module replayed from CUDA graphs: forward captured with ``torch.cuda.graph``
    (static input, a call is one replay), forward+backward through
    ``torch.cuda.make_graphed_callables``."""
    import torch

    if device != "cuda":
        raise ValueError("CUDA graphs need --device cuda")
    x = _input(w, grad, device)
    rnn = _nn_module(w, device)
    params = list(rnn.parameters())
    if grad:
        graphed = torch.cuda.make_graphed_callables(rnn, (x,))

        def run() -> object:
            out = graphed(x)[0]
            return torch.autograd.grad(out.sum(), [x, *params])

        return run, time_first_call(run, sync_fn("torch", device))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            rnn(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = rnn(x)[0]

    def replay() -> object:
        graph.replay()
        return static_out

    return replay, time_first_call(replay, sync_fn("torch", device))


def setup_cell_loop(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """Python loop over time; each step goes through both ``nn.RNNCell`` layers."""
    import torch

    x = _input(w, grad, device)
    cell0 = torch.nn.RNNCell(w.features, w.units).to(device)
    cell1 = torch.nn.RNNCell(w.units, w.units).to(device)

    def forward() -> torch.Tensor:
        h0 = x.new_zeros(w.batch, w.units)
        h1 = x.new_zeros(w.batch, w.units)
        outs = []
        for xt in x.unbind(1):
            h0 = cell0(xt, h0)
            h1 = cell1(h0, h1)
            outs.append(h1)
        return torch.stack(outs, 1)

    params = [*cell0.parameters(), *cell1.parameters()]
    return _finish(forward, x, params, grad, device)


def setup_gemm_mm(n: int, device: str) -> tuple[Runner, float]:
    """``torch.mm`` on fp32 ``n x n`` (MKL on CPU by default)."""
    import torch

    check_device("torch", device)
    torch.manual_seed(0)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)

    def run() -> object:
        return torch.mm(a, b, out=c)

    return run, time_first_call(run, sync_fn("torch", device))


def setup_gemm_mkldnn(n: int, device: str) -> tuple[Runner, float]:
    """oneDNN matmul: ``torch.utils.mkldnn.to_mkldnn(nn.Linear)`` on an MKLDNN tensor."""
    import torch
    import torch.utils.mkldnn

    check_device("torch", device)
    if device != "cpu":
        raise ValueError("oneDNN (mkldnn) GEMM is a CPU-only path")
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("torch was built without oneDNN (mkldnn)")
    torch.manual_seed(0)
    linear = torch.nn.Linear(n, n, bias=False).eval()
    with torch.no_grad():
        linear = torch.utils.mkldnn.to_mkldnn(linear)
    a = torch.randn(n, n).to_mkldnn()

    def run() -> object:
        with torch.no_grad():
            return linear(a)

    return run, time_first_call(run)
