"""``xf.compile(rnn, "cudagraph")``: inference of a torch RNN stack replayed from CUDA graphs.

On a GPU a small RNN's time is the launch of its many small per-step kernels, not their
arithmetic. Here the fast loop of :mod:`~rnn_xframework.backends.torch.compile.script_loops` (eager, not
scripted: TorchScript's profiling executor re-optimizes the loop during its first calls, which
is what made issue 9's capture of the scripted loop fail at W1) is captured once per input
signature ``(batch, steps, features, dtype, device, parameter storage)`` into a
``torch.cuda.CUDAGraph`` with static input and state buffers, after warm-up calls on a side
stream. A call copies the caller's tensors into the static buffers, replays the graph, and
returns copies of the static outputs, so a caller who changes or reuses its input tensor
between calls gets the right results, and outputs never change under the caller's feet.

Captures live in a bounded LRU (:data:`MAX_CAPTURES` per compiled object); a new shape captures
again and the least recently used capture is dropped. Parameters updated in place (optimizer
steps, ``set_weights``) are seen by the next replay; parameters replaced by new tensors change
the signature and capture again.

Calls with autograd on (training), and calls with ``mask=``, run the TorchScript path uncaptured
(:mod:`~rnn_xframework.backends.torch.compile.torchscript`, same results; the masked loop:
:mod:`~rnn_xframework.backends.torch.compile.masked_loops`). Tensors must be on
CUDA, with autograd on or off; on the CPU every call raises
:class:`~rnn_xframework.errors.UnsupportedConfigError` (the capture logic is tested on the CPU
with :class:`EagerCapture` standing in for the graph).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rnn_xframework.backends.torch.compile import script_loops, torchscript
from rnn_xframework.backends.torch.compile.compiled_module import CompiledRNN
from rnn_xframework.errors import UnsupportedConfigError

MAX_CAPTURES = 8
"""Captured signatures kept per compiled object (each holds its static buffers and the graph's
memory pool)."""
WARMUP_CALLS = 3
"""Uncaptured calls on a side stream before a capture (what ``torch.cuda.graphs`` documents)."""

Loop = Callable[[Tensor, list[list[Tensor]]], tuple[Tensor, list[list[Tensor]]]]


class CudaCapture:
    """Records ``loop`` on the static buffers into a ``torch.cuda.CUDAGraph``; ``replay()`` reruns it."""

    def __init__(self, loop: Loop, x: Tensor, states: list[list[Tensor]]) -> None:
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                loop(x, states)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = loop(x, states)

    def replay(self) -> tuple[Tensor, list[list[Tensor]]]:
        self.graph.replay()
        return self.outputs


class EagerCapture:
    """The same contract on any device without a graph: ``replay()`` reruns ``loop`` on the
    static buffers. For testing the capture logic where there is no GPU (nothing else uses it)."""

    def __init__(self, loop: Loop, x: Tensor, states: list[list[Tensor]]) -> None:
        self.loop, self.x, self.states = loop, x, states

    def replay(self) -> tuple[Tensor, list[list[Tensor]]]:
        self.outputs = self.loop(self.x, self.states)
        return self.outputs


class GraphLoop:
    """``(x, states) -> (y, states)``: replays one capture per signature (see the module doc).

    Attributes:
        captures: signature -> ``(static x, static states, capture)``, least recently used first.
        capture_class: :class:`CudaCapture`, or :class:`EagerCapture` in CPU tests.
        max_captures: the LRU's bound.
    """

    def __init__(self, rnn: Any, capture_class: type = CudaCapture, max_captures: int = MAX_CAPTURES) -> None:
        self.rnn = rnn
        self.loop = script_loops.fast_loop(rnn, inplace=True)  # eager; shares the cells' parameters
        self.capture_class = capture_class
        self.max_captures = max_captures
        self.captures: OrderedDict[tuple[Any, ...], tuple[Tensor, list[list[Tensor]], Any]] = OrderedDict()
        self.n_captured = 0

    def _signature(self, x: Tensor) -> tuple[Any, ...]:
        params = tuple(p.data_ptr() for p in self.rnn.parameters())
        return (tuple(x.shape), x.dtype, x.device, params)

    def __call__(self, x: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[list[Tensor]]]:
        if self.capture_class is CudaCapture:
            require_cuda(x)
        key = self._signature(x)
        entry = self.captures.get(key)
        with torch.no_grad():
            if entry is None:
                static_x = x.detach().clone()
                static_states = [[s.detach().clone() for s in layer] for layer in states]
                entry = (static_x, static_states, self.capture_class(self.loop, static_x, static_states))
                self.n_captured += 1
                self.captures[key] = entry
                while len(self.captures) > self.max_captures:
                    self.captures.popitem(last=False)
            else:  # a capture records work without running it: every call replays
                self.captures.move_to_end(key)
                static_x, static_states, _ = entry
                static_x.copy_(x)
                for layer, given in zip(static_states, states, strict=True):
                    for s, g in zip(layer, given, strict=True):
                        s.copy_(g)
            y, ends = entry[2].replay()
            return y.clone(), [[s.clone() for s in layer] for layer in ends]


def require_cuda(x: Tensor) -> None:
    """:class:`UnsupportedConfigError` unless ``x`` is on CUDA: the method is for CUDA, with
    autograd on or off alike (issue 18: it refused inference on the CPU but ran training calls)."""
    if x.device.type != "cuda":
        raise UnsupportedConfigError(
            f"compile 'cudagraph': CUDA graphs need CUDA tensors, got a tensor on {x.device} (with autograd "
            f"{'on' if torch.is_grad_enabled() else 'off'}); move the RNN and inputs to 'cuda', or use "
            "xf.compile(rnn, 'torchscript') on the CPU"
        )


def _on_cuda_only(loop: Callable[..., Any]) -> Any:
    def run(x: Tensor, states: list[list[Tensor]], *mask: Tensor) -> tuple[Tensor, list[list[Tensor]]]:
        require_cuda(x)
        return loop(x, states, *mask)

    return run


def compile_rnn(rnn: Any, capture_class: type = CudaCapture) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch.compile.compiled_module.CompiledRNN` replaying :class:`GraphLoop`
    without autograd and running the TorchScript path with it; CUDA tensors only, either way
    (with :class:`EagerCapture`, the CPU tests' stand-in, CPU tensors run)."""
    scripted = torchscript.compile_rnn(rnn)
    train = scripted.train_loop if scripted.train_loop is not None else scripted.loop
    masked = scripted.masked_loop
    if capture_class is CudaCapture:
        train, masked = _on_cuda_only(train), _on_cuda_only(masked)
    return CompiledRNN(rnn, GraphLoop(rnn, capture_class), "cudagraph", train=train, masked=masked)
