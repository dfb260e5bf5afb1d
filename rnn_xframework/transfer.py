"""Moving weights between objects and to disk, always in the canonical (Keras) layout.

``transfer_weights(src, dst)`` copies between any two backends; ``convert(obj, backend)`` makes
a new object of the same structure on another backend; ``save_weights`` / ``load_weights``
write and read framework-neutral ``.npz`` files (never pickled) that record each weight's name
and shape and are checked on load. Every write is all-or-nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from rnn_xframework import layouts
from rnn_xframework.errors import FrameworkMismatchError, WeightsError
from rnn_xframework.protocol import cells_of, structure_of

FORMAT = "rnn_xframework.weights"
FORMAT_VERSION = 1
_META = "__meta__"


# --- between objects -------------------------------------------------------------------------
def transfer_weights(src: Any, dst: Any) -> Any:
    """Copy ``src``'s weights into ``dst`` (any backends; cells, stacks or RNNs of one shape).

    Raises :class:`WeightsError` if the structures differ; ``dst`` is unchanged then.
    Returns ``dst``.
    """
    src_cells, dst_cells = cells_of(src), cells_of(dst)
    src_sig, dst_sig = layouts.signature(src_cells), layouts.signature(dst_cells)
    if src_sig != dst_sig:
        raise WeightsError(f"transfer_weights: structures differ: source {src_sig}, destination {dst_sig}")
    if any(c.input_dim is None for c in src_cells):
        raise WeightsError("transfer_weights: the source is not built yet; call build() or call it once first")
    layouts.set_cells_weights(dst_cells, [c.get_weights() for c in src_cells], where="transfer_weights")
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
            time_major=obj.time_major,
        )
    if all(c.input_dim is not None for c in src_cells):
        transfer_weights(obj, new)
    return new


# --- PyTorch's fused modules ----------------------------------------------------------------
def to_torch_fused(rnn: Any, *, device: Any = None) -> Any:
    """``rnn`` (an ``RNN`` of one cell type, any backend) as a ``torch.nn.RNN`` /
    ``LSTM`` / ``GRU`` with the same weights and outputs (cuDNN on a GPU).

    Raises :class:`UnsupportedConfigError` for what a fused module cannot express (see
    :mod:`rnn_xframework.backends.torch_fused`).
    """
    from rnn_xframework import registry

    if structure_of(rnn) != "rnn":
        raise FrameworkMismatchError(
            f"to_torch_fused: expected an RNN made by rnn_xframework.layers, got {structure_of(rnn)}"
        )
    registry.get("torch")
    from rnn_xframework.backends import torch_fused

    return torch_fused.to_fused(rnn, device=device)


def from_torch_fused(module: Any, backend: str | None = None, *, device: Any = None, **rnn_kwargs: Any) -> Any:
    """An ``RNN`` of cells on ``backend`` (default: current) with a fused ``torch.nn.RNN`` /
    ``LSTM`` / ``GRU``'s weights and layout (``time_major = not module.batch_first``);
    ``rnn_kwargs`` go to :func:`rnn_xframework.layers.RNN` (``return_sequences`` defaults to
    ``True``, like the fused module). :func:`rnn_xframework.from_torch` does the same and more."""
    from rnn_xframework import layers, registry

    registry.get("torch")
    from rnn_xframework.backends import torch_fused

    fused = torch_fused.read_fused(module)
    cells = [
        layers.make_cell(fused.kind, backend=backend, device=device, **fused.cell_kwargs)
        for _ in range(fused.num_layers)
    ]
    rnn = layers.RNN(cells, **{"return_sequences": True, "time_major": not fused.batch_first, **rnn_kwargs})
    rnn.build((None, None, fused.input_size))
    rnn.set_weights(fused.weights)
    return rnn


# --- files -----------------------------------------------------------------------------------
def save_weights(obj: Any, path: str | os.PathLike[str]) -> str:
    """Write canonical weights to ``path`` (``.npz`` appended if missing); return the path.

    The file holds arrays named ``cells.{i}.{kernel|recurrent_kernel|bias}`` and a JSON record
    of the structure, names and shapes. Written to a temporary file and renamed, so a failure
    never leaves a half-written file.
    """
    cells = cells_of(obj)
    if any(c.input_dim is None for c in cells):
        raise WeightsError("save_weights: the object is not built yet; call build() or call it once first")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays: dict[str, np.ndarray] = {}
    record = []
    for i, cell in enumerate(cells):
        names = layouts.of(cell).names(cell.use_bias)
        weights = cell.get_weights()
        for name, w in zip(names, weights, strict=True):
            arrays[f"cells.{i}.{name}"] = w
        record.append(
            {
                "kind": layouts.name_of(cell),
                "units": cell.units,
                "use_bias": cell.use_bias,
                "names": names,
                "shapes": [list(w.shape) for w in weights],
                "dtype": cell.dtype_name,
            }
        )
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "structure": structure_of(obj), "cells": record}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rnn_xframework-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load_weights(obj: Any, path: str | os.PathLike[str]) -> Any:
    """Load a file written by :func:`save_weights` into ``obj`` (checked, all-or-nothing)."""
    cells = cells_of(obj)
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            meta = json.loads(bytes(f[_META]).decode())
            files = {k: f[k] for k in f.files if k != _META}
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise WeightsError(f"load_weights: {os.fspath(path)!r} is not an rnn_xframework weight file ({e})") from e
    if meta.get("format") != FORMAT:
        raise WeightsError(f"load_weights: {os.fspath(path)!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
    record = meta["cells"]
    saved = [f"{r['kind']}(units={r['units']}, use_bias={r['use_bias']})" for r in record]
    if saved != layouts.signature(cells):
        raise WeightsError(f"load_weights: the file holds {saved}, the object is {layouts.signature(cells)}")
    weight_lists = []
    for i, r in enumerate(record):
        ws = []
        for name, shape in zip(r["names"], r["shapes"], strict=True):
            key = f"cells.{i}.{name}"
            if key not in files or list(files[key].shape) != shape:
                got = None if key not in files else list(files[key].shape)
                raise WeightsError(f"load_weights: {key} recorded with shape {shape}, found {got}")
            ws.append(files[key])
        weight_lists.append(ws)
    layouts.set_cells_weights(cells, weight_lists, where="load_weights")
    return obj
