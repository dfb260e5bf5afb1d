"""``GRUCell``: gated recurrent unit (Keras ``GRUCell``, PyTorch ``nn.GRUCell``).

Gate blocks ``z, r, h`` along the last canonical axis; PyTorch stores them as ``r, z, n``
(``torch_order`` below reorders them). With ``reset_after=True`` (Keras's default, PyTorch's only
form) the bias is ``(2, 3*units)``: row 0 the input bias (PyTorch's ``bias_ih``), row 1 the
recurrent bias (``bias_hh``), and the reset gate multiplies the recurrent product. With
``reset_after=False`` the bias is ``(3*units,)``, the reset gate multiplies ``h`` before the
product, and PyTorch has no equivalent. State ``[h]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rnn_xframework.cells.spec import COMMON_ARGS_DOC, CellSpec, StepOps, register
from rnn_xframework.layouts import Layout

TORCH_ORDER = (1, 0, 2)  # PyTorch's r, z, n are canonical blocks 1, 0, 2


def step(
    ops: StepOps, config: Mapping[str, Any], input_projection: Any, recurrent: Callable[..., Any], states: list[Any]
) -> tuple[Any, list[Any]]:
    """Keras's GRU step; returns ``(h', [h'])``::

    z = rec_act(xz + hz)     r = rec_act(xr + hr)
    reset_after:      h~ = act(xh + r * recurrent_h(h))
    not reset_after:  h~ = act(xh + recurrent_h(r * h))
    h' = z * h + (1 - z) * h~
    """
    (h,) = states
    act, rec = ops.activation(config["activation"]), ops.activation(config["recurrent_activation"])
    xz, xr, xh = ops.split(input_projection, 3)
    if config["reset_after"]:
        hz, hr, hh = ops.split(recurrent(h, 0, 3), 3)
        z, r = rec(xz + hz), rec(xr + hr)
        candidate = act(xh + r * hh)
    else:
        hz, hr = ops.split(recurrent(h, 0, 2), 2)
        z, r = rec(xz + hz), rec(xr + hr)
        candidate = act(xh + recurrent(r * h, 2, 3))
    h = z * h + (1 - z) * candidate
    return h, [h]


def layout_name(config: Mapping[str, Any]) -> str:
    return "GRUCell" if config["reset_after"] else "GRUCell(reset_after=False)"


DOC = (
    """A gated recurrent unit (Keras ``GRUCell``, PyTorch ``nn.GRUCell``).

    .. math::

        z &= \\sigma(x W_z + b_z + h U_z + b'_z), \\quad r = \\sigma(x W_r + b_r + h U_r + b'_r) \\\\
        \\tilde h &= \\tanh(x W_h + b_h + r \\odot (h U_h + b'_h)), \\quad h' = z \\odot h + (1 - z) \\odot \\tilde h

    with ``W = kernel`` ``(input_dim, 3*units)``, ``U = recurrent_kernel`` ``(units, 3*units)``,
    gate blocks ``z, r, h`` (PyTorch stores ``r, z, n``; conversions reorder them), and
    ``bias`` ``(2, 3*units)``: input row ``b``, recurrent row ``b'``.

    Args:
        units: size of the output and of the state.
        activation: ``"tanh"`` (default; the only one on torch); others on TF/NumPy.
        recurrent_activation: ``"sigmoid"`` (default; the only one on torch).
        reset_after: ``True`` (default, PyTorch's form). ``False`` applies the reset gate before
            the recurrent matmul, ``(r * h) U_h``, with a ``(3*units,)`` bias: every backend (on
            torch the library's own parameters and loops: ``nn.GRUCell`` cannot express it).
"""
    + COMMON_ARGS_DOC
    + """

    Shape:
        inputs ``[batch, input_dim]``, states ``[h]``; returns ``(h_new, [h_new])``.

    Example::

        cell = GRUCell(64, backend="tensorflow")
        out, (h,) = cell(x, cell.get_initial_state(4))
    """
)

SPEC = register(
    CellSpec(
        name="GRUCell",
        gates=("z", "r", "h"),
        states=("h",),
        step=step,
        layouts=(
            Layout("GRUCell", gates=3, bias_rows=2, torch_order=TORCH_ORDER),
            Layout(
                "GRUCell(reset_after=False)",
                gates=3,
                torch_order=TORCH_ORDER,
                torch_problem="PyTorch's GRU applies the reset gate after the recurrent matmul (Keras's "
                "reset_after=True); use reset_after=True, or keep this cell on 'tensorflow' or 'numpy'",
            ),
        ),
        activations={"activation": "tanh", "recurrent_activation": "sigmoid"},
        options={"reset_after": True},
        layout_name=layout_name,
        keras_class="GRUCell",
        doc=DOC,
    )
)
