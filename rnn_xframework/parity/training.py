"""The training half of the parity suite: gradients of one loss and one optimizer step, on any
backend that has a trainer (:attr:`rnn_xframework.registry.Backend.trainer`, a module with
``loss_and_grads``, ``train_step`` and ``frozen_parameters``).

The loss is ``L = sum(y * w_y) + sum_l sum_i sum(s_li * w_s[l][i])``; gradients are returned in the
canonical layout, so every backend's can be compared with every other's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from rnn_xframework import registry
from rnn_xframework.errors import UnsupportedConfigError


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


def trainer(name: str) -> ModuleType:
    """The training module of backend ``name``; :class:`UnsupportedConfigError` if it has none."""
    backend = registry.get(name)
    if backend.trainer is None:
        raise UnsupportedConfigError(f"{backend.name} has no gradients (the forward reference only)")
    return importlib.import_module(backend.trainer)


def loss_and_grads(
    name: str, model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None, mask: Any = None
) -> Gradients:
    """Gradients of the loss for ``model`` (an ``RNN`` of backend ``name``, or its compiled form,
    with ``return_sequences`` and ``return_state``).

    Args:
        x: NumPy ``[batch, time, features]``; states: NumPy, one list per layer.
        loss_weights: ``(w_y [batch, time, units], [[w_s [batch, size], ...] per layer])``.
        device: where to put ``x`` and ``states`` (``None``: the default device).
        mask: NumPy ``[batch, time]`` bool, passed as ``model(x, states, mask=mask)`` (``None``: no mask).
    """
    extra = {} if mask is None else {"mask": mask}  # a trainer without masks is called as before
    return trainer(name).loss_and_grads(model, x, states, loss_weights, device, **extra)


def train_step(
    name: str, model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Optimizer, device: Any = None
) -> float:
    """One step of a fresh ``optimizer`` on the loss of :func:`loss_and_grads`; returns the loss.

    Only trainable parameters move; afterwards ``model.get_weights()`` holds the new weights.
    """
    return trainer(name).train_step(model, x, states, loss_weights, optimizer, device)


def frozen_parameters(name: str, model: Any) -> dict[str, Any]:
    """Native parameters that exist but are not trained (NumPy copies, by name)."""
    return trainer(name).frozen_parameters(model)
