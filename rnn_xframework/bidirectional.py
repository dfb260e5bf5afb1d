"""``Bidirectional``: two RNNs over one sequence, one of them backwards, written once for every
backend (as :mod:`rnn_xframework.orderings` writes ``RNN``).

What it computes is Keras's ``keras.layers.Bidirectional``
(``keras/src/layers/rnn/bidirectional.py``):

- the forward layer and the backward layer (``go_backwards`` the other way round) run over the
  same inputs, with the same ``training`` and ``mask``;
- with ``return_sequences`` the backward output, which comes in processing order, is flipped
  back to time order before merging (a literal concatenation is off by the reversal);
- both layers get ``zero_output_for_mask = return_sequences`` (Keras forces it): a masked step
  outputs zeros, so a right-padded batch has zeros at its padding in both directions;
- ``merge_mode``: ``"concat"`` (last axis), ``"sum"``, ``"mul"``, ``"ave"`` (``(y + y_rev) / 2``),
  or ``None`` (a list ``[y, y_rev]``);
- ``return_state``: ``(output, states)``, the forward layer's states and then the backward
  layer's, one list per layer (``[[h_f, c_f], [h_b, c_b]]`` for one LSTM each); Keras returns
  the same tensors flat (``[y, h_f, c_f, h_b, c_b]``);
- ``initial_state``: its first half goes to the forward layer, the second to the backward one
  (``[[h_f, c_f], [h_b, c_b]]``, or Keras's flat ``[h_f, c_f, h_b, c_b]``).

Weights (``get_weights`` / ``set_weights``, ``xf.transfer_weights``, weight files) are the
forward layer's, then the backward layer's, in the canonical layout: Keras's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework import layouts, protocol
from rnn_xframework.errors import FrameworkMismatchError, StateStructureError, UnsupportedConfigError
from rnn_xframework.orderings import _Container

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def check_merge_mode(merge_mode: Any) -> Any:
    if merge_mode not in MERGE_MODES:
        raise UnsupportedConfigError(f"Bidirectional: merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
    return merge_mode


def check_pair(forward_layer: Any, backward_layer: Any) -> None:
    """Keras's checks (``_verify_layer_config``), plus one backend and one layout for both."""
    for name, layer in (("layer", forward_layer), ("backward_layer", backward_layer)):
        if not protocol.is_structure(layer, "rnn"):
            raise FrameworkMismatchError(
                f"Bidirectional: {name} must be an RNN made by rnn_xframework.layers (layers.LSTM(...), "
                f"layers.RNN(cell), ...), got {type(layer).__module__}.{type(layer).__name__}"
            )
    if forward_layer.backend != backward_layer.backend:
        raise FrameworkMismatchError(
            f"Bidirectional: the layer runs on {forward_layer.backend!r} and backward_layer on "
            f"{backward_layer.backend!r}; use xf.convert(backward_layer, backend={forward_layer.backend!r})"
        )
    if forward_layer.go_backwards == backward_layer.go_backwards:
        raise UnsupportedConfigError(
            "Bidirectional: the forward and backward layers need different go_backwards values, got "
            f"go_backwards={forward_layer.go_backwards} for both (without backward_layer, the layer "
            "itself must have go_backwards=False)"
        )
    for attr in ("return_sequences", "return_state", "time_major"):
        f, b = getattr(forward_layer, attr), getattr(backward_layer, attr)
        if f != b:
            raise UnsupportedConfigError(
                f"Bidirectional: the forward and backward layers need the same {attr}, got {f} and {b}"
            )


def split_state(initial_state: Any) -> tuple[Any, Any]:
    """``(forward, backward)`` halves of a Bidirectional's ``initial_state`` (``None``: zeros)."""
    if initial_state is None:
        return None, None
    if not isinstance(initial_state, (list, tuple)) or len(initial_state) % 2:
        got = f"a list of {len(initial_state)}" if isinstance(initial_state, (list, tuple)) else type(initial_state)
        raise StateStructureError(
            "Bidirectional initial_state: expected a list of even length, the forward layer's states then the "
            f"backward layer's ([[h_f, c_f], [h_b, c_b]], or Keras's flat [h_f, c_f, h_b, c_b]), got {got}"
        )
    half = len(initial_state) // 2
    return list(initial_state[:half]), list(initial_state[half:])


class BidirectionalMixin(_Container):
    """``Bidirectional``: the forward and backward RNNs (``forward_layer``, ``backward_layer``,
    taken as they are) and ``merge_mode``; see the module's docstring for what a call returns.

    A backend mixes it into its base class and calls :meth:`run` from its call method; it
    supplies ``concat`` (the last axis) through its :class:`~rnn_xframework.registry.Backend`.

    Shapes: inputs ``[batch, time, features]`` (``[time, batch, ...]`` with ``time_major``);
    outputs ``[batch, time, units_f + units_b]`` with ``"concat"`` and ``return_sequences``,
    ``[batch, units]`` (``units_f + units_b``) without; ``mask`` ``[batch, time]``.
    """

    def __init__(self, forward_layer: Any, backward_layer: Any, *, merge_mode: Any, **kwargs: Any) -> None:
        check_pair(forward_layer, backward_layer)
        self._init_base(kwargs)
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        self.merge_mode = check_merge_mode(merge_mode)
        for layer in (forward_layer, backward_layer):  # as Keras's force_zero_output_for_mask
            layer.zero_output_for_mask = bool(layer.return_sequences)

    @property
    def return_sequences(self) -> bool:
        return bool(self.forward_layer.return_sequences)

    @property
    def return_state(self) -> bool:
        return bool(self.forward_layer.return_state)

    @property
    def time_major(self) -> bool:
        return bool(self.forward_layer.time_major)

    @property
    def layers(self) -> list[Any]:
        """``[forward_layer, backward_layer]``."""
        return [self.forward_layer, self.backward_layer]

    @property
    def cells(self) -> list[Any]:
        """The forward layer's cells, then the backward layer's: the order of the weights."""
        return [*self.forward_layer.cells, *self.backward_layer.cells]

    @property
    def input_dim(self) -> int | None:
        return self.forward_layer.cells[0].input_dim

    @property
    def dtype_name(self) -> str:
        return self.forward_layer.cells[0].dtype_name

    @property
    def units(self) -> int:
        """The size of the merged output's last axis."""
        f, b = self.forward_layer.units, self.backward_layer.units
        return f + b if self.merge_mode == "concat" else f

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build both layers for ``input_shape`` (``[..., features]``)."""
        self.forward_layer.cell.build_cells(input_shape)
        self.backward_layer.cell.build_cells(input_shape)

    def get_initial_state(self, batch_size: Any) -> list[list[Any]]:
        """Zeros: the forward layer's states, then the backward layer's (one list per layer)."""
        return [*self.forward_layer.get_initial_state(batch_size), *self.backward_layer.get_initial_state(batch_size)]

    def get_weights(self) -> list[np.ndarray]:
        """The forward layer's canonical weights, then the backward layer's (Keras's order)."""
        return [*self.forward_layer.get_weights(), *self.backward_layer.get_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Inverse of :meth:`get_weights`; checked and all-or-nothing over both layers."""
        cells = self.cells
        starts = (0, len(self.forward_layer.cells))
        layouts.set_cells_weights(cells, layouts.split_weights(cells, weights), "set_weights", starts)

    def run(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        """Both layers over ``inputs``, the backward output flipped back to time order, merged."""
        forward_state, backward_state = split_state(initial_state)
        y = self.forward_layer(inputs, initial_state=forward_state, training=training, mask=mask)
        y_rev = self.backward_layer(inputs, initial_state=backward_state, training=training, mask=mask)
        states: list[Any] = []
        if self.return_state:
            (y, forward_states), (y_rev, backward_states) = y, y_rev
            states = [*forward_states, *backward_states]
        if self.return_sequences:
            y_rev = self._flip_time(y_rev)
        output = self._merge(y, y_rev)
        return (output, states) if self.return_state else output

    def _flip_time(self, y: Any) -> Any:
        """``y`` (a sequence output) reversed along its time axis."""
        ops = self._ops
        if self.time_major:
            return ops.swap_batch_time(ops.reverse_time(ops.swap_batch_time(y)))
        return ops.reverse_time(y)

    def _merge(self, y: Any, y_rev: Any) -> Any:
        mode = self.merge_mode
        if mode == "concat":
            return self._ops.concat([y, y_rev])
        if mode == "sum":
            return y + y_rev
        if mode == "ave":
            return (y + y_rev) / 2
        if mode == "mul":
            return y * y_rev
        return [y, y_rev]
