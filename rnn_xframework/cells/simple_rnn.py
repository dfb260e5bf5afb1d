"""``SimpleRNNCell``: a fully-connected recurrent cell (Keras ``SimpleRNNCell``, PyTorch
``nn.RNNCell``).

.. math:: h_t = \\mathrm{activation}(x_t W + b + h_{t-1} U)

Layout: ``kernel W (input_dim, units)``, ``recurrent_kernel U (units, units)``, ``bias b (units,)``;
one gate block. PyTorch: ``weight_ih = W^T``, ``weight_hh = U^T``, ``bias_ih + bias_hh = b``.
State ``[h]``, ``h`` ``[batch, units]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rnn_xframework.cells.spec import COMMON_ARGS_DOC, CellSpec, StepOps, register
from rnn_xframework.layouts import Layout


def step(
    ops: StepOps, config: Mapping[str, Any], input_projection: Any, recurrent: Callable[..., Any], states: list[Any]
) -> tuple[Any, list[Any]]:
    """``h = activation(input_projection + recurrent(h_prev))``; returns ``(h, [h])``."""
    h = ops.activation(config["activation"])(input_projection + recurrent(states[0], 0, 1))
    return h, [h]


DOC = (
    """A fully-connected recurrent cell (Keras ``SimpleRNNCell``, PyTorch ``nn.RNNCell``).

    .. math:: h_t = \\mathrm{activation}(x_t W + b + h_{t-1} U)

    with ``W = kernel`` ``(input_dim, units)``, ``U = recurrent_kernel`` ``(units, units)``,
    ``b = bias`` ``(units,)``.

    Args:
        units: size of the output and of the state.
        activation: ``"tanh"`` (default) or ``"relu"`` on every backend; others on TF/NumPy."""
    + COMMON_ARGS_DOC
    + """

    Shape:
        inputs ``[batch, input_dim]``, states ``[h]`` with ``h`` ``[batch, units]``;
        returns ``(output [batch, units], [h_new])``.

    Example::

        cell = SimpleRNNCell(64, backend="torch")
        out, state = cell(torch.randn(4, 100), cell.get_initial_state(4))
    """
)

SPEC = register(
    CellSpec(
        name="SimpleRNNCell",
        gates=("h",),
        states=("h",),
        step=step,
        layouts=(Layout("SimpleRNNCell"),),
        keras_class="SimpleRNNCell",
        doc=DOC,
        sums_recurrent=True,
    )
)
