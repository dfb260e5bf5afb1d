"""A cell type of our own: the minimal gated unit (MGU, Zhou et al. 2016), one forget gate::

    f  = sigmoid(x W_f + h U_f + b_f)
    h~ = tanh(x W_h + (f * h) U_h + b_h)
    h' = (1 - f) * h + f * h~

Only the spec: ``cells.register(MGU)`` makes it a cell type of every backend (the ``mgu``
fixture in tests/conftest.py does, for one test).
"""

from __future__ import annotations

from rnn_xframework.cells import CellSpec
from rnn_xframework.layouts import Layout


def mgu_step(ops, config, input_projection, recurrent, states):
    (h,) = states
    act, rec = ops.activation(config["activation"]), ops.activation(config["recurrent_activation"])
    xf_, xh = ops.split(input_projection, 2)
    f = rec(xf_ + recurrent(h, 0, 1))
    candidate = act(xh + recurrent(f * h, 1, 2))
    h = (1 - f) * h + f * candidate
    return h, [h]


MGU = CellSpec(
    name="MGUCell",
    gates=("f", "h"),
    states=("h",),
    step=mgu_step,
    layouts=(Layout("MGUCell", gates=2),),
    activations={"activation": "tanh", "recurrent_activation": "sigmoid"},
)
