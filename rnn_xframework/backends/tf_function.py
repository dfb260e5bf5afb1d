"""``xf.compile(rnn, "tf.function")`` and ``xf.compile(rnn, "xla")``: a TensorFlow stack as one
graph, layer by layer with precomputed input projections.

The only module that calls ``tf.function`` for ``xf.compile``. Each layer projects its whole
input sequence in one product, ``xp = x[time*batch, in] @ kernel + bias``, then the traced loop
(unrolled over the static number of steps) runs only the recurrent product per step and the
cell's gates with the cell's own activations. ``"xla"`` adds ``jit_compile=True``.

Every step computes what the Keras cell computes, with the bias sums grouped differently:
results agree within float rounding. Both orderings give the same numbers, so this graph serves
both. The graph reads the cells' variables, so ``set_weights`` and optimizer steps on the
source show here, and ``tf.GradientTape`` differentiates through it. A new input shape traces
(and for XLA compiles) once.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import tensorflow as tf

from rnn_xframework import protocol
from rnn_xframework.errors import InputShapeError, UnsupportedConfigError


def _project(seq: tf.Tensor, kernel: Any, bias: Any) -> list[tf.Tensor]:
    """``seq [time, batch, in] @ kernel (+ bias)`` in one product -> ``time`` tensors ``[batch, G*units]``."""
    steps = seq.shape[0]
    flat = tf.reshape(seq, [-1, seq.shape[2]])
    xp = tf.matmul(flat, kernel)
    if bias is not None:
        xp = xp + bias
    return tf.unstack(tf.reshape(xp, [steps, -1, kernel.shape[1]]), num=steps)


def simple_rnn_layer(cell: Any, seq: tf.Tensor, state: list[tf.Tensor]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """Keras ``SimpleRNNCell``: ``h_t = activation(xp_t + h_{t-1} @ recurrent_kernel)``.

    ``seq`` ``[time, batch, in]``; returns the ``time`` outputs ``[batch, units]`` and ``[h_T]``.
    """
    h = state[0]
    outs = []
    for xt in _project(seq, cell.kernel, cell.bias):
        h = cell.activation(xt + tf.matmul(h, cell.recurrent_kernel))
        outs.append(h)
    return outs, [h]


def lstm_layer(cell: Any, seq: tf.Tensor, state: list[tf.Tensor]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """Keras ``LSTMCell`` (gates ``i, f, c, o``); states ``[h, c]``."""
    h, c = state
    act, rec = cell.activation, cell.recurrent_activation
    outs = []
    for xt in _project(seq, cell.kernel, cell.bias):
        i, f, g, o = tf.split(xt + tf.matmul(h, cell.recurrent_kernel), 4, axis=1)
        c = rec(f) * c + rec(i) * act(g)
        h = rec(o) * act(c)
        outs.append(h)
    return outs, [h, c]


def gru_layer(cell: Any, seq: tf.Tensor, state: list[tf.Tensor]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """Keras ``GRUCell`` (gates ``z, r, h``), ``reset_after`` either way; state ``[h]``."""
    h = state[0]
    act, rec, u = cell.activation, cell.recurrent_activation, cell.units
    bias = cell.bias
    input_bias, recurrent_bias = (bias[0], bias[1]) if bias is not None and cell.reset_after else (bias, None)
    rk = cell.recurrent_kernel
    outs = []
    for xt in _project(seq, cell.kernel, input_bias):
        xz, xr, xh = tf.split(xt, 3, axis=1)
        if cell.reset_after:
            inner = tf.matmul(h, rk)
            if recurrent_bias is not None:
                inner = inner + recurrent_bias
            hz, hr, hh = tf.split(inner, 3, axis=1)
            z, r = rec(xz + hz), rec(xr + hr)
            candidate = act(xh + r * hh)
        else:
            hz, hr = tf.split(tf.matmul(h, rk[:, : 2 * u]), 2, axis=1)
            z, r = rec(xz + hz), rec(xr + hr)
            candidate = act(xh + tf.matmul(r * h, rk[:, 2 * u :]))
        h = z * h + (1 - z) * candidate
        outs.append(h)
    return outs, [h]


LAYERS = {"SimpleRNNCell": simple_rnn_layer, "LSTMCell": lstm_layer, "GRUCell": gru_layer}


class CompiledRNN:
    """A TensorFlow ``RNN`` run as one ``tf.function`` graph; called and answering like the
    source: ``y = fast(x, initial_state=None, training=None)``.

    Dropout in training and ``mask`` are refused (:class:`UnsupportedConfigError`): the graph
    has neither, and it never silently takes the slow path.
    """

    backend = "tensorflow"

    def __init__(self, rnn: Any, jit_compile: bool) -> None:
        if any(c.input_dim is None for c in rnn.cells):
            raise UnsupportedConfigError(
                "compile: the RNN is not built yet; call rnn.build((None, None, features)) or call it once first"
            )
        for cell in rnn.cells:
            if cell.cell_kind not in LAYERS:
                raise UnsupportedConfigError(f"compile: no TensorFlow graph for {cell.cell_kind}")
        self.source = rnn
        self.method = "xla" if jit_compile else "tf.function"
        self._graph = tf.function(self._loop, jit_compile=jit_compile, autograph=False)

    def __getattr__(self, name: str) -> Any:
        if name in ("order", "return_sequences", "return_state", "go_backwards", "cells", "cell", "units"):
            return getattr(self.__dict__["source"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def trainable_variables(self) -> list[Any]:
        return list(self.source.trainable_variables)

    def get_initial_state(self, batch_size: Any) -> list[list[Any]]:
        return self.source.get_initial_state(batch_size)

    def get_weights(self) -> list[np.ndarray]:
        return self.source.get_weights()

    def set_weights(self, weights: Any) -> None:
        self.source.set_weights(weights)

    def _loop(self, x: tf.Tensor, states: list[list[tf.Tensor]]) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
        """``x [batch, time, in]`` -> ``(y, states)``, every layer over the whole sequence."""
        if self.source.go_backwards:
            x = tf.reverse(x, [1])
        seq = tf.transpose(x, [1, 0, 2])
        new_states = []
        for cell, state in zip(self.source.cells, states, strict=True):
            outs, state = LAYERS[cell.cell_kind](cell, seq, state)
            seq = tf.stack(outs, 0)
            new_states.append(state)
        y = tf.transpose(seq, [1, 0, 2]) if self.source.return_sequences else seq[-1]
        return y, new_states

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        source = self.source
        if mask is not None:
            raise UnsupportedConfigError(f"compile: the {self.method} graph takes no mask; call the uncompiled RNN")
        if training and any(c.dropout > 0 or c.recurrent_dropout > 0 for c in source.cells):
            raise UnsupportedConfigError(
                f"compile: the {self.method} graph has no dropout; train with the uncompiled RNN (same variables)"
            )
        ops, stack = source._ops, source.cell
        inputs = tf.convert_to_tensor(inputs) if isinstance(inputs, np.ndarray) else inputs
        protocol.check_tensor(ops, inputs, "RNN inputs", (None, None, stack.input_dim), stack.dtype_name)
        if inputs.shape[1] is None:
            raise UnsupportedConfigError(f"compile: the {self.method} graph needs a static number of time steps")
        if inputs.shape[1] == 0:
            raise InputShapeError("RNN inputs: expected at least one time step, got a sequence of length 0")
        batch = ops.batch_size(inputs)
        if initial_state is None:
            initial_state = stack.get_initial_state(batch)
        states = []
        for cell, state in zip(stack.cells, protocol.as_stack_states(stack, initial_state), strict=True):
            if isinstance(state, (list, tuple)):
                state = [tf.convert_to_tensor(s) if isinstance(s, np.ndarray) else s for s in state]
            state = protocol.as_state_list(cell, ops, state)
            for i, (s, size) in enumerate(zip(state, cell.state_sizes, strict=True)):
                protocol.check_tensor(
                    ops, s, f"{protocol.cell_name(cell)} states[{i}]", (inputs.shape[0], size), stack.dtype_name
                )
            states.append(state)
        device = stack.cells[0].device
        with tf.device(device) if device is not None else contextlib.nullcontext():
            y, states = self._graph(inputs, states)
        states = [list(s) for s in states]
        return (y, states) if source.return_state else y


def compile_function(rnn: Any) -> CompiledRNN:
    """``xf.compile(rnn, "tf.function")``: the graph without XLA."""
    return CompiledRNN(rnn, jit_compile=False)


def compile_xla(rnn: Any) -> CompiledRNN:
    """``xf.compile(rnn, "xla")``: the graph compiled by XLA (``jit_compile=True``)."""
    return CompiledRNN(rnn, jit_compile=True)


def auto_method(rnn: Any) -> str:
    """``xf.compile(rnn, "auto")`` on TensorFlow: ``"xla"``.

    Measured on a 2-core AVX-512 CPU (docs/performance.md): XLA is the fastest TensorFlow path
    at every measured size.
    """
    return "xla"
