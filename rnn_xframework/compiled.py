"""What every compiled RNN shares, framework-free: the source it wraps, the checks of a call,
and the attributes it answers like its source.

``xf.compile`` returns an object of a backend's subclass of :class:`CompiledRNN` (torch's is a
``torch.nn.Module``; TensorFlow's a plain object around ``tf.function`` graphs). Parameters live
in ``source`` only, so training or ``set_weights`` on either object shows in the other.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from rnn_xframework import protocol
from rnn_xframework.errors import InputShapeError, UnsupportedConfigError

FORWARDED = ("order", "return_sequences", "return_state", "go_backwards", "cells", "cell", "units")


def check_built(rnn: Any) -> None:
    """Raise unless every cell of ``rnn`` has weights (compiling needs their sizes)."""
    if any(c.input_dim is None for c in rnn.cells):
        raise UnsupportedConfigError(
            "compile: the RNN is not built yet; call rnn.build((None, None, features)) or call it once first"
        )


def check_compiled_call(
    rnn: Any, method: str, inputs: Any, initial_state: Any, training: bool | None, mask: Any
) -> list[list[Any]] | None:
    """The uncompiled ``rnn``'s checks, for an object compiled from it: refuses what the compiled
    loop does not have (``mask``, dropout in training) rather than silently running another path,
    and returns the checked initial states (one list per layer), or ``None`` when none are given."""
    if mask is not None:
        raise UnsupportedConfigError(f"compile: the {method} loop takes no mask; call the uncompiled RNN")
    if training and any(c.dropout > 0 or c.recurrent_dropout > 0 for c in rnn.cells):
        raise UnsupportedConfigError(
            f"compile: the {method} loop has no dropout; train with the uncompiled RNN (same weights)"
        )
    ops, stack = rnn._ops, rnn.cell
    protocol.check_tensor(ops, inputs, "RNN inputs", (None, None, stack.input_dim), stack.dtype_name)
    time_axis, batch_axis = (0, 1) if rnn.time_major else (1, 0)
    if ops.shape(inputs)[time_axis] == 0:
        raise InputShapeError("RNN inputs: expected at least one time step, got a sequence of length 0")
    if initial_state is None:
        return None
    batch = ops.shape(inputs)[batch_axis]
    layers = protocol.as_rnn_states(stack, ops, initial_state)
    return [protocol.check_states(cell, ops, state, batch) for cell, state in zip(stack.cells, layers, strict=True)]


class CompiledRNN:
    """Base of every backend's compiled RNN: ``source`` (the ``RNN`` compiled) and ``method``.

    Reads ``order``, ``cells``, ``return_state``, ... from the source; ``get_weights`` /
    ``set_weights`` / ``get_initial_state`` are the source's. Subclasses call
    :meth:`_init_compiled` and :meth:`check_call`.
    """

    backend: ClassVar[str]
    source: Any
    method: str

    def _init_compiled(self, rnn: Any, method: str) -> None:
        check_built(rnn)
        self.source = rnn
        self.method = method

    def __getattr__(self, name: str) -> Any:
        if name in FORWARDED:
            return getattr(self.source, name)
        parent = getattr(super(), "__getattr__", None)  # torch.nn.Module's finds submodules
        if parent is not None:
            return parent(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_initial_state(self, batch_size: Any) -> list[list[Any]]:
        return self.source.get_initial_state(batch_size)

    def get_weights(self) -> list[np.ndarray]:
        return self.source.get_weights()

    def set_weights(self, weights: Any) -> None:
        self.source.set_weights(weights)

    def check_call(self, inputs: Any, initial_state: Any, training: bool | None, mask: Any) -> list[list[Any]] | None:
        return check_compiled_call(self.source, self.method, inputs, initial_state, training, mask)
