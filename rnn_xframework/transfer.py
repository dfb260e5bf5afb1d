"""Moving weights between objects and to disk, always in the canonical (Keras) layout.

``transfer_weights(src, dst)`` copies between any two backends; ``convert(obj, backend)`` makes
a new object of the same structure on another backend; ``save_weights`` / ``load_weights``
write and read framework-neutral ``.npz`` files (never pickled) that record each weight's name
and shape and are checked on load. Every write is all-or-nothing.
"""

from __future__ import annotations

import os
from typing import Any

from rnn_xframework import layouts, weightfile, weightload
from rnn_xframework.errors import FrameworkMismatchError, NotBuiltError, WeightsError
from rnn_xframework.protocol import cells_of, structure_of


# --- between objects -------------------------------------------------------------------------
def transfer_weights(src: Any, dst: Any) -> Any:
    """Copy ``src``'s weights into ``dst`` (any backends; cells, stacks or RNNs of one shape).

    Raises :class:`WeightsError` if the structures differ; ``dst`` is unchanged then.
    Returns ``dst``.

    >>> import rnn_xframework as xf
    >>> from rnn_xframework import layers
    >>> src = layers.SimpleRNNCell(3, backend="numpy")
    >>> src.build((None, 2))
    >>> dst = xf.transfer_weights(src, layers.SimpleRNNCell(3, backend="numpy"))
    >>> [w.shape for w in dst.get_weights()]  # kernel, recurrent_kernel, bias
    [(2, 3), (3, 3), (3,)]
    >>> xf.transfer_weights(src, layers.SimpleRNNCell(5, backend="numpy"))
    Traceback (most recent call last):
    ...
    rnn_xframework.errors.WeightsError: transfer_weights: structures differ: ...
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

    ``dtype`` defaults to the source's; ``device`` to the backend's default (CPU). The source
    must be built (its weights exist): an unbuilt one raises :class:`NotBuiltError` rather than
    giving a copy whose weights would be drawn anew, unrelated to the source's.

    Example (the NumPy backend needs no framework; ``backend="torch"`` or ``"tf"`` works alike):

    >>> import numpy as np
    >>> import rnn_xframework as xf
    >>> from rnn_xframework import layers
    >>> rnn = layers.RNN([layers.LSTMCell(4, backend="numpy"), layers.LSTMCell(4, backend="numpy")])
    >>> rnn.build((None, None, 3))
    >>> copy = xf.convert(rnn, backend="numpy", dtype="float64")
    >>> type(copy).__name__, len(copy.cells), copy.cells[0].dtype_name
    ('RNN', 2, 'float64')
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 3))
    >>> bool(np.allclose(copy(x), rnn(x.astype("float32")), atol=1e-6))
    True
    >>> xf.convert(layers.GRUCell(4, backend="numpy"), backend="numpy")
    Traceback (most recent call last):
    ...
    rnn_xframework.errors.NotBuiltError: convert: the source cell is not built yet, ...
    """
    from rnn_xframework import layers

    kind = structure_of(obj)
    src_cells = cells_of(obj)
    if any(c.input_dim is None for c in src_cells):
        how = {
            "rnn": "rnn.build((None, None, features))",
            "stack": "stack.build((None, features))",
            "cell": "cell.build((None, features))",
        }[kind]
        raise NotBuiltError(
            f"convert: the source {kind} is not built yet, so it has no weights to carry over; "
            f"build it first with {how}, or call it once on an input"
        )
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
    transfer_weights(obj, new)
    return new


# --- PyTorch's fused modules ----------------------------------------------------------------
def to_torch_fused(rnn: Any, *, device: Any = None) -> Any:
    """``rnn`` (an ``RNN`` of one cell type, any backend) as a ``torch.nn.RNN`` /
    ``LSTM`` / ``GRU`` with the same weights and outputs (cuDNN on a GPU).

    Raises :class:`UnsupportedConfigError` for what a fused module cannot express (see
    :mod:`rnn_xframework.backends.torch.nn_modules`).
    """
    from rnn_xframework import registry

    if structure_of(rnn) != "rnn":
        raise FrameworkMismatchError(
            f"to_torch_fused: expected an RNN made by rnn_xframework.layers, got {structure_of(rnn)}"
        )
    registry.get("torch")
    from rnn_xframework.backends.torch import nn_modules

    return nn_modules.to_fused(rnn, device=device)


def from_torch_fused(module: Any, backend: str | None = None, *, device: Any = None, **rnn_kwargs: Any) -> Any:
    """An ``RNN`` of cells on ``backend`` (default: current) with a fused ``torch.nn.RNN`` /
    ``LSTM`` / ``GRU``'s weights and layout (``time_major = not module.batch_first``);
    ``rnn_kwargs`` go to :func:`rnn_xframework.layers.RNN` (``return_sequences`` defaults to
    ``True``, like the fused module). :func:`rnn_xframework.from_torch` does the same and more."""
    from rnn_xframework import layers, registry

    registry.get("torch")
    from rnn_xframework.backends.torch import nn_modules

    fused = nn_modules.read_fused(module)
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
    layouts.set_cells_weights(cells, weightload.load(path, cells), where="load_weights")
    return obj
