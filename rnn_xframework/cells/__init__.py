"""Cell types as specs: the only place that knows a cell type's math, layout and options.

A :class:`CellSpec` holds everything about one cell type that is not a framework's business:
its Keras name, gate blocks and their order, its states, its weight layouts (canonical and
PyTorch's), its options and their defaults, and its :attr:`~CellSpec.step`, the formula written
once against a handful of tensor operations (:class:`StepOps`). Each backend translates a spec:
the eager backends run :func:`run_step` (or a native kernel that gives the same numbers,
such as ``torch.nn.LSTMCell`` or Keras's own cells); compiled kernels stay concrete where their
compilers need it but read gate order and layouts from here.

The three built-in specs live in :mod:`~rnn_xframework.cells.simple_rnn`,
:mod:`~rnn_xframework.cells.lstm` and :mod:`~rnn_xframework.cells.gru`. A new cell type is one
module that builds a :class:`CellSpec` and calls :func:`register`; every backend, both orderings,
weight transfer and weight files then work with it (``layers.make_cell(name, ...)`` or
``layers.<name>(...)``).

The step contract::

    step(ops, config, input_projection, recurrent, states) -> (output, new_states)

* ``ops``: a :class:`StepOps` of the backend (``split``, ``activation``, ...).
* ``config``: the cell's options (``units``, ``activation``, the spec's own options...).
* ``input_projection``: ``x @ kernel + input bias``, ``[batch, G*units]``, gate blocks in the
  spec's order (input dropout already applied per gate).
* ``recurrent(h, start, stop)``: ``h @ recurrent_kernel[:, start*units:stop*units]`` plus the
  recurrent bias of those gate blocks, if the layout has one (recurrent dropout applied per gate).
* ``states``: the list of ``[batch, units]`` state tensors, in the spec's :attr:`~CellSpec.states`
  order. Returns the output ``[batch, units]`` and the list of new states.
"""

from __future__ import annotations

from rnn_xframework.cells.spec import (
    COMMON_ARGS_DOC,
    CellSpec,
    StepOps,
    StepWeights,
    class_by_name,
    dropped_recurrent,
    gate_slice,
    get,
    names,
    recurrent_product,
    register,
    run_step,
    spec_of,
    unregister,
)

# isort: off
# Each module registers its spec, in this order (the order reports list the cell types in).
from rnn_xframework.cells import simple_rnn
from rnn_xframework.cells import lstm
from rnn_xframework.cells import gru
# isort: on

__all__ = [
    "COMMON_ARGS_DOC",
    "CellSpec",
    "StepOps",
    "StepWeights",
    "class_by_name",
    "dropped_recurrent",
    "gate_slice",
    "get",
    "gru",
    "lstm",
    "names",
    "recurrent_product",
    "register",
    "run_step",
    "simple_rnn",
    "spec_of",
    "unregister",
]
