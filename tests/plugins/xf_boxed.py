"""A backend of our own, written as docs/architecture.md ("How to add a backend") says, outside
the package: the proof that a new backend is one module plus one registration line.

Its technology is :class:`Box`, a small tensor type that holds a NumPy array but is not one:
it has ``@ + - *``, indexing, ``shape`` and ``dtype``, refuses to mix with NumPy arrays or with
another dtype (``TypeError``), and has no ``__array__``, so the only way out is
:meth:`BoxedBackend.to_numpy`. A library path that slipped a NumPy array into a boxed
computation, or took a box for an array, fails loudly instead of passing by accident.

The module translates and restates nothing: the cell math is the spec's ``step``, run by
:func:`rnn_xframework.cells.run_step`; the containers are :mod:`rnn_xframework.orderings`'; the
activation table and Keras's initializers are the NumPy backend's, applied inside the box.

Registered by the tests (tests/test_custom_backend.py) with::

    registry.register("boxed", "plugins.xf_boxed", aliases=("box",))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework import cells, layouts, orderings, protocol, registry
from rnn_xframework.backends import numpy as numpy_backend
from rnn_xframework.cells.base import SpecCell
from rnn_xframework.dropout import DropoutMixin
from rnn_xframework.errors import UnsupportedConfigError

NAME = "boxed"


class Box:
    """A tensor: one NumPy array inside (``.a``), of one dtype, on the CPU."""

    __slots__ = ("a",)
    __array_ufunc__ = None  # ``ndarray + Box`` asks Box, which refuses: no silent NumPy result

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    @property
    def shape(self) -> tuple[int, ...]:
        return self.a.shape

    @property
    def dtype(self) -> np.dtype:
        return self.a.dtype

    def __repr__(self) -> str:
        return f"Box({self.a!r})"

    def _other(self, other: Any) -> Any:
        if isinstance(other, Box):
            if other.a.dtype != self.a.dtype:
                raise TypeError(f"Box: {self.a.dtype} with {other.a.dtype}; cast one first")
            return other.a
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return other  # a Python number keeps the box's dtype (NumPy's weak scalars)
        return None

    def _binary(self, other: Any, op: Any) -> Any:
        b = self._other(other)
        return NotImplemented if b is None else Box(op(self.a, b))

    def __add__(self, other: Any) -> Any:
        return self._binary(other, lambda a, b: a + b)

    def __radd__(self, other: Any) -> Any:
        return self._binary(other, lambda a, b: b + a)

    def __sub__(self, other: Any) -> Any:
        return self._binary(other, lambda a, b: a - b)

    def __rsub__(self, other: Any) -> Any:
        return self._binary(other, lambda a, b: b - a)

    def __mul__(self, other: Any) -> Any:
        return self._binary(other, lambda a, b: a * b)

    def __rmul__(self, other: Any) -> Any:
        return self._binary(other, lambda a, b: b * a)

    def __matmul__(self, other: Any) -> Any:
        return self._binary(other, lambda a, b: a @ b) if isinstance(other, Box) else NotImplemented

    def __neg__(self) -> Box:
        return Box(-self.a)

    def __getitem__(self, index: Any) -> Box:
        return Box(self.a[index])


class BoxOps:
    """:class:`~rnn_xframework.cells.StepOps` on boxes."""

    @staticmethod
    def split(x: Box, n: int) -> list[Box]:
        return [Box(p) for p in np.split(x.a, n, axis=-1)]

    @staticmethod
    def activation(name: Any) -> Any:
        if callable(name):
            return name  # a user's function, given boxes
        if name not in numpy_backend.ACTIVATIONS:
            raise UnsupportedConfigError(
                f"{NAME} backend: activation must be one of {list(numpy_backend.ACTIVATIONS)}, got {name!r}"
            )
        fn = numpy_backend.ACTIVATIONS[name]
        return lambda x: Box(fn(x.a))

    @staticmethod
    def matmul(a: Box, b: Box) -> Box:
        return a @ b

    @staticmethod
    def concat(xs: Sequence[Box]) -> Box:
        return Box(np.concatenate([x.a for x in xs], axis=-1))


STEP_OPS = BoxOps()


class BoxCell(SpecCell, DropoutMixin):
    """A cell of any registered type on boxes (``spec`` set per type by ``spec.class_over``).

    Constructed like the Keras cell of the type, plus ``dtype``, ``device`` (``"cpu"`` only)
    and ``seed``; weights are drawn like the NumPy backend's (Keras's initializers).
    """

    backend = NAME

    def __init__(
        self, units: int, *args: Any, dtype: Any = None, device: Any = None, seed: int | None = None, **kwargs: Any
    ) -> None:
        self.bind_config(units, args, kwargs, STEP_OPS)
        if device not in (None, "cpu"):
            raise UnsupportedConfigError(f"{NAME} backend runs on 'cpu' only, got device={device!r}")
        self.dtype_name = protocol.dtype_name(dtype)
        self.input_dim: int | None = None
        self.weights: list[Box] = []
        self._rng = np.random.default_rng(seed)

    def make_weights(self, dim: int) -> None:
        self.weights = [Box(a) for a in numpy_backend.initial_weights(self, self._rng, dim)]
        self.input_dim = dim

    def get_initial_state(self, batch_size: int) -> list[Box]:
        return [Box(np.zeros((batch_size, self.units), self.dtype_name)) for _ in range(self.spec.n_states)]

    def get_weights(self) -> list[np.ndarray]:
        return [w.a.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        dim = self.input_dim if self.input_dim is not None else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(self.layout_name, weights, dim, self.units, self.use_bias)
        self.weights = [Box(a.astype(self.dtype_name, copy=True)) for a in arrays]
        self.input_dim = dim

    def _new_mask(self, like: Box, rate: float) -> Box:
        keep = self._rng.random(like.shape) >= rate
        return Box((keep / (1.0 - rate)).astype(self.dtype_name))

    def _as_mask(self, m: Any) -> Box:
        return m if isinstance(m, Box) else Box(np.asarray(m, self.dtype_name))

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[Box, list[Box]]:
        if self.input_dim is None and isinstance(inputs, Box) and len(inputs.shape) == 2:
            self.build(inputs.shape)
        states = protocol.check_step(self, registry.get(NAME), inputs, states)
        b_in, b_rec = self.layout.bias_parts(self.weights[2]) if self.use_bias else (None, None)
        w = cells.StepWeights(self.weights[0], self.weights[1], b_in, b_rec)
        x_masks, h_masks = self.get_dropout_mask(inputs), self.get_recurrent_dropout_mask(states[0])
        if not training:
            x_masks = h_masks = None
        return cells.run_step(self.spec, STEP_OPS, self.config, w, inputs, states, x_masks, h_masks)


class StackedRNNCells(orderings.StackMixin):
    backend = NAME

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[Any, list[list[Any]]]:
        return self.step(inputs, states, training)


class RNN(orderings.RNNMixin):
    backend = NAME

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        return self.run(inputs, initial_state, training, mask)


class BoxedBackend(registry.Backend, name=NAME):
    stack_class = StackedRNNCells
    rnn_class = RNN
    cell_bases = (BoxCell,)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, Box)

    def dtype_name(self, x: Any) -> str:
        return x.a.dtype.name

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.a.copy()

    def from_numpy(self, a: Any, device: Any = None) -> Box:
        if device not in (None, "cpu"):
            raise UnsupportedConfigError(f"{NAME} backend runs on 'cpu' only, got device={device!r}")
        return Box(np.array(a))

    def unstack(self, x: Any) -> list[Any]:
        return [x[:, t] for t in range(x.shape[1])]

    def stack(self, xs: list[Any]) -> Any:
        return Box(np.stack([x.a for x in xs], axis=1))

    def where(self, cond: Any, a: Any, b: Any | None) -> Any:
        return Box(np.where(cond.a, a.a, np.zeros_like(a.a) if b is None else b.a))

    def swap_batch_time(self, x: Any) -> Any:
        return Box(np.swapaxes(x.a, 0, 1))
