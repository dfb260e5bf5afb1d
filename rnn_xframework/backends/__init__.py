"""The backend registry: name -> module, imported on first use.

This is the only place that knows which backends exist. Adding one is a new module in this
package that subclasses :class:`Backend` plus one line in ``_MODULES`` (and, if it has a pip
extra, one in ``_INSTALL``). Nothing here imports a framework.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from rnn_xframework.errors import (
    BackendUnavailableError,
    FrameworkMismatchError,
    UnknownBackendError,
)

# name -> (module to import, top-level package of the framework it needs)
_MODULES: dict[str, tuple[str, str | None]] = {
    "numpy": ("rnn_xframework.backends.numpy", None),
    "torch": ("rnn_xframework.backends.torch", "torch"),
    "tensorflow": ("rnn_xframework.backends.tensorflow", "tensorflow"),
}
_ALIASES = {"tf": "tensorflow", "keras": "tensorflow", "pytorch": "torch", "np": "numpy"}
_INSTALL = {
    "torch": 'pip install "rnn_xframework[torch]"  (or: pip install torch)',
    "tensorflow": 'pip install "rnn_xframework[tensorflow]"  (or: pip install tensorflow)',
}

_REGISTRY: dict[str, Backend] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Optimizer:
    """One optimizer, described in Keras's terms so that every backend can build the same one.

    ``name`` is ``"sgd"`` (plain, no momentum: ``w -= learning_rate * g``) or ``"adam"`` with
    Keras's update (``epsilon`` added to the *uncorrected* ``sqrt(v)``, see docs/parity.md).
    Backends translate these to their own optimizer so that the first step is identical.
    """

    name: str
    learning_rate: float
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


class Gradients(NamedTuple):
    """Gradients of a scalar loss, as NumPy arrays in the canonical layout.

    Attributes:
        loss: the loss value.
        inputs: ``[batch, time, features]``.
        states: one list per layer, shaped like the initial states.
        weights: the canonical (Keras) weight list of ``model.get_weights()``, same shapes.
    """

    loss: float
    inputs: Any
    states: list[list[Any]]
    weights: list[Any]


class Backend:
    """What the core needs from a framework. One subclass per backend module, registered by
    the class keyword ``name=``; every method works on that framework's native tensors.

    Backends also expose the classes that ``rnn_xframework.layers`` builds: ``cells`` maps a
    Keras cell name (``"SimpleRNNCell"``) to a class, ``stack_class`` and ``rnn_class`` are the
    stack and sequence containers.
    """

    name: ClassVar[str]
    cells: ClassVar[dict[str, type]] = {}
    stack_class: ClassVar[type]
    rnn_class: ClassVar[type]

    def __init_subclass__(cls, *, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        _REGISTRY[name] = cls()

    # --- tensors -------------------------------------------------------------------------
    def is_native(self, x: Any) -> bool:
        """Whether ``x`` is a tensor this backend computes on."""
        raise NotImplementedError

    def shape(self, x: Any) -> tuple[int | None, ...]:
        """Static shape, ``None`` for dimensions unknown while tracing."""
        return tuple(x.shape)

    def dtype_name(self, x: Any) -> str:
        """``"float32"``-style name of a tensor's dtype."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> Any:
        raise NotImplementedError

    def from_numpy(self, a: Any, device: Any = None) -> Any:
        """A native tensor with the values and dtype of a NumPy array (on ``device``)."""
        raise NotImplementedError

    def batch_size(self, x: Any) -> Any:
        """Batch size of ``[batch, ...]``; a scalar tensor where it is unknown while tracing."""
        return self.shape(x)[0]

    def unstack(self, x: Any) -> list[Any]:
        """``[batch, time, ...]`` -> list of ``time`` tensors ``[batch, ...]``."""
        raise NotImplementedError

    def stack(self, xs: list[Any]) -> Any:
        """Inverse of :meth:`unstack`: list of ``[batch, ...]`` -> ``[batch, time, ...]``."""
        raise NotImplementedError

    def swap_batch_time(self, x: Any) -> Any:
        """``[time, batch, features]`` <-> ``[batch, time, features]`` (for ``time_major`` RNNs)."""
        raise NotImplementedError

    # --- gradients and training (used by rnn_xframework.parity) ----------------------------
    def devices(self) -> list[str]:
        """Devices this backend can run on here, in torch's spelling (``"cpu"``, ``"cuda"``)."""
        return ["cpu"]

    @contextmanager
    def strict_numerics(self) -> Iterator[list[str]]:
        """Turn off reduced-precision shortcuts (TF32) for a parity run and restore them after.

        Yields a list of ``"setting: old -> new"`` lines saying what was changed (empty here).
        """
        yield []

    def loss_and_grads(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Gradients:
        """Gradients of ``L = sum(y * loss_weights[0]) + sum_l sum_i sum(s_li * loss_weights[1][l][i])``.

        Args:
            model: an ``RNN`` of this backend (or its compiled form) with ``return_sequences``
                and ``return_state``.
            x: NumPy ``[batch, time, features]``; states: NumPy, one list per layer.
            loss_weights: ``(w_y [batch, time, units], [[w_s [batch, size], ...] per layer])``.
            device: where to put ``x`` and ``states`` (``None``: the default device).

        Weight gradients are with respect to the canonical weights; raises
        :class:`~rnn_xframework.errors.UnsupportedConfigError` where the backend has no gradients.
        """
        raise NotImplementedError

    def train_step(
        self, model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Optimizer, device: Any = None
    ) -> float:
        """One step of a fresh ``optimizer`` on the loss of :meth:`loss_and_grads`; returns the loss.

        Only trainable parameters move; afterwards ``model.get_weights()`` holds the new weights.
        """
        raise NotImplementedError

    def frozen_parameters(self, model: Any) -> dict[str, Any]:
        """Native parameters that exist but are not trained (NumPy copies, by name); none here."""
        return {}


def canonical_name(name: str) -> str:
    """Resolve aliases (``"tf"`` -> ``"tensorflow"``); raise :class:`UnknownBackendError`."""
    if not isinstance(name, str):
        raise UnknownBackendError(f"backend must be a string such as 'torch', got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _MODULES:
        known = ", ".join(sorted(_MODULES) + sorted(_ALIASES))
        raise UnknownBackendError(f"unknown backend {name!r}; expected one of: {known}")
    return key


def get(name: str) -> Backend:
    """The :class:`Backend` for ``name``, importing its module (and framework) on first use."""
    key = canonical_name(name)
    backend = _REGISTRY.get(key)
    if backend is not None:
        return backend
    module, framework = _MODULES[key]
    if framework is not None and importlib.util.find_spec(framework) is None:
        raise BackendUnavailableError(
            f"backend {key!r} needs the {framework!r} package, which is not installed; install it with: {_INSTALL[key]}"
        )
    with _LOCK:
        importlib.import_module(module)
    return _REGISTRY[key]


def names() -> list[str]:
    """Every registered backend name, installed or not."""
    return list(_MODULES)


def installed() -> list[str]:
    """Backends whose framework is importable here (checked without importing it)."""
    return [
        key
        for key, (_, framework) in _MODULES.items()
        if framework is None or importlib.util.find_spec(framework) is not None
    ]


def of(obj: Any) -> Backend:
    """The backend an object of this library (cell, stack, RNN) runs on."""
    name = getattr(obj, "backend", None)
    if not isinstance(name, str) or name not in _MODULES:
        raise FrameworkMismatchError(
            f"expected a cell, stack or RNN made by rnn_xframework, got {type(obj).__name__}; "
            "build it with rnn_xframework.layers "
        )
    return get(name)
