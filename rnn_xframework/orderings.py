"""The two orderings of a stacked recurrent network, written once for every backend.

``order="timestep"`` is the tutorial's first loop: each time step goes through every layer
before the next step. ``order="layer"`` is its second: layer 1 runs over every step and its
output sequence (``middle_sequences``) feeds layer 2, and so on. Both give the same numbers.

:class:`StackMixin` and :class:`RNNMixin` are ``StackedRNNCells`` and ``RNN``, written once:
each backend mixes them into its native base class (``torch.nn.Module``, a Keras ``Layer``, or
``object`` for NumPy), names itself (``backend``) and adds only what its base class calls
(``forward`` / ``call`` / ``__call__``). ``_ops`` is the backend's
:class:`~rnn_xframework.registry.Backend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from rnn_xframework import cells as cell_specs
from rnn_xframework import dropout, layouts, protocol, registry
from rnn_xframework.errors import (
    FrameworkMismatchError,
    InputShapeError,
    StateStructureError,
    UnsupportedConfigError,
)

ORDERS = ("timestep", "layer")


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise UnsupportedConfigError(f"order must be one of {ORDERS}, got {order!r}")
    return order


def check_cells(cells: Any, backend: str) -> list[Any]:
    """A non-empty list of cells of one backend (a single cell is wrapped in a list)."""
    cells = list(cells) if isinstance(cells, (list, tuple)) else [cells]
    if not cells:
        raise StateStructureError("expected at least one cell, got an empty list")
    for i, cell in enumerate(cells):
        if getattr(cell, "backend", None) != backend or not protocol.is_structure(cell, "cell"):
            raise FrameworkMismatchError(
                f"cells[{i}]: expected a {backend} cell made by rnn_xframework.layers, got "
                f"{type(cell).__module__}.{type(cell).__name__} "
                f"(backend {getattr(cell, 'backend', None)!r}); use xf.convert(cell, backend={backend!r})"
            )
    return cells


class _Container:
    """What both containers share: the base class's ``__init__`` (with the backend's defaults,
    ``base_kwargs``) and the backend's ops."""

    backend: ClassVar[str]
    base_kwargs: ClassVar[dict[str, Any]] = {}

    def _init_base(self, kwargs: dict[str, Any]) -> None:
        super().__init__(**{**self.base_kwargs, **kwargs})

    @property
    def _ops(self) -> Any:
        return registry.get(self.backend)

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build each unbuilt cell for ``input_shape`` (``[..., features]``)."""
        self.build_cells(input_shape)  # type: ignore[attr-defined]


class StackMixin(_Container):
    """``StackedRNNCells``: one time step through every layer.

    Shapes: ``inputs`` ``[batch, input_dim]``; states ``[[s, ...] per layer]``; output
    ``[batch, units of the last cell]``. ``cell_list`` is the backend's container for the cells
    (``torch.nn.ModuleList``; ``list`` elsewhere).
    """

    cells: Sequence[Any]
    cell_list: ClassVar[Any] = list

    def __init__(self, cells: Sequence[Any], **kwargs: Any) -> None:
        self._init_base(kwargs)
        self.cells = type(self).cell_list(list(cells))

    @property
    def units(self) -> int:
        return self.cells[-1].units

    @property
    def state_size(self) -> list[Any]:
        return [cell.state_size for cell in self.cells]

    @property
    def input_dim(self) -> int | None:
        return self.cells[0].input_dim

    @property
    def dtype_name(self) -> str:
        return self.cells[0].dtype_name

    def build_cells(self, input_shape: Sequence[int | None]) -> None:
        """Build each unbuilt cell, chaining sizes: layer ``i+1`` takes layer ``i``'s units."""
        dim = input_shape[-1]
        for cell in self.cells:
            if cell.input_dim is None:
                cell.build((None, dim))
            elif dim is not None and cell.input_dim != dim:
                raise InputShapeError(f"{protocol.cell_name(cell)} was built for {cell.input_dim} features, got {dim}")
            dim = cell.units

    def get_initial_state(self, batch_size: Any) -> list[list[Any]]:
        """Zeros: one list per layer, e.g. ``[[h0], [h1]]``, each ``[batch_size, units]``."""
        return [cell.get_initial_state(batch_size) for cell in self.cells]

    def step(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[Any, list[list[Any]]]:
        states = protocol.as_stack_states(self, states)
        new_states = []
        out = inputs
        for cell, state in zip(self.cells, states, strict=True):
            out, state = cell(out, state, training=training)
            new_states.append(state)
        return out, new_states

    def get_weights(self) -> list[np.ndarray]:
        """Every cell's canonical weights, concatenated in layer order."""
        return [w for cell in self.cells for w in cell.get_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Inverse of :meth:`get_weights`; all-or-nothing."""
        cells = list(self.cells)
        layouts.set_cells_weights(cells, layouts.split_weights(cells, weights))


class RNNMixin(_Container):
    """``RNN``: loop a stack over ``[batch, time, features]``.

    Returns the last output ``[batch, units]``, or every output ``[batch, time, units]`` with
    ``return_sequences=True``; with ``return_state=True`` a pair ``(output, states)`` where
    ``states`` is one list per layer. With ``time_major`` (PyTorch's ``batch_first=False``) the
    inputs are ``[time, batch, features]`` and the sequence output ``[time, batch, units]``;
    ``mask`` stays ``[batch, time]``. At a masked step the state is kept and the output repeats
    the previous one (zeros before the first real step), or is zeros with
    ``zero_output_for_mask=True`` (Keras's option; ``Bidirectional`` sets it, as Keras's does).
    """

    def __init__(
        self,
        cell: Any,
        *,
        return_sequences: bool,
        return_state: bool,
        go_backwards: bool,
        order: str,
        time_major: bool = False,
        zero_output_for_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        self._init_base(kwargs)
        self.cell = cell
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.order = order
        self.time_major = time_major

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.cell.build_cells(input_shape)

    @property
    def cells(self) -> Sequence[Any]:
        return self.cell.cells

    def fresh_copy(self, *, go_backwards: bool, prefix: str = "") -> Any:
        """A new RNN of this configuration on this backend, with ``go_backwards`` and new
        weights (initialized as a new layer's; built for the same inputs when this one is built):
        what ``Bidirectional`` makes of its layer, as Keras makes its copies from the layer's
        config. ``prefix`` names the copy where layers have names (Keras: ``"forward_"``)."""
        ops = self._ops
        new_cells = [
            ops.cell_class(cell_specs.get(c.cell_kind))(dtype=c.dtype_name, **c.portable_config(), **c.backend_config())
            for c in self.cells
        ]
        stack = ops.stack_class(new_cells)
        rnn = ops.rnn_class(
            stack,
            return_sequences=self.return_sequences,
            return_state=self.return_state,
            go_backwards=bool(go_backwards),
            order=self.order,
            time_major=self.time_major,
            zero_output_for_mask=self.zero_output_for_mask,
        )
        if self.cell.input_dim is not None:
            rnn.build((None, None, self.cell.input_dim))
        return rnn

    @property
    def units(self) -> int:
        return self.cell.units

    def get_initial_state(self, batch_size: Any) -> list[list[Any]]:
        return self.cell.get_initial_state(batch_size)

    def get_weights(self) -> list[np.ndarray]:
        return self.cell.get_weights()

    def set_weights(self, weights: Sequence[Any]) -> None:
        self.cell.set_weights(weights)

    def run(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        """Loop over ``inputs``; dropout masks are drawn once for the call (in a scope of their own,
        so calls from several threads never share or reset each other's masks) and masks set by
        ``set_dropout_masks`` are used by this call and reset after it."""
        try:
            with dropout.call_scope():
                return self._run(inputs, initial_state, training, mask)
        finally:
            for cell in self.cells:
                for reset in ("reset_dropout_mask", "reset_recurrent_dropout_mask"):
                    getattr(cell, reset, lambda: None)()

    def _run(self, inputs: Any, initial_state: Any, training: bool | None, mask: Any) -> Any:
        ops = self._ops
        protocol.check_tensor(ops, inputs, "RNN inputs", (None, None, self.cell.input_dim), self.cell.dtype_name)
        if self.time_major:
            inputs = ops.swap_batch_time(inputs)
        if self.cell.input_dim is None:
            self.cell.build_cells(ops.shape(inputs)[1:])
        if initial_state is None:
            initial_state = self.cell.get_initial_state(ops.batch_size(inputs))
        states = protocol.as_rnn_states(self.cell, ops, initial_state)
        steps = ops.unstack(inputs)
        if not steps:
            raise InputShapeError("RNN inputs: expected at least one time step, got a sequence of length 0")
        masks = step_masks(ops, mask, inputs)
        if self.go_backwards:
            steps = steps[::-1]
            masks = masks[::-1]
        if self.order == "timestep":
            cells = list(self.cell.cells)  # the stack's structure was checked once, above
            outputs: list[Any] = []
            for t, xt in enumerate(steps):
                out, new = xt, []
                for cell, state in zip(cells, states, strict=True):
                    out, state = cell(out, state, training=training)
                    new.append(state)
                if masks[t] is not None:
                    previous = outputs[-1] if outputs and not self.zero_output_for_mask else None
                    out = hold(ops, masks[t], out, previous)
                    new = [
                        [hold(ops, masks[t], n, o) for n, o in zip(nl, ol, strict=True)]
                        for nl, ol in zip(new, states, strict=True)
                    ]
                outputs.append(out)
                states = new
        else:
            outputs, states = run_layer_major(
                ops, self.cell.cells, steps, states, training, masks, self.zero_output_for_mask
            )
        y = ops.stack(outputs) if self.return_sequences else outputs[-1]
        if self.time_major and self.return_sequences:
            y = ops.swap_batch_time(y)
        return (y, states) if self.return_state else y


def step_masks(ops: Any, mask: Any, inputs: Any) -> list[Any]:
    """Keras's ``mask`` (``[batch, time]``, true = real step) as one boolean ``[batch, 1]`` tensor
    per step, or ``[None] * time`` without a mask. Eager only."""
    steps = ops.shape(inputs)[1]
    if mask is None:
        return [None] * steps
    m = np.asarray(ops.to_numpy(mask) if ops.is_native(mask) else mask)
    if m.shape != tuple(ops.shape(inputs)[:2]):
        raise InputShapeError(f"RNN mask: expected shape {tuple(ops.shape(inputs)[:2])} (batch, time), got {m.shape}")
    m = m.astype(bool)
    return [ops.from_numpy(m[:, t, None], getattr(inputs, "device", None)) for t in range(steps)]


def hold(ops: Any, m: Any, new: Any, old: Any | None) -> Any:
    """``new`` where ``m`` is true, ``old`` (zeros when ``None``) where it is false.

    A selection, never ``m*new + (1-m)*old``: a padding step may hold NaN or inf (``0*NaN`` is
    NaN), and whatever it holds must not reach the outputs, as in Keras."""
    return ops.where(m, new, old)


def run_layer_major(
    ops: Any,
    cells: Sequence[Any],
    steps: list[Any],
    states: list[Any],
    training: bool | None,
    masks: list[Any] | None = None,
    zero_output_for_mask: bool = False,
) -> tuple[list[Any], list[Any]]:
    """Layer 1 over every step, keep its outputs, then layer 2 over those, and so on.

    With ``masks``, a masked step keeps the layer's state and repeats its previous output
    (zeros before the first real step; always zeros with ``zero_output_for_mask``), as Keras
    does. (Only the last layer's outputs are seen: a masked step's value in a lower layer feeds
    a step whose result the layer above discards.)
    """
    masks = masks or [None] * len(steps)
    sequence = steps
    final_states = []
    for cell, state in zip(cells, states, strict=True):
        outputs: list[Any] = []
        for xt, m in zip(sequence, masks, strict=True):
            out, new = cell(xt, state, training=training)
            if m is not None:
                out = hold(ops, m, out, outputs[-1] if outputs and not zero_output_for_mask else None)
                new = [hold(ops, m, n, o) for n, o in zip(new, state, strict=True)]
            state = new
            outputs.append(out)
        sequence = outputs
        final_states.append(state)
    return sequence, final_states
