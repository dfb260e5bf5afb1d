"""``xf.compile(rnn, "torchscript")``: the fast loop of :mod:`~rnn_xframework.backends.torch_fast`
in TorchScript.

The only module that touches ``torch.jit``. The scripted loop holds the stack's own
``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` modules (any mix), so it shares their
parameters: training or ``set_weights`` on either object shows in the other. Scripting takes
well under a second and works for any batch size and sequence length; it supports autograd.
A SimpleRNN stack trains through :mod:`~rnn_xframework.backends.torch_bptt`, whose two loops are
scripted here (:func:`bptt_kernels`).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch

from rnn_xframework.backends import torch_bptt, torch_fast
from rnn_xframework.backends.torch_compiled import CompiledRNN


def script(module: Any) -> Any:
    """``torch.jit.script`` without its torch 2.13 deprecation warning (we rely on it on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(module)


@functools.cache
def bptt_kernels() -> torch_bptt.Kernels:
    """The scripted forward and backward loops of :mod:`~rnn_xframework.backends.torch_bptt`,
    made on first use (scripting takes ~0.1 s)."""
    return torch_bptt.Kernels(script(torch_fast.time_major_all), script(torch_bptt.backward_steps))


def compile_rnn(rnn: Any) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch_compiled.CompiledRNN` running the scripted fast
    loop; with autograd on, a SimpleRNN stack trains through :mod:`~rnn_xframework.backends.torch_bptt`."""
    loop = script(torch_fast.fast_loop(rnn, inplace=True))
    return CompiledRNN(rnn, loop, "torchscript", train=torch_bptt.simple_stack(rnn, bptt_kernels))
