"""Moving weights between objects and to disk, always in the canonical (Keras) layout.

``transfer_weights(src, dst)`` copies between any two backends; ``convert(obj, backend)`` makes
a new object of the same structure on another backend; ``save_weights`` / ``load_weights``
write and read framework-neutral ``.npz`` files (never pickled) that record each weight's name
and shape and are checked on load. Every write is all-or-nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework import layouts, weightfile
from rnn_xframework.errors import FrameworkMismatchError, WeightsError


# --- structure ---------------------------------------------------------------------------
def structure_of(obj: Any) -> str:
    """``"rnn"``, ``"stack"`` or ``"cell"`` for objects made by this library."""
    if hasattr(obj, "order") and hasattr(obj, "cell") and hasattr(obj, "return_sequences"):
        return "rnn"
    if hasattr(obj, "cells") and hasattr(obj, "step"):
        return "stack"
    if getattr(obj, "cell_kind", None) is not None and hasattr(obj, "backend"):
        return "cell"
    raise FrameworkMismatchError(
        f"expected a cell, StackedRNNCells or RNN made by rnn_xframework.layers, got "
        f"{type(obj).__module__}.{type(obj).__name__}"
    )


def cells_of(obj: Any) -> list[Any]:
    """The cells of a cell (itself), a stack, or an RNN, in layer order."""
    return [obj] if structure_of(obj) == "cell" else list(obj.cells)


_signature = weightfile.signature


def weight_count(cell: Any) -> int:
    return len(layouts.of(cell).names(cell.use_bias))


# --- all-or-nothing writes -------------------------------------------------------------------
def validate_cells_weights(
    cells: Sequence[Any], weight_lists: Sequence[Sequence[Any]], where: str
) -> list[list[np.ndarray]]:
    """Check every cell's canonical list (count, shapes, chained input sizes) before any write."""
    if len(weight_lists) != len(cells):
        raise WeightsError(f"{where}: expected weights for {len(cells)} cell(s), got {len(weight_lists)}")
    checked = []
    dim = None
    for i, (cell, weights) in enumerate(zip(cells, weight_lists, strict=True)):
        if cell.input_dim is not None:
            dim = cell.input_dim
        elif dim is None:
            dim = layouts.input_dim_of(cell.cell_kind, weights)
        checked.append(
            layouts.check(layouts.name_of(cell), weights, dim, cell.units, cell.use_bias, f"{where} (cell {i})")
        )
        dim = cell.units
    return checked


def set_cells_weights(cells: Sequence[Any], weight_lists: Sequence[Sequence[Any]], where: str = "set_weights") -> None:
    """Set several cells' weights; on any failure every built cell gets its old weights back."""
    checked = validate_cells_weights(cells, weight_lists, where)
    backups = [cell.get_weights() if cell.input_dim is not None else None for cell in cells]
    try:
        for cell, weights in zip(cells, checked, strict=True):
            cell.set_weights(weights)
    except BaseException:
        for cell, old in zip(cells, backups, strict=True):
            if old is not None:
                cell.set_weights(old)
        raise


def split_weights(cells: Sequence[Any], flat: Sequence[Any]) -> list[list[Any]]:
    """A flat canonical list (as ``stack.get_weights()`` returns) -> one list per cell."""
    if isinstance(flat, (str, bytes)) or not isinstance(flat, Sequence):
        raise WeightsError(f"set_weights: expected a list of arrays, got {type(flat).__name__}")
    counts = [weight_count(cell) for cell in cells]
    if len(flat) != sum(counts):
        raise WeightsError(
            f"set_weights: the stack {_signature(cells)} has {sum(counts)} weights "
            f"({' + '.join(map(str, counts))} per cell), got {len(flat)}"
        )
    out, start = [], 0
    for n in counts:
        out.append(list(flat[start : start + n]))
        start += n
    return out


# --- between objects -------------------------------------------------------------------------
def transfer_weights(src: Any, dst: Any) -> Any:
    """Copy ``src``'s weights into ``dst`` (any backends; cells, stacks or RNNs of one shape).

    Raises :class:`WeightsError` if the structures differ; ``dst`` is unchanged then.
    Returns ``dst``.
    """
    src_cells, dst_cells = cells_of(src), cells_of(dst)
    if _signature(src_cells) != _signature(dst_cells):
        raise WeightsError(
            f"transfer_weights: structures differ: source {_signature(src_cells)}, destination {_signature(dst_cells)}"
        )
    if any(c.input_dim is None for c in src_cells):
        raise WeightsError("transfer_weights: the source is not built yet; call build() or call it once first")
    set_cells_weights(dst_cells, [c.get_weights() for c in src_cells], where="transfer_weights")
    return dst


def convert(obj: Any, backend: str, *, dtype: Any = None, device: Any = None) -> Any:
    """A new object of the same structure and weights on ``backend``.

    ``dtype`` defaults to the source's; ``device`` to the backend's default (CPU).
    """
    from rnn_xframework import layers

    kind = structure_of(obj)
    src_cells = cells_of(obj)
    dtype = dtype if dtype is not None else src_cells[0].dtype_name
    cells = [
        layers.make_cell(c.cell_kind, backend=backend, dtype=dtype, device=device, **c.portable_config())
        for c in src_cells
    ]
    if kind == "cell":
        new: Any = cells[0]
    elif kind == "stack":
        new = layers.StackedRNNCells(cells)
    else:
        new = layers.RNN(
            cells,
            return_sequences=obj.return_sequences,
            return_state=obj.return_state,
            go_backwards=obj.go_backwards,
            order=obj.order,
        )
    if all(c.input_dim is not None for c in src_cells):
        transfer_weights(obj, new)
    return new


# --- PyTorch's fused modules ----------------------------------------------------------------
def to_torch_fused(rnn: Any, *, device: Any = None) -> Any:
    """``rnn`` (an ``RNN`` of one cell type, any backend) as a ``batch_first`` ``torch.nn.RNN`` /
    ``LSTM`` / ``GRU`` with the same weights and outputs (cuDNN on a GPU).

    Raises :class:`UnsupportedConfigError` for what a fused module cannot express (see
    :mod:`rnn_xframework.backends.torch_fused`).
    """
    from rnn_xframework import backends

    if structure_of(rnn) != "rnn":
        raise FrameworkMismatchError(
            f"to_torch_fused: expected an RNN made by rnn_xframework.layers, got {structure_of(rnn)}"
        )
    backends.get("torch")
    from rnn_xframework.backends import torch_fused

    return torch_fused.to_fused(rnn, device=device)


def from_torch_fused(module: Any, backend: str | None = None, **rnn_kwargs: Any) -> Any:
    """An ``RNN`` of cells on ``backend`` (default: current) with a fused ``torch.nn.RNN`` /
    ``LSTM`` / ``GRU``'s weights; ``rnn_kwargs`` go to :func:`rnn_xframework.layers.RNN`
    (``return_sequences`` defaults to ``True``, like the fused module)."""
    from rnn_xframework import backends, config

    backends.get("torch")
    from rnn_xframework.backends import torch_fused

    return torch_fused.from_fused(module, config.resolve(backend), **rnn_kwargs)


# --- files -----------------------------------------------------------------------------------
def save_weights(obj: Any, path: str | os.PathLike[str]) -> str:
    """Write canonical weights to ``path`` (``.npz`` appended if missing); return the path.

    The file holds arrays named ``cells.{i}.{kernel|recurrent_kernel|bias}`` and a JSON record
    of the structure, names and shapes (:mod:`rnn_xframework.weightfile` has the format).
    Written to ``.{name}.rnnxf-tmp-{pid}-{hex}`` next to the destination and renamed, so a
    failure never leaves a half-written file; the destination keeps its mode (a new file gets
    the umask's) and a symlink is written through. A directory destination raises
    :class:`WeightsError`.
    """
    cells = cells_of(obj)
    if any(c.input_dim is None for c in cells):
        raise WeightsError("save_weights: the object is not built yet; call build() or call it once first")
    return weightfile.save(path, cells, structure_of(obj))


def load_weights(obj: Any, path: str | os.PathLike[str]) -> Any:
    """Load a file written by :func:`save_weights` into ``obj`` (checked, all-or-nothing).

    Every corruption, and any file that does not fit ``obj``, raises :class:`WeightsError`
    naming the problem before anything is written; memory stays bounded by the sizes the file
    declares. Keras files (``.weights.h5``, ``.keras``) are named, with what to do instead.
    Returns ``obj``.
    """
    cells = cells_of(obj)
    set_cells_weights(cells, weightfile.load(path, cells), where="load_weights")
    return obj
