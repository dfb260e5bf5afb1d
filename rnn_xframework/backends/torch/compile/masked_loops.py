"""The masked torch loops behind ``xf.compile(...)(x, mask=m)``: Keras's mask semantics in a
loop written for ``torch.jit.script`` and ``torch.compile``.

``mask`` is ``[batch, time]``, true for a real step, as for the uncompiled ``RNN``
(:mod:`rnn_xframework.orderings`). At a masked step every state is kept and the output repeats
the layer's previous output (zeros before its first real step), or is zeros with
``zero_output_for_mask``. Each layer projects its whole input sequence in one product, as the
unmasked loops of :mod:`~rnn_xframework.backends.torch.compile.script_loops` do, and each step
computes the cell's step, then selects per row with ``torch.where`` (two or three selections a
step: the output and each state). In TorchScript the loop reads where the mask is all true
(before the shortest row's end: no selection) and all false (after the longest row's end: no
arithmetic, the output held), so a right-padded batch runs the unmasked step up to its shortest
length and computes nothing past its longest.

The eager path's rule holds (:func:`rnn_xframework.orderings.hold`): a selection, never a
blend, so NaN or inf in a padding step never reaches the outputs. Here the padding steps'
inputs are also replaced by zeros before the projection: a discarded step then computes finite
numbers, so the gradients stay finite too (with a blend, or with NaN fed to the cell, backward
multiplies NaN by the zero gradient of the discarded step). Every kept step computes exactly
what the cell computes, with the bias sums grouped differently: results agree with the
uncompiled masked RNN within float rounding, in both orderings (a lower layer's output at a
masked step feeds only steps whose results the layer above discards).

A masked layer's loop is its method ``masked(seq, state, keep, zero_output, lo, hi, xm, hm)``,
not ``forward``, and :class:`MaskedLoop`'s is its method ``masked`` too: so the layers and the
loop of a ``torch.jit.script``-ed RNN
(:mod:`~rnn_xframework.backends.torch.compile.script_masked`) inherit them next to the fast
loop's ``forward``, over the same cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnn_xframework.backends.torch import kinds
from rnn_xframework.backends.torch.compile.script_loops import _bias_sum, gate_positions
from rnn_xframework.backends.torch.compile.spec_layer import project as _project
from rnn_xframework.compiled import check_built
from rnn_xframework.errors import UnsupportedConfigError


def _held_output(keep: Tensor, new: Tensor, previous: Tensor, zero_output: bool) -> Tensor:
    """The output of a step: ``new`` where ``keep``, else zeros (``zero_output``) or the previous output."""
    return torch.where(keep, new, torch.zeros_like(new) if zero_output else previous)


def canonical_gates(positions: list[int]) -> list[int]:
    """The canonical gate (the spec's order) at each of PyTorch's gate blocks: the inverse of
    :func:`~rnn_xframework.backends.torch.compile.script_loops.gate_positions`."""
    return [positions.index(j) for j in range(len(positions))]


def dropped_projection(seq: Tensor, weight: Tensor, bias: Tensor | None, xm: list[Tensor], canon: list[int]) -> Tensor:
    """``seq [batch, time, in]`` projected with Keras's input dropout masks (``[batch, in]``,
    one per sequence): none, one for every gate, or one per gate (``xm[g]`` for canonical gate
    ``g``, in PyTorch's block ``j`` where ``canon[j] == g``), as :func:`rnn_xframework.cells.run_step`."""
    if len(xm) == 0:
        return _project(seq, weight, bias)
    if len(xm) == 1:
        return _project(seq * xm[0].unsqueeze(1), weight, bias)
    n = weight.shape[0] // len(canon)
    parts: list[Tensor] = []
    for j in range(len(canon)):
        b = None if bias is None else bias[j * n : (j + 1) * n]
        parts.append(_project(seq * xm[canon[j]].unsqueeze(1), weight[j * n : (j + 1) * n], b))
    return torch.cat(parts, 2)


def dropped_recurrent(h: Tensor, u: Tensor, bias: Tensor | None, hm: list[Tensor], canon: list[int]) -> Tensor:
    """``h @ u (+ bias)`` with Keras's recurrent dropout masks (``[batch, units]``): none, one,
    or one per gate (:func:`dropped_projection`'s order)."""
    if len(hm) < 2:
        hh = h if len(hm) == 0 else h * hm[0]
        return torch.mm(hh, u) if bias is None else torch.addmm(bias, hh, u)
    n = u.shape[1] // len(canon)
    parts: list[Tensor] = []
    for j in range(len(canon)):
        hh = h * hm[canon[j]]
        uj = u[:, j * n : (j + 1) * n]
        parts.append(torch.mm(hh, uj) if bias is None else torch.addmm(bias[j * n : (j + 1) * n], hh, uj))
    return torch.cat(parts, 1)


def _past_the_end(out: Tensor, zero_output: bool) -> Tensor:
    """The output of a step after the last real step of every row."""
    return torch.zeros_like(out) if zero_output else out


def real_span(keep: Tensor) -> tuple[int, int]:
    """``(lo, hi)`` of ``keep [batch, time]`` (bool): every row is real before step ``lo`` and
    none from step ``hi`` on (``hi`` at least 1) (a right-padded batch: ``lo`` the shortest length, ``hi`` the
    longest). Steps before ``lo`` need no selection; steps from ``hi`` on, no arithmetic."""
    steps = keep.shape[1]
    every = keep.all(0)
    lo = steps if bool(every.all()) else int(every.to(torch.int32).argmin())
    some = keep.any(0)
    # at least one step computed (selected away when none is real): the outputs stay connected to
    # the inputs and weights, whose gradients are then zeros, as the uncompiled RNN's, not None
    hi = 1 if not bool(some.any()) else steps - int(some.flip(0).to(torch.int32).argmax())
    return lo, hi


class MaskedSimpleRNN(nn.Module):
    """``h_t = act(xp_t + h_{t-1} W_hh^T)`` where the step is real, ``h_{t-1}`` kept where it is not."""

    __constants__ = ["relu"]

    def __init__(self, cell: nn.Module, relu: bool) -> None:
        super().__init__()
        self.cell = cell
        self.relu = relu

    @classmethod
    def of(cls, cell: Any) -> MaskedSimpleRNN:
        """The layer around a built library cell (sharing its ``nn.RNNCell``)."""
        return cls(cell.cell, cell.cell.nonlinearity == "relu")

    def masked(
        self,
        seq: Tensor,
        state: list[Tensor],
        keep: Tensor,
        zero_output: bool,
        lo: int,
        hi: int,
        xm: list[Tensor],
        hm: list[Tensor],
    ) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        xp = dropped_projection(seq, c.weight_ih, _bias_sum(c.bias_ih, c.bias_hh), xm, [0])
        u = c.weight_hh.t().contiguous()
        h = state[0]
        out = torch.zeros_like(h)
        outs: list[Tensor] = []
        for t in range(xp.shape[1]):
            if t >= hi:  # every row masked from here: states kept, the output held
                outs.append(_past_the_end(out, zero_output))
                continue
            z = torch.addmm(xp[:, t], h if len(hm) == 0 else h * hm[0], u)
            new = torch.relu(z) if self.relu else torch.tanh(z)
            if t < lo:  # every row real
                out, h = new, new
            else:
                k = keep[:, t]
                out = _held_output(k, new, out, zero_output)
                h = torch.where(k, new, h)
            outs.append(out)
        return torch.stack(outs, 1), [h]


class MaskedLSTM(nn.Module):
    """Keras's LSTM step (gate blocks ``i, f, c, o`` at ``positions``); ``h`` and ``c`` kept at masked steps."""

    __constants__ = ["gi", "gf", "gc", "go"]

    def __init__(self, cell: nn.Module, positions: list[int]) -> None:
        super().__init__()
        self.cell = cell
        self.gi, self.gf, self.gc, self.go = positions
        self.canon = canonical_gates(positions)

    @classmethod
    def of(cls, cell: Any) -> MaskedLSTM:
        return cls(cell.cell, gate_positions(cell))

    def masked(
        self,
        seq: Tensor,
        state: list[Tensor],
        keep: Tensor,
        zero_output: bool,
        lo: int,
        hi: int,
        xm: list[Tensor],
        hm: list[Tensor],
    ) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        xp = dropped_projection(seq, c.weight_ih, _bias_sum(c.bias_ih, c.bias_hh), xm, self.canon)
        u = c.weight_hh.t().contiguous()
        h, cs = state[0], state[1]
        out = torch.zeros_like(h)
        outs: list[Tensor] = []
        for t in range(xp.shape[1]):
            if t >= hi:
                outs.append(_past_the_end(out, zero_output))
                continue
            if len(hm) < 2:
                z = torch.addmm(xp[:, t], h if len(hm) == 0 else h * hm[0], u).chunk(4, 1)
            else:
                z = (xp[:, t] + dropped_recurrent(h, u, None, hm, self.canon)).chunk(4, 1)
            c_new = torch.sigmoid(z[self.gf]) * cs + torch.sigmoid(z[self.gi]) * torch.tanh(z[self.gc])
            new = torch.sigmoid(z[self.go]) * torch.tanh(c_new)
            if t < lo:
                out, h, cs = new, new, c_new
            else:
                k = keep[:, t]
                out = _held_output(k, new, out, zero_output)
                h = torch.where(k, new, h)
                cs = torch.where(k, c_new, cs)
            outs.append(out)
        return torch.stack(outs, 1), [h, cs]


class MaskedGRU(nn.Module):
    """Keras's GRU step (gate blocks ``z, r, h`` at ``positions``), both forms; ``h`` kept at masked
    steps. ``reset_after=False`` (the library's own torch cell: ``nn.GRUCell`` lacks it) applies the
    reset gate before the candidate's recurrent product, ``tanh(xh + (r * h) U_h + b_h)``."""

    __constants__ = ["gz", "gr", "gh", "reset_after"]

    def __init__(self, cell: nn.Module, positions: list[int], reset_after: bool = True) -> None:
        super().__init__()
        self.cell = cell
        self.gz, self.gr, self.gh = positions
        self.reset_after = reset_after
        self.canon = canonical_gates(positions)
        self.canon_gates, self.canon_h = self.canon[:2], self.canon[2:]
        if not reset_after and self.gh != 2:
            raise UnsupportedConfigError(f"GRU reset_after=False: expected the candidate block last, got {positions}")

    @classmethod
    def of(cls, cell: Any) -> MaskedGRU:
        return cls(cell.cell, gate_positions(cell), bool(cell.config.get("reset_after", True)))

    def masked(
        self,
        seq: Tensor,
        state: list[Tensor],
        keep: Tensor,
        zero_output: bool,
        lo: int,
        hi: int,
        xm: list[Tensor],
        hm: list[Tensor],
    ) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        xp = dropped_projection(seq, c.weight_ih, c.bias_ih, xm, self.canon)
        u = c.weight_hh.t().contiguous()
        hid = u.shape[0]
        bias_hh = c.bias_hh
        b_gates: Tensor | None = None
        b_h: Tensor | None = None
        if bias_hh is not None:
            b_gates, b_h = bias_hh[: 2 * hid], bias_hh[2 * hid :]
        h = state[0]
        out = torch.zeros_like(h)
        outs: list[Tensor] = []
        for t in range(xp.shape[1]):
            if t >= hi:
                outs.append(_past_the_end(out, zero_output))
                continue
            xg = xp[:, t].chunk(3, 1)
            if self.reset_after:
                hg = dropped_recurrent(h, u, bias_hh, hm, self.canon).chunk(3, 1)
                r = torch.sigmoid(xg[self.gr] + hg[self.gr])
                z = torch.sigmoid(xg[self.gz] + hg[self.gz])
                n = torch.tanh(xg[self.gh] + r * hg[self.gh])
            else:
                hg = dropped_recurrent(h, u[:, : 2 * hid], b_gates, hm, self.canon_gates).chunk(2, 1)
                r = torch.sigmoid(xg[self.gr] + hg[self.gr])
                z = torch.sigmoid(xg[self.gz] + hg[self.gz])
                n = torch.tanh(xg[self.gh] + dropped_recurrent(r * h, u[:, 2 * hid :], b_h, hm, self.canon_h))
            new = (1 - z) * n + z * h
            if t < lo:
                out, h = new, new
            else:
                k = keep[:, t]
                out = _held_output(k, new, out, zero_output)
                h = torch.where(k, new, h)
            outs.append(out)
        return torch.stack(outs, 1), [h]


def masked_layer_for(cell: Any) -> nn.Module:
    """The masked layer around a built torch cell of this library (shares its parameters): its
    type's ``masked`` layer in :data:`~rnn_xframework.backends.torch.kinds.KINDS`."""
    row = kinds.get(cell.cell_kind)
    if row is None or not row.masked:
        raise UnsupportedConfigError(
            f"compile: no masked torch loop for {cell.cell_kind} (mask= or dropout in training); call the "
            "uncompiled RNN for those calls (same weights)"
        )
    return row.layer_class("masked").of(cell)


class MaskedLoop(nn.Module):
    """``(x [batch, time, in], states [[...] per layer], mask [batch, time] bool, xm, hm) -> (y, states)``,
    layer by layer; ``y`` and ``go_backwards`` as :class:`~rnn_xframework.backends.torch.compile.script_loops.FastLoop`
    (the mask is reversed with the sequence). ``xm[l]`` / ``hm[l]``: layer ``l``'s dropout masks
    in training (:func:`dropout_masks`; empty lists without dropout). ``forward`` runs :meth:`masked`,
    which calls each layer's ``masked``."""

    __constants__ = ["return_sequences", "go_backwards", "zero_output", "trim"]

    def __init__(
        self, layers: list[nn.Module], return_sequences: bool, go_backwards: bool, zero_output: bool, trim: bool
    ) -> None:
        super().__init__()
        self.cells = nn.ModuleList(layers)
        self.return_sequences = return_sequences
        self.go_backwards = go_backwards
        self.zero_output = zero_output
        self.trim = trim

    def forward(
        self, x: Tensor, states: list[list[Tensor]], mask: Tensor, xm: list[list[Tensor]], hm: list[list[Tensor]]
    ) -> tuple[Tensor, list[list[Tensor]]]:
        return self.masked(x, states, mask, xm, hm)

    def masked(
        self, x: Tensor, states: list[list[Tensor]], mask: Tensor, xm: list[list[Tensor]], hm: list[list[Tensor]]
    ) -> tuple[Tensor, list[list[Tensor]]]:
        mask = mask.flip(1) if self.go_backwards else mask
        keep = mask.unsqueeze(2)
        seq = x.flip(1) if self.go_backwards else x
        seq = torch.where(keep, seq, torch.zeros_like(seq))  # padding never enters the arithmetic
        lo, hi = 0, x.shape[1]
        if self.trim:
            lo, hi = real_span(mask)
        new_states: list[list[Tensor]] = []
        i = 0
        for layer in self.cells:
            seq, state = layer.masked(seq, states[i], keep, self.zero_output, lo, hi, xm[i], hm[i])
            new_states.append(state)
            i += 1
        y = seq if self.return_sequences else seq[:, -1]
        return y, new_states


def masked_loop(rnn: Any, trim: bool) -> MaskedLoop:
    """A :class:`MaskedLoop` over a built torch ``RNN``'s cells (sharing their parameters).
    ``trim``: read the mask's :func:`real_span` (the host reads two numbers a call) and skip the
    selections before it and the arithmetic after it; ``torch.compile`` (one graph per shape,
    ``fullgraph``) gets ``False``."""
    check_built(rnn)
    return MaskedLoop(
        [masked_layer_for(c) for c in rnn.cells],
        bool(rnn.return_sequences),
        bool(rnn.go_backwards),
        bool(rnn.zero_output_for_mask),
        trim,
    )


def as_mask(mask: Any, like: Tensor) -> Tensor:
    """``mask`` (a tensor, array or nested list, ``[batch, time]``, any dtype: nonzero = real) as a
    boolean tensor on ``like``'s device, outside autograd."""
    if isinstance(mask, np.ndarray):  # a flipped or sliced array has strides torch refuses
        mask = np.ascontiguousarray(mask)
    m = torch.as_tensor(mask, device=like.device).detach()
    return m if m.dtype == torch.bool else m != 0


def dropout_masks(rnn: Any, x: Tensor, states: list[list[Tensor]]) -> tuple[list[list[Tensor]], list[list[Tensor]]]:
    """Each cell's dropout masks for one training call, as the uncompiled RNN draws them (its
    cells' own ``get_dropout_mask`` / ``get_recurrent_dropout_mask``, cell by cell, inputs first:
    the same draws from the same generators, and masks set by ``set_dropout_masks`` used).
    Call inside :func:`rnn_xframework.dropout.call_scope`."""
    xm: list[list[Tensor]] = []
    hm: list[list[Tensor]] = []
    for cell, state in zip(rnn.cells, states, strict=True):
        xm.append(list(cell.get_dropout_mask(x.new_empty(x.shape[0], cell.input_dim)) or []))
        hm.append(list(cell.get_recurrent_dropout_mask(state[0]) or []))
    return xm, hm
