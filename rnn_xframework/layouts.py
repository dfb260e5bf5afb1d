"""Canonical weight layouts and the conversions to PyTorch's, in plain NumPy.

The canonical layout is Keras's, for every backend and every weight file:
``[kernel (in, G*units), recurrent_kernel (units, G*units), bias (G*units,)]``, where ``G`` is
the number of gate blocks: 1 for ``SimpleRNNCell``, 4 for ``LSTMCell`` (order i, f, c, o on both
sides), 3 for ``GRUCell`` (Keras z, r, h; PyTorch r, z, n: the blocks are reordered). PyTorch
stores the transposes, ``weight_ih (G*units, in)`` and ``weight_hh (G*units, units)``, and two
biases: PyTorch -> canonical sums ``bias_ih + bias_hh``; canonical -> PyTorch puts the bias in
``bias_ih`` and zeros ``bias_hh``. Keras's GRU bias (``reset_after=True``) is ``(2, 3*units)``:
row 0 -> ``bias_ih``, row 1 -> ``bias_hh``; ``GRUCell(reset_after=False)`` has a ``(3*units,)``
bias and no PyTorch equivalent. ``docs/weights.md`` has the full table. Each cell type's layouts
are declared by its spec (:mod:`rnn_xframework.cells`) and registered here.

Below the layouts: the checks of canonical weight lists and the all-or-nothing writes into
several cells (:func:`set_cells_weights`), which stacks, transfers and weight files share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import einops
import numpy as np

from rnn_xframework.errors import UnsupportedConfigError, WeightsError

TORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _blocks(a: np.ndarray, order: Sequence[int], axis: int) -> np.ndarray:
    """Reorder the equal gate blocks of ``a`` along ``axis`` (0 for a bias, 1 for a kernel):
    block ``j`` of the result is block ``order[j]`` of ``a``."""
    pattern = "(g u) -> g u" if axis == 0 else "i (g u) -> i g u"
    gates = einops.rearrange(a, pattern, g=len(order))
    picked = gates[list(order)] if axis == 0 else gates[:, list(order)]
    return einops.rearrange(picked, "g u -> (g u)" if axis == 0 else "i g u -> i (g u)")


@dataclass(frozen=True)
class Layout:
    """How one cell type stores its weights.

    Attributes:
        name: the layout's name: the Keras cell name (``"LSTMCell"``), plus the option that
            changes the shapes if any (``"GRUCell(reset_after=False)"``).
        gates: gate blocks stacked along the last canonical axis (``G`` above).
        bias_rows: 1 for a ``(G*units,)`` bias, 2 for Keras GRU's ``(2, G*units)`` (input
            row, recurrent row).
        torch_order: canonical gate block of each PyTorch gate block (``None``: same order).
        torch_problem: why PyTorch cannot hold this layout (``None``: it can).
    """

    name: str
    gates: int = 1
    bias_rows: int = 1
    torch_order: tuple[int, ...] | None = None
    torch_problem: str | None = None

    @property
    def kind(self) -> str:
        return self.name.split("(", 1)[0]

    def names(self, use_bias: bool) -> list[str]:
        return ["kernel", "recurrent_kernel", "bias"] if use_bias else ["kernel", "recurrent_kernel"]

    def shapes(self, input_dim: int, units: int, use_bias: bool) -> list[tuple[str, tuple[int, ...]]]:
        """Canonical ``(name, shape)`` pairs for a cell of these sizes."""
        g = self.gates * units
        shapes: list[tuple[str, tuple[int, ...]]] = [("kernel", (input_dim, g)), ("recurrent_kernel", (units, g))]
        if use_bias:
            shapes.append(("bias", (g,) if self.bias_rows == 1 else (self.bias_rows, g)))
        return shapes

    def bias_parts(self, bias: Any) -> tuple[Any, Any]:
        """A canonical bias (native or NumPy) as ``(input bias, recurrent bias or None)``, each
        ``(G*units,)``: the rows of a two-row bias, else the bias and ``None``."""
        return (bias[0], bias[1]) if self.bias_rows == 2 else (bias, None)

    def _to_torch_order(self, a: np.ndarray, axis: int) -> np.ndarray:
        return a if self.torch_order is None else _blocks(a, self.torch_order, axis)

    def _from_torch_order(self, a: np.ndarray, axis: int) -> np.ndarray:
        if self.torch_order is None:
            return a
        inverse = [self.torch_order.index(i) for i in range(len(self.torch_order))]
        return _blocks(a, inverse, axis)

    def to_torch(self, weights: Sequence[np.ndarray], own: bool = False) -> dict[str, np.ndarray]:
        """Canonical list -> ``{"weight_ih", "weight_hh"[, "bias_ih", "bias_hh"]}``.

        Raises :class:`UnsupportedConfigError` for layouts PyTorch has no equivalent of, unless
        ``own``: for this library's torch cells, which hold every layout under PyTorch's names
        (a one-row bias in ``bias_ih``, ``bias_hh`` zero) and run the spec's step on them.
        """
        if self.torch_problem is not None and not own:
            raise UnsupportedConfigError(f"{self.name} has no PyTorch equivalent: {self.torch_problem}")
        out = {
            "weight_ih": np.ascontiguousarray(self._to_torch_order(np.asarray(weights[0]), 1).T),
            "weight_hh": np.ascontiguousarray(self._to_torch_order(np.asarray(weights[1]), 1).T),
        }
        if len(weights) > 2:
            bias = np.asarray(weights[2])
            if self.bias_rows == 2:
                out["bias_ih"] = np.array(self._to_torch_order(bias[0], 0))
                out["bias_hh"] = np.array(self._to_torch_order(bias[1], 0))
            else:
                out["bias_ih"] = np.array(self._to_torch_order(bias, 0))
                out["bias_hh"] = np.zeros_like(bias)
        return out

    def from_torch(self, params: Mapping[str, np.ndarray], own: bool = False) -> list[np.ndarray]:
        """PyTorch parameters -> canonical list (biases summed, or stacked for GRU); ``own`` as
        :meth:`to_torch`."""
        if self.torch_problem is not None and not own:
            raise UnsupportedConfigError(f"{self.name} has no PyTorch equivalent: {self.torch_problem}")
        out = [
            np.ascontiguousarray(self._from_torch_order(np.asarray(params["weight_ih"]).T, 1)),
            np.ascontiguousarray(self._from_torch_order(np.asarray(params["weight_hh"]).T, 1)),
        ]
        if "bias_ih" in params:
            b_ih = self._from_torch_order(np.asarray(params["bias_ih"]), 0)
            b_hh = self._from_torch_order(np.asarray(params["bias_hh"]), 0)
            out.append(np.stack([b_ih, b_hh]) if self.bias_rows == 2 else b_ih + b_hh)
        return out


LAYOUTS: dict[str, Layout] = {}
"""Every layout, by name; filled by the cell specs (:func:`rnn_xframework.cells.register`)."""


def register(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


def get(kind: str) -> Layout:
    """The layout registered under ``kind`` (a cell name or a layout name)."""
    try:
        return LAYOUTS[kind]
    except KeyError:
        raise WeightsError(f"no weight layout for cell type {kind!r}; known: {sorted(LAYOUTS)}") from None


def name_of(cell: Any) -> str:
    """The layout name of a cell: its ``layout_name`` if it has one, else its ``cell_kind``."""
    return getattr(cell, "layout_name", None) or cell.cell_kind


def of(cell: Any) -> Layout:
    """The layout of a cell made by this library (GRU's depends on ``reset_after``)."""
    return get(name_of(cell))


def input_dim_of(kind: str, weights: Sequence[np.ndarray]) -> int:
    """The input size a canonical weight list implies (rows of ``kernel``)."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise WeightsError(f"{kind}: expected a list of canonical weights, got {type(weights).__name__}")
    try:
        shape = np.shape(weights[0]) if len(weights) else ()
    except (ValueError, TypeError, RuntimeError) as e:  # a ragged list, a tensor that needs grad, ...
        raise WeightsError(f"{kind}: the kernel (weights[0]) is not an array ({e})") from None
    if len(shape) != 2:
        raise WeightsError(f"{kind}: expected canonical weights starting with a 2-D kernel, got {len(weights)} arrays")
    return int(shape[0])


def check(
    kind: str, weights: Sequence[object], input_dim: int, units: int, use_bias: bool, where: str = "set_weights"
) -> list[np.ndarray]:
    """Validate a canonical list against a cell's sizes and return it as NumPy arrays.

    Raises :class:`WeightsError` naming the expected and given count or shapes; checks
    everything before the caller writes anything.
    """
    expected = get(kind).shapes(input_dim, units, use_bias)
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise WeightsError(f"{where}: expected a list of {len(expected)} arrays, got {type(weights).__name__}")
    if len(weights) != len(expected):
        raise WeightsError(f"{where}: {kind} expects {len(expected)} arrays {describe(expected)}, got {len(weights)}")
    arrays = []
    for (name, shape), w in zip(expected, weights, strict=True):
        if dtype_name(getattr(w, "dtype", None)) == "bfloat16" and callable(getattr(w, "float", None)):
            w = w.float()  # torch's bfloat16, which NumPy lacks: float32 holds it exactly
        try:
            arr = np.asarray(w)
        except (ValueError, TypeError, RuntimeError) as e:  # ragged lists, tensors needing grad, ...
            raise WeightsError(f"{where}: {kind} weight {name!r} is not an array ({e})") from None
        if arr.shape != shape:
            raise WeightsError(
                f"{where}: {kind} weight {name!r} must have shape {shape}, got {arr.shape} "
                f"(expected {describe(expected)}; canonical layout is Keras's, see docs/weights.md)"
            )
        check_floating(arr.dtype, f"{where}: weight {name!r}")
        arrays.append(native_float(arr))
    return arrays


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for NumPy's ``float32``, ``torch.float32`` alike (``""`` for no dtype)."""
    return "" if dtype is None else str(dtype).removeprefix("torch.")


def check_floating(dtype: Any, what: str) -> None:
    """The one check that a weight is floating point, for every way weights come in
    (``set_weights``, ``xf.from_torch(..., state_dict=)``): a NumPy dtype or a torch dtype
    (``bfloat16`` included, which NumPy lacks). Integer, bool and complex weights would be
    truncated or lose their imaginary part, so they are refused, never converted.

    Raises:
        WeightsError: naming ``what``, the dtype, and the fix.
    """
    name = dtype_name(dtype)
    if name == "bfloat16":
        return
    try:
        floating = np.dtype(dtype if isinstance(dtype, np.dtype) else name).kind == "f"
    except TypeError:  # a dtype NumPy does not know (torch's float8 types, ...)
        floating = False
    if not floating:
        raise WeightsError(
            f"{what} must be floating point, got dtype {name} (integer, bool and complex weights are not "
            "converted: the cast would truncate them or drop their imaginary part; cast them yourself if intended)"
        )


def native_float(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order, as float16/32/64 (wider floats become float64), so every
    backend takes the same arrays: ``>f4`` and ``<f4`` give the same weights everywhere."""
    if arr.dtype.itemsize > 8:
        return arr.astype(np.float64)
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def describe(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> str:
    return "[" + ", ".join(f"{n} {s}" for n, s in shapes) + "]"


# --- weight lists of several cells ----------------------------------------------------------------
def signature(cells: Sequence[Any]) -> list[str]:
    """What must match between two objects for their weights to fit: layout, units, bias."""
    return [f"{name_of(c)}(units={c.units}, use_bias={c.use_bias})" for c in cells]


def weight_count(cell: Any) -> int:
    return len(of(cell).names(cell.use_bias))


def validate_cells_weights(
    cells: Sequence[Any], weight_lists: Sequence[Sequence[Any]], where: str, starts: Sequence[int] = (0,)
) -> list[list[np.ndarray]]:
    """Check every cell's canonical list (count, shapes, chained input sizes) before any write.

    ``starts``: the indices where a chain of layers begins (cell ``i`` takes cell ``i-1``'s
    units as its input size, except at a start): ``(0,)`` for a stack, ``(0, n_forward)`` for a
    ``Bidirectional``, whose backward layer takes the inputs too."""
    if len(weight_lists) != len(cells):
        raise WeightsError(f"{where}: expected weights for {len(cells)} cell(s), got {len(weight_lists)}")
    checked = []
    dim = None
    for i, (cell, weights) in enumerate(zip(cells, weight_lists, strict=True)):
        if i in starts:
            dim = None
        if cell.input_dim is not None:
            dim = cell.input_dim
        elif dim is None:
            dim = input_dim_of(cell.cell_kind, weights)
        checked.append(check(name_of(cell), weights, dim, cell.units, cell.use_bias, f"{where} (cell {i})"))
        dim = cell.units
    return checked


def set_cells_weights(
    cells: Sequence[Any],
    weight_lists: Sequence[Sequence[Any]],
    where: str = "set_weights",
    starts: Sequence[int] = (0,),
) -> None:
    """Set several cells' weights; on any failure every built cell gets its old weights back."""
    checked = validate_cells_weights(cells, weight_lists, where, starts)
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
            f"set_weights: the stack {signature(cells)} has {sum(counts)} weights "
            f"({' + '.join(map(str, counts))} per cell), got {len(flat)}"
        )
    out, start = [], 0
    for n in counts:
        out.append(list(flat[start : start + n]))
        start += n
    return out
