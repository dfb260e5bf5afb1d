"""``LSTMCell``: long short-term memory (Keras ``LSTMCell``, PyTorch ``nn.LSTMCell``).

Gate blocks ``i, f, c, o`` along the last canonical axis, the same order as PyTorch's
``i, f, g, o``. Layout: ``kernel (input_dim, 4*units)``, ``recurrent_kernel (units, 4*units)``,
``bias (4*units,)``; PyTorch: ``weight_ih = kernel^T``, ``weight_hh = recurrent_kernel^T``,
``bias_ih + bias_hh = bias``. States ``[h, c]``, each ``[batch, units]``. ``unit_forget_bias``
(Keras's default) starts the forget gate's bias block at one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rnn_xframework.cells.spec import COMMON_ARGS_DOC, CellSpec, StepOps, register
from rnn_xframework.layouts import Layout


def step(
    ops: StepOps, config: Mapping[str, Any], input_projection: Any, recurrent: Callable[..., Any], states: list[Any]
) -> tuple[Any, list[Any]]:
    """Keras's LSTM step; returns ``(h', [h', c'])``::

    i, f, c~, o = split(input_projection + recurrent(h), 4)
    c' = rec_act(f) * c + rec_act(i) * act(c~)
    h' = rec_act(o) * act(c')
    """
    h, c = states
    act, rec = ops.activation(config["activation"]), ops.activation(config["recurrent_activation"])
    i, f, g, o = ops.split(input_projection + recurrent(h, 0, 4), 4)
    c = rec(f) * c + rec(i) * act(g)
    h = rec(o) * act(c)
    return h, [h, c]


def bias_init(config: Mapping[str, Any], bias: np.ndarray) -> np.ndarray:
    """Keras's ``unit_forget_bias``: ones in the forget gate's block (gates ``i, f, c, o``)."""
    if config["unit_forget_bias"]:
        units = config["units"]
        bias[units : 2 * units] = 1
    return bias


DOC = (
    """A long short-term memory cell (Keras ``LSTMCell``, PyTorch ``nn.LSTMCell``).

    .. math::

        i &= \\sigma(x W_i + h U_i + b_i), \\quad f = \\sigma(x W_f + h U_f + b_f),
        \\quad o = \\sigma(x W_o + h U_o + b_o) \\\\
        c' &= f \\odot c + i \\odot \\tanh(x W_c + h U_c + b_c), \\quad h' = o \\odot \\tanh(c')

    with ``W = kernel`` ``(input_dim, 4*units)``, ``U = recurrent_kernel`` ``(units, 4*units)``,
    ``b = bias`` ``(4*units,)``, gate blocks in the order ``i, f, c, o`` (PyTorch's too).

    Args:
        units: size of the output and of each state.
        activation: ``"tanh"`` (default; the only one on torch); others on TF/NumPy.
        recurrent_activation: ``"sigmoid"`` (default; the only one on torch).
        unit_forget_bias: start the forget-gate bias at one (default ``True``, as Keras).
"""
    + COMMON_ARGS_DOC
    + """

    Shape:
        inputs ``[batch, input_dim]``, states ``[h, c]``, each ``[batch, units]`` (a bare tensor
        is an error); returns ``(h_new [batch, units], [h_new, c_new])``.

    Example::

        cell = LSTMCell(64, backend="torch")
        out, (h, c) = cell(torch.randn(4, 100), cell.get_initial_state(4))
    """
)

SPEC = register(
    CellSpec(
        name="LSTMCell",
        gates=("i", "f", "c", "o"),
        states=("h", "c"),
        step=step,
        layouts=(Layout("LSTMCell", gates=4),),
        activations={"activation": "tanh", "recurrent_activation": "sigmoid"},
        options={"unit_forget_bias": True},
        bias_init=bias_init,
        keras_class="LSTMCell",
        sums_recurrent=True,
        doc=DOC,
    )
)
