"""Canonical weight layouts and the conversions to PyTorch's, in plain NumPy.

The canonical layout is Keras's, for every backend and every weight file:
``[kernel (in, G*units), recurrent_kernel (units, G*units), bias (G*units,)]``, where ``G`` is
the number of gate blocks (1 for ``SimpleRNNCell``). PyTorch stores the transposes,
``weight_ih (G*units, in)`` and ``weight_hh (G*units, units)``, and two biases: PyTorch ->
canonical sums ``bias_ih + bias_hh``; canonical -> PyTorch puts the bias in ``bias_ih`` and zeros
``bias_hh``. Gate blocks keep their order unless a layout says otherwise. ``docs/weights.md``
has the full table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rnn_xframework.errors import WeightsError

TORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class Layout:
    """How one cell type stores its weights.

    Attributes:
        kind: the Keras cell name, e.g. ``"SimpleRNNCell"``.
        gates: gate blocks stacked along the last canonical axis (``G`` above).
        n_states: number of state tensors (``[h]`` -> 1).
    """

    kind: str
    gates: int = 1
    n_states: int = 1

    def names(self, use_bias: bool) -> list[str]:
        return ["kernel", "recurrent_kernel", "bias"] if use_bias else ["kernel", "recurrent_kernel"]

    def shapes(self, input_dim: int, units: int, use_bias: bool) -> list[tuple[str, tuple[int, ...]]]:
        """Canonical ``(name, shape)`` pairs for a cell of these sizes."""
        g = self.gates * units
        shapes = [("kernel", (input_dim, g)), ("recurrent_kernel", (units, g))]
        if use_bias:
            shapes.append(("bias", (g,)))
        return shapes

    def to_torch(self, weights: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Canonical list -> ``{"weight_ih", "weight_hh"[, "bias_ih", "bias_hh"]}``."""
        out = {"weight_ih": np.ascontiguousarray(weights[0].T), "weight_hh": np.ascontiguousarray(weights[1].T)}
        if len(weights) > 2:
            out["bias_ih"] = np.array(weights[2])
            out["bias_hh"] = np.zeros_like(weights[2])
        return out

    def from_torch(self, params: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """PyTorch parameters -> canonical list (biases summed)."""
        out = [np.ascontiguousarray(params["weight_ih"].T), np.ascontiguousarray(params["weight_hh"].T)]
        if "bias_ih" in params:
            out.append(params["bias_ih"] + params["bias_hh"])
        return out


LAYOUTS: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    LAYOUTS[layout.kind] = layout
    return layout


register(Layout("SimpleRNNCell"))


def get(kind: str) -> Layout:
    try:
        return LAYOUTS[kind]
    except KeyError:
        raise WeightsError(f"no weight layout for cell type {kind!r}; known: {sorted(LAYOUTS)}") from None


def input_dim_of(kind: str, weights: Sequence[np.ndarray]) -> int:
    """The input size a canonical weight list implies (rows of ``kernel``)."""
    if len(weights) == 0 or np.ndim(weights[0]) != 2:
        raise WeightsError(f"{kind}: expected canonical weights starting with a 2-D kernel, got {len(weights)} arrays")
    return int(np.shape(weights[0])[0])


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
    arrays = [np.asarray(w) for w in weights]
    for (name, shape), arr in zip(expected, arrays, strict=True):
        if arr.shape != shape:
            raise WeightsError(
                f"{where}: {kind} weight {name!r} must have shape {shape}, got {arr.shape} "
                f"(expected {describe(expected)}; canonical layout is Keras's, see docs/weights.md)"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise WeightsError(f"{where}: weight {name!r} must be floating point, got dtype {arr.dtype}")
    return arrays


def describe(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> str:
    return "[" + ", ".join(f"{n} {s}" for n, s in shapes) + "]"
