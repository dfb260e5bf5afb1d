"""``xf.compile(rnn, "inductor")``: the fast loop of :mod:`~rnn_xframework.backends.torch.compile.script_loops`
through ``torch.compile`` (TorchDynamo + Inductor).

The only module that touches ``torch.compile``. The loop is traced with ``fullgraph=True``
(a graph break raises instead of silently running slower) and ``dynamic=False``: each new
input shape (batch, time) compiles once, which takes seconds to tens of seconds on a small CPU
because the time loop is unrolled. Autograd works (AOTAutograd compiles the backward on the
first backward call). The result shares the source's parameters.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import warnings
from collections import OrderedDict
from typing import Any

import torch

from rnn_xframework.backends.torch.compile import masked_loops, script_loops
from rnn_xframework.backends.torch.compile.compiled_module import CompiledRNN, OnFirstCall


def _import_quietly() -> None:
    """Inductor imports ``torch.utils.mkldnn`` on its first compile, whose class bodies use the
    deprecated ``torch.jit.script_method`` (torch 2.13): import it here without that warning, so
    it does not reach users of this call. Nothing else is filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script_method.*deprecated", category=DeprecationWarning
        )
        importlib.import_module("torch.fx.experimental.optimization")


BACKEND = "inductor"
"""The ``torch.compile`` backend (tests of the recompile bookkeeping use ``"eager"``: same guards)."""

CACHE_SIZE = 32
"""Call signatures compiled per region of a compiled object (settable as ``fast.loop.cache_size``)."""


class CompiledLoop:
    """``loop(x, states)`` through ``torch.compile``, one compile per call signature, for any number
    of signatures.

    TorchDynamo keeps at most ``recompile_limit`` (8 by default) compiled variants per code
    object, shared by every compiled object in the process; past it ``fullgraph=True`` raises
    ``FailOnRecompileLimitHit``. Here each region is a ``torch.compile`` with its own isolated
    cache (``isolate_recompiles=True``) and room for :attr:`cache_size` signatures (shape, dtype,
    device, grad mode); when it is full, the next new signature starts a fresh region. Dynamo's
    own process-wide cap, ``accumulated_recompile_limit`` (256 compiles), still applies.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.cache_size = CACHE_SIZE
        self.regions = 0
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._compiled: Any = None
        self._lock = threading.Lock()

    def _region(self) -> Any:
        self.regions += 1
        regions = {}
        if "isolate_recompiles" in inspect.signature(torch.compile).parameters:  # torch >= 2.13
            regions = {"recompile_limit": 2 * self.cache_size, "isolate_recompiles": True}  # 2x: unkeyed guards
        return torch.compile(self.module, backend=BACKEND, fullgraph=True, dynamic=False, **regions)

    def __call__(self, x: torch.Tensor, states: list[list[torch.Tensor]], *extra: Any) -> Any:
        """``module(x, states, *extra)``; ``extra`` (a mask, dropout masks: tensors or lists of
        lists of them) is part of the call signature too."""
        more = [t for e in extra for t in ([e] if isinstance(e, torch.Tensor) else [m for layer in e for m in layer])]
        flat = [x, *(s for layer in states for s in layer), *more]
        shapes = tuple(tuple(len(layer) for layer in e) for e in extra if not isinstance(e, torch.Tensor))
        key = (torch.is_grad_enabled(), shapes, *((tuple(t.shape), t.dtype, t.device, t.requires_grad) for t in flat))
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
            else:
                if self._compiled is None or len(self._seen) >= self.cache_size:
                    self._compiled = self._region()
                    self._seen.clear()
                self._seen[key] = None
            compiled = self._compiled
        return compiled(x, states, *extra)


def compile_rnn(rnn: Any) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch.compile.compiled_module.CompiledRNN` running the compiled fast loop."""
    _import_quietly()
    loop = CompiledLoop(script_loops.fast_loop(rnn, inplace=False))
    return CompiledRNN(
        rnn, loop, "inductor", masked=OnFirstCall(lambda: CompiledLoop(masked_loops.masked_loop(rnn, trim=False)))
    )
