"""The ``Cell`` protocol and the one state convention every backend follows.

A cell maps one time step: ``output, new_states = cell(inputs, states, training=None)`` with
``inputs`` of shape ``[batch, input_dim]`` and ``states`` a **list** of ``[batch, units]``
tensors (``[h]`` for ``SimpleRNNCell``). ``new_states`` is always a list, on every backend. A bare
tensor is accepted as the state of a single-state cell only. A stack's state is a list of
per-layer lists and is never unwrapped, even for one layer.

The checks here run before any framework op, so a bad call raises a typed error naming what was
expected and what was given, and changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rnn_xframework import registry
from rnn_xframework.errors import (
    DTypeMismatchError,
    FrameworkMismatchError,
    InputShapeError,
    StateStructureError,
    UnsupportedConfigError,
)

DTYPES = ("float32", "float64")

BUILD_LOCK = threading.RLock()
"""Held while a cell creates its weights: a lazy build runs once, even when several threads make
the first call at the same time (each backend's ``build`` checks again under it)."""


def check_units(units: Any) -> int:
    """``units`` as an ``int``: a positive ``int`` or NumPy integer (as Keras accepts), never a
    ``bool``, float or string. The one check every backend's constructor runs."""
    if isinstance(units, (bool, np.bool_)) or not isinstance(units, (int, np.integer)) or units <= 0:
        raise UnsupportedConfigError(
            f"units must be a positive integer (int or NumPy integer), got {units!r} ({type(units).__name__}); "
            "pass e.g. units=64"
        )
    return int(units)


@runtime_checkable
class Cell(Protocol):
    """One recurrent step, the duck type Keras documents for ``keras.layers.RNN`` cells.

    Attributes:
        backend: the registered backend it runs on (``"torch"``, ``"tensorflow"``, ``"numpy"``, ...).
        units: size of the output.
        state_size: Keras's value: an int for single-state cells, a list otherwise.

    Every cell of every backend satisfies it (``isinstance`` checks the methods' presence):

    >>> import numpy as np
    >>> import rnn_xframework as xf
    >>> cell = xf.layers.LSTMCell(4, backend="numpy")
    >>> isinstance(cell, xf.Cell)
    True
    >>> states = cell.get_initial_state(batch_size=2)  # always a list: [h, c] for an LSTM
    >>> out, states = cell(np.ones((2, 3), "float32"), states)
    >>> out.shape, [s.shape for s in states]
    ((2, 4), [(2, 4), (2, 4)])
    """

    backend: str
    units: int

    @property
    def state_size(self) -> Any: ...

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[Any, list[Any]]: ...

    def build(self, input_shape: Sequence[int | None]) -> None: ...

    def get_initial_state(self, batch_size: int) -> list[Any]: ...

    def get_weights(self) -> list[np.ndarray]: ...

    def set_weights(self, weights: Sequence[np.ndarray]) -> None: ...


class TensorOps(Protocol):
    """What the checks here need from a backend (every :class:`~rnn_xframework.backends.Backend`)."""

    name: str

    def is_native(self, x: Any) -> bool: ...

    def shape(self, x: Any) -> tuple[int | None, ...]: ...

    def dtype_name(self, x: Any) -> str: ...


# --- structure: the one definition of cell / stack / RNN ------------------------------------------
def structure_of(obj: Any) -> str:
    """``"bidirectional"``, ``"rnn"``, ``"stack"`` or ``"cell"`` for objects made by this library
    (a compiled RNN is an ``"rnn"``); :class:`FrameworkMismatchError` for anything else."""
    if isinstance(getattr(obj, "backend", None), str):
        if hasattr(obj, "forward_layer") and hasattr(obj, "backward_layer") and hasattr(obj, "merge_mode"):
            return "bidirectional"
        if hasattr(obj, "order") and hasattr(obj, "cell") and hasattr(obj, "return_sequences"):
            return "rnn"
        if hasattr(obj, "cells") and hasattr(obj, "step"):
            return "stack"
        if getattr(obj, "cell_kind", None) is not None:
            return "cell"
    raise FrameworkMismatchError(
        f"expected a cell, StackedRNNCells, RNN or Bidirectional made by rnn_xframework.layers, got "
        f"{type(obj).__module__}.{type(obj).__name__}"
    )


def is_structure(obj: Any, kind: str) -> bool:
    """Whether ``obj`` is a ``kind`` (``"cell"``, ``"stack"``, ``"rnn"``, ``"bidirectional"``) made
    by this library."""
    try:
        return structure_of(obj) == kind
    except FrameworkMismatchError:
        return False


def cells_of(obj: Any) -> list[Any]:
    """The cells of a cell (itself), a stack, an RNN, in layer order, or a Bidirectional (the
    forward layer's, then the backward layer's)."""
    return [obj] if structure_of(obj) == "cell" else list(obj.cells)


def chain_starts(obj: Any) -> tuple[int, ...]:
    """Indices into :func:`cells_of` where a chain of layers begins (a layer there takes the
    object's inputs, not the layer below's output): ``(0,)``, or ``(0, n)`` for a Bidirectional
    whose forward layer has ``n`` cells."""
    if structure_of(obj) == "bidirectional":
        return (0, len(obj.forward_layer.cells))
    return (0,)


def dtype_name(dtype: Any) -> str:
    """Normalize ``"float32"``, ``np.float64``, ``torch.float32``, ``tf.float64`` to a name."""
    if dtype is None:
        return "float32"
    name = getattr(dtype, "name", None) if not isinstance(dtype, str) else dtype
    if name is None:  # torch.dtype has no .name
        name = str(dtype).rsplit(".", 1)[-1]
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        name = np.dtype(dtype).name
    if name not in DTYPES:
        raise DTypeMismatchError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return name


def framework_of(x: Any) -> str:
    """Top-level package of an object's type, without importing anything."""
    return type(x).__module__.split(".", 1)[0]


def check_tensor(ops: TensorOps, x: Any, what: str, shape: Sequence[int | None], dtype: str) -> None:
    """Raise unless ``x`` is a native tensor of ``ops`` with this rank, sizes and dtype.

    ``None`` in ``shape`` matches any size; unknown sizes of ``x`` (tracing) match anything.
    """
    if isinstance(x, np.matrix):
        raise FrameworkMismatchError(
            f"{what}: expected a {ops.name} tensor, got numpy.matrix (its '*' is a matrix product, so cell "
            "math on it is wrong); pass np.asarray(x)"
        )
    if not ops.is_native(x):
        if isinstance(x, (list, tuple)):
            raise StateStructureError(
                f"{what}: expected a {ops.name} tensor, got a {type(x).__name__} of {len(x)}; a cell's state "
                "is a flat list of tensors ([h], or [h, c] for an LSTM), a list of per-layer lists ([[h0], [h1]]) "
                "belongs to a stack or an RNN"
            )
        hint = "convert it first"
        owner = registry.backend_for(x)
        if owner is not None and owner != ops.name:
            hint += f", or build the cell with backend={owner!r}"
        raise FrameworkMismatchError(
            f"{what}: expected a {ops.name} tensor, got {type(x).__module__}.{type(x).__name__} "
            f"({framework_of(x)}); {hint}"
        )
    got = ops.shape(x)
    if len(got) != len(shape) or any(
        e is not None and g is not None and e != g for e, g in zip(shape, got, strict=True)
    ):
        want = "(" + ", ".join("?" if e is None else str(e) for e in shape) + ")"
        raise InputShapeError(f"{what}: expected shape {want}, got {tuple(got)}")
    got_dtype = ops.dtype_name(x)
    if got_dtype != dtype:
        fix = f"cast the tensor to {dtype}"
        if got_dtype in DTYPES:
            fix += f" or build the cell with dtype={got_dtype!r}"
        else:
            fix += f" (cells compute in {' or '.join(DTYPES)} only; integer token ids go through an embedding first)"
        raise DTypeMismatchError(f"{what}: expected dtype {dtype} (the cell's dtype), got {got_dtype}; {fix}")


def check_step(cell: Any, ops: TensorOps, inputs: Any, states: Any) -> list[Any]:
    """Validate one step's arguments for ``cell``; return the states as a list.

    ``cell`` must expose ``units``, ``input_dim`` (``None`` before build), ``dtype_name`` and
    ``state_sizes`` (one int per state tensor).
    """
    check_tensor(ops, inputs, f"{cell_name(cell)} inputs", (None, cell.input_dim), cell.dtype_name)
    return check_states(cell, ops, states, ops.shape(inputs)[0])


def check_states(cell: Any, ops: TensorOps, states: Any, batch: int | None) -> list[Any]:
    """``states`` as a list of ``[batch, size]`` tensors of ``cell``'s dtype, one per state."""
    states = as_state_list(cell, ops, states)
    for i, (state, size) in enumerate(zip(states, cell.state_sizes, strict=True)):
        check_tensor(ops, state, f"{cell_name(cell)} states[{i}]", (batch, size), cell.dtype_name)
    return states


def as_state_list(cell: Any, ops: TensorOps, states: Any) -> list[Any]:
    """A list or tuple of ``len(cell.state_sizes)`` tensors; a bare tensor for one-state cells."""
    n = len(cell.state_sizes)
    if isinstance(states, (list, tuple)):
        states = list(states)
    elif ops.is_native(states) and n == 1:
        states = [states]
    else:
        kind = "a bare tensor" if ops.is_native(states) else type(states).__name__
        raise StateStructureError(
            f"{cell_name(cell)} states: expected a list of {n} tensors "
            f"{cell.state_sizes and [f'[batch, {s}]' for s in cell.state_sizes]}, got {kind}"
        )
    if len(states) != n:
        raise StateStructureError(
            f"{cell_name(cell)} states: expected a list of {n} tensor(s), got a list of {len(states)}; "
            "use cell.get_initial_state(batch_size) for the right structure"
        )
    return states


def as_stack_states(stack: Any, states: Any) -> list[Any]:
    """A stack's state: a list with one entry per layer (each entry checked by its cell)."""
    n = len(stack.cells)
    flat = isinstance(states, (list, tuple)) and any(not isinstance(s, (list, tuple)) for s in states)
    if not isinstance(states, (list, tuple)) or len(states) != n or flat:
        if flat:
            got = f"a flat {type(states).__name__} of {len(states)} (not one list per layer)"
        elif isinstance(states, (list, tuple)):
            got = f"a list of {len(states)}"
        else:
            got = type(states).__name__
        raise StateStructureError(
            f"stack states: expected a list of {n} per-layer lists ({_example(stack)}), got {got}; "
            "use stack.get_initial_state(batch_size) for the right structure"
        )
    return list(states)


def as_rnn_states(stack: Any, ops: TensorOps, states: Any) -> list[Any]:
    """An RNN's initial state as a stack's (one list per layer), also in Keras's forms for an RNN of
    one cell: ``h`` or ``[h]`` (SimpleRNN, GRU), ``[h, c]`` (LSTM), as ``keras.layers.LSTM`` takes them."""
    if len(stack.cells) == 1:
        if ops.is_native(states):
            return [[states]]
        if isinstance(states, (list, tuple)) and states and all(ops.is_native(s) for s in states):
            return [list(states)]
    return as_stack_states(stack, states)


def _example(stack: Any) -> str:
    """``[[h0, c0], [h1, c1]]``-style example of a stack's state, from its cells' state counts."""
    names = ("h", "c", "s")
    layers = [
        "[" + ", ".join(f"{names[j] if j < len(names) else 's'}{i}" for j in range(len(cell.state_sizes))) + "]"
        for i, cell in enumerate(stack.cells)
    ]
    return "e.g. [" + ", ".join(layers) + "]"


def cell_name(cell: Any) -> str:
    return f"{getattr(cell, 'cell_kind', type(cell).__name__)}[{cell.backend}]"
