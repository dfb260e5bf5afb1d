"""Keras's dropout semantics for recurrent cells, framework-free (NumPy and PyTorch cells).

As in ``keras.layers.DropoutRNNCell``: a cell draws its masks the first time a step needs them
and reuses them at every following step, until :meth:`DropoutMixin.reset_dropout_mask` (the
``RNN`` containers reset after each call, as Keras's ``RNN`` does). Masks are inverted: their
entries are ``0`` or ``1 / (1 - rate)``, so nothing is rescaled at inference. They apply only
when the cell is called with ``training=True``; ``False`` means inference, and ``None`` (not given)
means inference on NumPy and TensorFlow (Keras's rule) and the module's mode on torch
(``module.train()`` / ``.eval()``, PyTorch's rule: the torch objects resolve ``None`` before the
cell's step sees it).

The number of masks per kind is Keras's: one, except for gated cells (LSTM: 4, GRU: 3) with
``recurrent_dropout > 0``, where each gate gets its own input mask and its own recurrent mask
(Keras switches those cells to ``implementation=1``).

Masks can be set by hand (to reproduce another backend's draw exactly) with
``cell.set_dropout_masks(inputs=[...], recurrent=[...])`` and read with
``cell.get_dropout_masks()``; TensorFlow cells have the same two methods.

Inside an ``RNN`` call the masks live in a scope of that call (:func:`call_scope`, a
``ContextVar``), not on the cell: several threads (or tasks) training through the same cells each
draw their own masks, exactly one per cell and kind per call, and never reset another call's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from rnn_xframework.errors import UnsupportedConfigError

_SCOPE: contextvars.ContextVar[dict[tuple[int, str], Any] | None] = contextvars.ContextVar(
    "rnn_xframework_dropout_masks", default=None
)


@contextlib.contextmanager
def call_scope() -> Iterator[None]:
    """Masks drawn inside this block belong to it (one ``RNN`` call) and are dropped after it."""
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def cached(cell: Any, kind: str, draw: Callable[[], Any]) -> Any:
    """The masks of ``kind`` (``"inputs"`` or ``"recurrent"``) for this step: inside a
    :func:`call_scope`, the call's own (masks set by ``set_dropout_masks`` first, else drawn once);
    outside one, the cell's cache (Keras's behaviour for a cell called step by step)."""
    attr = "_dropout_mask" if kind == "inputs" else "_recurrent_dropout_mask"
    scope = _SCOPE.get()
    if scope is None:
        if getattr(cell, attr, None) is None:
            setattr(cell, attr, draw())
        return getattr(cell, attr)
    key = (id(cell), kind)
    masks = scope.get(key)
    if masks is None:
        preset = getattr(cell, attr, None)
        masks = scope[key] = preset if preset is not None else draw()
    return masks


def check_rate(name: str, rate: float) -> float:
    """A dropout rate: a real number in ``[0, 1)``; raises :class:`UnsupportedConfigError` (a
    ``ValueError``) otherwise, for a ``bool`` or a string too."""
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise UnsupportedConfigError(f"{name} must be a number in [0, 1), got {rate!r} ({type(rate).__name__})")
    value = float(rate)
    if not 0.0 <= value < 1.0:
        raise UnsupportedConfigError(f"{name} must be in [0, 1), got {value}")
    return value


def mask_count(gates: int, recurrent_dropout: float) -> int:
    """Keras's number of masks per kind: ``gates`` with recurrent dropout, else one."""
    return gates if gates > 1 and recurrent_dropout > 0 else 1


class DropoutMixin:
    """Mask caching for a cell; the backend supplies ``_new_mask(like, rate)``.

    Attributes used: ``dropout``, ``recurrent_dropout`` (rates), ``gates``.
    """

    dropout: float
    recurrent_dropout: float
    gates: int = 1
    _dropout_mask: list[Any] | None = None
    _recurrent_dropout_mask: list[Any] | None = None

    def _new_mask(self, like: Any, rate: float) -> Any:
        raise NotImplementedError

    @property
    def n_dropout_masks(self) -> int:
        """Masks per kind (inputs, recurrent): 1, or one per gate with recurrent dropout."""
        return mask_count(self.gates, self.recurrent_dropout)

    def get_dropout_mask(self, inputs: Any) -> list[Any] | None:
        """The input masks of this call (drawn now if needed): a list of ``[batch, input_dim]``."""
        if self.dropout <= 0:
            return None
        n = self.n_dropout_masks
        return cached(self, "inputs", lambda: [self._new_mask(inputs, self.dropout) for _ in range(n)])

    def get_recurrent_dropout_mask(self, h: Any) -> list[Any] | None:
        """The recurrent masks of this call (drawn now if needed): a list of ``[batch, units]``."""
        if self.recurrent_dropout <= 0:
            return None
        return cached(
            self, "recurrent", lambda: [self._new_mask(h, self.recurrent_dropout) for _ in range(self.n_dropout_masks)]
        )

    def reset_dropout_mask(self) -> None:
        """Forget the input masks; the next training step draws new ones."""
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self) -> None:
        """Forget the recurrent masks; the next training step draws new ones."""
        self._recurrent_dropout_mask = None

    def get_dropout_masks(self) -> tuple[list[Any] | None, list[Any] | None]:
        """``(input masks, recurrent masks)`` now cached, each a list or ``None``."""
        return (
            None if self._dropout_mask is None else list(self._dropout_mask),
            None if self._recurrent_dropout_mask is None else list(self._recurrent_dropout_mask),
        )

    def set_dropout_masks(self, inputs: Sequence[Any] | None = None, recurrent: Sequence[Any] | None = None) -> None:
        """Use these masks (already scaled: ``0`` or ``1/(1-rate)``) until the next reset.

        Each is a list of :attr:`n_dropout_masks` native tensors (or arrays the backend accepts)
        of shape ``[batch, input_dim]`` / ``[batch, units]``; ``None`` leaves that kind alone.
        """
        for what, masks, rate in (("inputs", inputs, self.dropout), ("recurrent", recurrent, self.recurrent_dropout)):
            if masks is None:
                continue
            check_masks(self, what, masks, rate)
        if inputs is not None:
            self._dropout_mask = [self._as_mask(m) for m in inputs]
        if recurrent is not None:
            self._recurrent_dropout_mask = [self._as_mask(m) for m in recurrent]

    def _as_mask(self, m: Any) -> Any:
        return m


def check_masks(cell: Any, what: str, masks: Any, rate: float) -> None:
    """Raise unless ``masks`` is a list of the cell's mask count and its rate is not zero."""
    n = cell.n_dropout_masks
    if rate <= 0:
        rate_name = "dropout" if what == "inputs" else "recurrent_dropout"
        raise UnsupportedConfigError(f"set_dropout_masks: {what} masks given but the cell's {rate_name} is 0")
    if not isinstance(masks, (list, tuple)) or len(masks) != n:
        got = f"a list of {len(masks)}" if isinstance(masks, (list, tuple)) else type(masks).__name__
        raise UnsupportedConfigError(
            f"set_dropout_masks: expected a list of {n} {what} mask(s) for this cell, got {got}"
        )
