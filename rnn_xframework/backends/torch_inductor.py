"""``xf.compile(rnn, "inductor")``: the fast loop of :mod:`~rnn_xframework.backends.torch_fast`
through ``torch.compile`` (TorchDynamo + Inductor).

The only module that touches ``torch.compile``. The loop is traced with ``fullgraph=True``
(a graph break raises instead of silently running slower) and ``dynamic=False``: each new
input shape (batch, time) compiles once, which takes seconds to tens of seconds on a small CPU
because the time loop is unrolled. Autograd works (AOTAutograd compiles the backward on the
first backward call). The result shares the source's parameters.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import torch

from rnn_xframework.backends import torch_fast
from rnn_xframework.backends.torch_compiled import CompiledRNN


def _import_quietly() -> None:
    """Inductor imports ``torch.utils.mkldnn`` on its first compile, whose class bodies use the
    deprecated ``torch.jit.script_method`` (torch 2.13): import it here without that warning, so
    it does not reach users of this call. Nothing else is filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script_method.*deprecated", category=DeprecationWarning
        )
        importlib.import_module("torch.fx.experimental.optimization")


def compile_rnn(rnn: Any) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch_compiled.CompiledRNN` running the compiled fast loop."""
    _import_quietly()
    loop = torch.compile(torch_fast.fast_loop(rnn, inplace=False), fullgraph=True, dynamic=False)
    return CompiledRNN(rnn, loop, "inductor")
