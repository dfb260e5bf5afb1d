"""The parity suite's training half on TensorFlow: gradients with ``tf.GradientTape`` and one
step of ``keras.optimizers.SGD`` / ``Adam`` (:mod:`rnn_xframework.parity.training`)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from rnn_xframework import protocol, registry
from rnn_xframework.backends.tensorflow.ops import device_scope
from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.parity.training import Gradients, Optimizer

OPS = registry.get("tensorflow")


def _loss_and_tape(model: Any, x: Any, states: Any, loss_weights: Any, device: Any) -> tuple[Any, ...]:
    with device_scope(device):
        xt = tf.convert_to_tensor(x)
        st = [[tf.convert_to_tensor(s) for s in layer] for layer in states]
        w_y, w_states = loss_weights
        with tf.GradientTape() as tape:
            tape.watch([xt, *[s for layer in st for s in layer]])
            y, final = model(xt, st)
            loss = tf.reduce_sum(y * w_y)
            for layer, weights in zip(final, w_states, strict=True):
                for s, w in zip(layer, weights, strict=True):
                    loss = loss + tf.reduce_sum(s * w)
    return loss, tape, xt, st


def _canonical_variables(model: Any) -> list[Any]:
    """Every cell's trainable variables in layer order: the canonical list, as Keras orders it."""
    return [v for cell in protocol.cells_of(model) for v in cell.trainable_weights]


def loss_and_grads(model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Gradients:
    """``tf.GradientTape``; Keras variables are the canonical weights, in ``get_weights()`` order."""
    variables = _canonical_variables(model)
    loss, tape, xt, st = _loss_and_tape(model, x, states, loss_weights, device)
    flat_states = [s for layer in st for s in layer]
    grads = iter(tape.gradient(loss, [xt, *flat_states, *variables]))
    grad_x = OPS.to_numpy(next(grads))
    grad_states = [[OPS.to_numpy(next(grads)) for _ in layer] for layer in st]
    return Gradients(float(loss), grad_x, grad_states, [OPS.to_numpy(g) for g in grads])


def train_step(model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Optimizer, device: Any = None) -> float:
    """One step of ``keras.optimizers.SGD`` / ``keras.optimizers.Adam`` with these hyper-parameters."""
    if optimizer.name == "sgd":
        opt = keras.optimizers.SGD(learning_rate=optimizer.learning_rate, momentum=0.0)
    elif optimizer.name == "adam":
        opt = keras.optimizers.Adam(
            learning_rate=optimizer.learning_rate,
            beta_1=optimizer.beta_1,
            beta_2=optimizer.beta_2,
            epsilon=optimizer.epsilon,
        )
    else:
        raise UnsupportedConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer.name!r}")
    variables = _canonical_variables(model)
    loss, tape, _, _ = _loss_and_tape(model, x, states, loss_weights, device)
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    return float(loss)


def frozen_parameters(model: Any) -> dict[str, Any]:
    """Keras cells freeze nothing."""
    return {}
