"""``xf.compile(rnn, "torchscript")``: the fast loop of :mod:`~rnn_xframework.backends.torch_fast`
in TorchScript.

The only module that touches ``torch.jit``. The scripted loop holds the stack's own
``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` modules (any mix), so it shares their
parameters: training or ``set_weights`` on either object shows in the other. Scripting takes
well under a second and works for any batch size and sequence length; it supports autograd.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from rnn_xframework.backends import torch_bptt, torch_fast


def script(module: torch.nn.Module) -> Any:
    """``torch.jit.script`` without its torch 2.13 deprecation warning (we rely on it on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(module)


def compile_rnn(rnn: Any) -> torch_fast.CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch_fast.CompiledRNN` running the scripted fast loop;
    with autograd on, a SimpleRNN stack trains through :mod:`~rnn_xframework.backends.torch_bptt`."""
    loop = script(torch_fast.fast_loop(rnn, inplace=True))
    return torch_fast.CompiledRNN(rnn, loop, "torchscript", train=torch_bptt.simple_stack(rnn))
