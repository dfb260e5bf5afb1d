"""The loop and layers a ``torch.jit.script``-ed RNN holds
(:class:`~rnn_xframework.backends.torch.compile.torchscript.ScriptedRNN`): both forms over one set of cells.

Each layer is its type's fast layer (:mod:`~rnn_xframework.backends.torch.compile.script_loops`:
``forward``, what an unmasked call runs, unchanged) and its masked layer
(:mod:`~rnn_xframework.backends.torch.compile.masked_loops`: ``masked``, what a call with ``mask=``
runs), in one module through inheritance: the cell math stays in those two modules, and the
native cell is registered once, under the RNN's own name (``cell.cells.{i}.cell.weight_ih``), so
the scripted module's ``state_dict`` keys are exactly the RNN's. :class:`ScriptedLoop` is likewise
:class:`~rnn_xframework.backends.torch.compile.script_loops.FastLoop` (``forward``) and
:class:`~rnn_xframework.backends.torch.compile.masked_loops.MaskedLoop` (``masked``, trimmed to the
mask's real span) over those layers. Which class serves a cell type is its row's ``scripted``
field in :data:`~rnn_xframework.backends.torch.kinds.KINDS`; a type without one (a registered
``MGUCell``) gets the plain fast loop, and the scripted RNN refuses a mask for it.

The two parents' ``__init__`` take different arguments, so each class here calls one parent's
``__init__`` by name (its ``super().__init__()`` then reaches ``nn.Module``'s) and sets the few
attributes only the other parent reads.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rnn_xframework.backends.torch import kinds
from rnn_xframework.backends.torch.compile import masked_loops, script_loops
from rnn_xframework.backends.torch.compile.script_gru import GRUResetBeforeLayer
from rnn_xframework.backends.torch.compile.script_loops import gate_positions


class ScriptedSimpleRNNLayer(script_loops.SimpleRNNLayer, masked_loops.MaskedSimpleRNN):
    """``SimpleRNNLayer`` (in place when autograd is off) with ``MaskedSimpleRNN``'s ``masked``."""

    def __init__(self, cell: nn.Module, relu: bool) -> None:
        masked_loops.MaskedSimpleRNN.__init__(self, cell, relu)
        self.inplace = True  # the scripted RNN's fast loop: script_loops.fast_loop(rnn, inplace=True)

    @classmethod
    def of(cls, cell: Any) -> ScriptedSimpleRNNLayer:  # type: ignore[override]
        return cls(cell.cell, cell.cell.nonlinearity == "relu")


class ScriptedLSTMLayer(script_loops.LSTMLayer, masked_loops.MaskedLSTM):
    """``LSTMLayer`` with ``MaskedLSTM``'s ``masked``."""

    def __init__(self, cell: nn.Module, positions: list[int]) -> None:
        masked_loops.MaskedLSTM.__init__(self, cell, positions)

    @classmethod
    def of(cls, cell: Any) -> ScriptedLSTMLayer:  # type: ignore[override]
        return cls(cell.cell, gate_positions(cell))


class ScriptedGRULayer(script_loops.GRULayer, masked_loops.MaskedGRU):
    """``GRULayer`` (``reset_after=True``) with ``MaskedGRU``'s ``masked``; :meth:`of` gives
    :class:`ScriptedGRUResetBeforeLayer` for ``reset_after=False``, as ``GRULayer.of`` does."""

    __constants__ = masked_loops.MaskedGRU.__constants__

    def __init__(self, cell: nn.Module, positions: list[int]) -> None:
        masked_loops.MaskedGRU.__init__(self, cell, positions, True)

    @classmethod
    def of(cls, cell: Any) -> nn.Module:  # type: ignore[override]
        if cell.layout.torch_problem is not None:
            return ScriptedGRUResetBeforeLayer(cell.cell, gate_positions(cell))
        return cls(cell.cell, gate_positions(cell))


class ScriptedGRUResetBeforeLayer(GRUResetBeforeLayer, masked_loops.MaskedGRU):
    """``GRUResetBeforeLayer`` with ``MaskedGRU``'s ``masked`` (``reset_after=False``)."""

    __constants__ = masked_loops.MaskedGRU.__constants__

    def __init__(self, cell: nn.Module, positions: list[int]) -> None:
        masked_loops.MaskedGRU.__init__(self, cell, positions, False)


class ScriptedLoop(masked_loops.MaskedLoop, script_loops.FastLoop):
    """``FastLoop``'s ``forward`` (``(x, states) -> (y, states)``) and ``MaskedLoop``'s ``masked``
    (``(x, states, mask, xm, hm) -> (y, states)``, trimmed) over the same layers."""

    __constants__ = ["return_sequences", "go_backwards", "simple", "zero_output", "trim"]
    forward = script_loops.FastLoop.forward

    def __init__(self, layers: list[nn.Module], return_sequences: bool, go_backwards: bool, zero_output: bool) -> None:
        script_loops.FastLoop.__init__(self, layers, return_sequences, go_backwards)
        self.zero_output = zero_output
        self.trim = True


def scripted_layer(cell: Any) -> nn.Module | None:
    """The layer of both forms for a built torch cell of this library (sharing its native cell):
    its row's ``scripted`` class, or ``None`` for a type without one."""
    row = kinds.get(cell.cell_kind)
    if row is None or not row.scripted:
        return None
    return row.layer_class("scripted").of(cell)


def scripted_loop(rnn: Any) -> tuple[nn.Module, bool]:
    """``(loop, takes_mask)`` for a built torch ``RNN``: a :class:`ScriptedLoop` (``True``) where
    every cell type has both forms, else the plain fast loop (``False``)."""
    layers = [scripted_layer(c) for c in rnn.cells]
    if any(layer is None for layer in layers):
        return script_loops.fast_loop(rnn, inplace=True), False
    loop = ScriptedLoop(layers, bool(rnn.return_sequences), bool(rnn.go_backwards), bool(rnn.zero_output_for_mask))
    return loop, True
