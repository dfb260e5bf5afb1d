"""The fast torch loops behind ``xf.compile``: input projections precomputed, steps in place.

Inference (autograd off, TorchScript) of a stack of SimpleRNN layers runs as one unit, by size:
:func:`wavefront` (small batch and units: every layer advances in the same step, one GEMM per
step) or :func:`time_major` (chunked, time-major buffers, one contiguous ``addmm_`` per step).
Everything else runs layer-major: each layer first projects its whole input sequence in one
matrix product, ``xp = x[batch*time, in] @ W_ih^T + b`` (a large, efficient GEMM), then runs only
the recurrent product per step, ``addmm(xp[t], h, W_hh^T)``, followed by the cell's gates. The
recurrent kernel is transposed to a contiguous ``(units, G*units)`` copy once per call (MKL is
up to 2x faster on it than on a transposed view at small sizes); the copy is part of the
autograd graph, so gradients reach the cells' own parameters. Training a SimpleRNN stack
compiled with TorchScript goes through :mod:`~rnn_xframework.backends.torch.compile.bptt` instead.

Every step computes exactly what the per-step cell computes, with the bias sums grouped
differently: results agree within float rounding (docs/performance.md gives the tolerances).
Both ``order="timestep"`` and ``order="layer"`` give the same numbers, so these loops serve both.

The modules are written for ``torch.jit.script`` and ``torch.compile`` alike (typed lists, no
Python-side state); :mod:`rnn_xframework.backends.torch.compile.torchscript` and
:mod:`rnn_xframework.backends.torch.compile.inductor` wrap them in
:class:`~rnn_xframework.backends.torch.compile.compiled_module.CompiledRNN`. The kernels work on the native
``torch.nn`` cells' parameters, in PyTorch's gate order; which layer serves a cell type is read
from its row of :data:`~rnn_xframework.backends.torch.kinds.KINDS`. A type without a row (a
registered ``MGUCell``) runs :class:`SpecLayer`: the same layer-major loop around its spec's step,
traced once (``torch.jit.trace``) so that the scripted loop can call it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework import cells
from rnn_xframework.backends.torch import kinds
from rnn_xframework.backends.torch.compile import script_gru
from rnn_xframework.backends.torch.compile.spec_layer import SpecLayer, project
from rnn_xframework.compiled import check_built


def _activate_(z: Tensor, relu: bool) -> Tensor:
    return z.relu_() if relu else z.tanh_()


def _activate_blocks_(z: Tensor, relu: list[bool], offs: list[int], uniform: bool) -> None:
    """The activation of each layer on its block of columns of ``z`` (all at once if ``uniform``)."""
    if uniform:
        _activate_(z, relu[0])
    else:
        for i in range(len(relu)):
            if offs[i] < z.shape[1]:
                _activate_(z[:, offs[i] : offs[i + 1]], relu[i])


def _bias_sum(bias_ih: Tensor | None, bias_hh: Tensor | None) -> Tensor | None:
    """``bias_ih + bias_hh``; ``None`` for a cell without bias."""
    return None if bias_ih is None or bias_hh is None else bias_ih + bias_hh


def wavefront(
    x: Tensor, w_ih: list[Tensor], w_hh: list[Tensor], bias: list[Tensor], relu: list[bool], h0: list[Tensor]
) -> tuple[Tensor, list[Tensor]]:
    """Inference of a SimpleRNN stack as one loop of ``time + layers - 1`` steps, one product each.

    Step ``k`` computes layer ``l`` at time ``k - l`` for every layer at once: the row
    ``[h_0(k), h_1(k - 1), ..., h_{L-1}(k - L + 1)]`` is ``act(c_k + row_{k-1} @ big)``, where
    block column ``l`` of ``big`` holds ``W_ih[l]^T`` against block ``l - 1`` and ``W_hh[l]^T``
    against block ``l``, and ``c_k`` is the first layer's projected input (one GEMM for all
    steps) and the other layers' biases. The first ``L - 1`` steps run only the layers that
    have started. Each step is exactly the per-layer step, its two products summed in one GEMM:
    results agree with the layer-by-layer loop within float rounding. Where per-step dispatch,
    not arithmetic, is the cost (small batch and units), this halves the steps of a two-layer
    stack.

    ``x [batch, time, in]``, ``w_ih[l] [units_l, in_l]``, ``w_hh[l] [units_l, units_l]``,
    ``bias[l] [units_l]``, ``h0[l] [batch, units_l]`` -> ``(y [batch, time, units_top], [h_l])``.
    """
    n_layers = len(w_hh)
    batch, steps = x.shape[0], x.shape[1]
    offs = [0]
    for w in w_hh:
        offs.append(offs[-1] + w.shape[0])
    n = offs[-1]
    big = x.new_zeros(n, n)
    for i in range(n_layers):
        big[offs[i] : offs[i + 1], offs[i] : offs[i + 1]] = w_hh[i].t()
        if i > 0:
            big[offs[i - 1] : offs[i], offs[i] : offs[i + 1]] = w_ih[i].t()
    rows = x.new_empty(steps + n_layers, batch, n)  # rows[k + 1]: the row step k computes
    first = offs[1]
    rows[1 : steps + 1, :, :first] = project(x, w_ih[0], bias[0]).transpose(0, 1)
    rows[steps + 1 :, :, :first] = 0.0  # layer 0 past the end: computed, never read
    for i in range(1, n_layers):
        rows[1:, :, offs[i] : offs[i + 1]] = bias[i]
    rows[0, :, :first] = h0[0]
    uniform = True
    for r in relu:
        uniform = uniform and r == relu[0]
    for k in range(n_layers - 1):  # start-up: layers 0 .. k have started
        rows[k + 1, :, offs[k + 1] : offs[k + 2]] = h0[k + 1]  # layer k + 1's state, read by step k + 1
        m = offs[k + 1]
        _activate_blocks_(rows[k + 1, :, :m].addmm_(rows[k, :, :m], big[:m, :m]), relu, offs, uniform)
    for k in range(n_layers - 1, steps + n_layers - 1):  # the hot loop: one GEMM, one activation
        _activate_blocks_(rows[k + 1].addmm_(rows[k], big), relu, offs, uniform)
    y = rows[n_layers:, :, offs[n_layers - 1] :].transpose(0, 1).contiguous()
    states = [rows[steps + i, :, offs[i] : offs[i + 1]].clone() for i in range(n_layers)]
    return y, states


def time_major(
    x: Tensor,
    w_ih: list[Tensor],
    w_hh: list[Tensor],
    bias: list[Tensor],
    relu: list[bool],
    h0: list[Tensor],
    chunk_rows: int,
) -> tuple[Tensor, list[Tensor]]:
    """Inference of a SimpleRNN stack in time-major chunks, every step in place.

    The sequence is cut into chunks of about ``chunk_rows // batch`` steps. For each chunk,
    layer by layer: project the chunk's input in one GEMM into a ``[steps, batch, units]``
    buffer (the first layer reads the batch-first input through a strided batched GEMM, no
    transposed copy), then overwrite step ``t`` of it with ``act(buf[t] + h @ W_hh^T)``: one
    contiguous ``addmm_`` and activation per step. The lower layers' buffers are chunk-sized and
    reused, so they stay in cache; only the top layer's buffer, the output, spans the whole
    sequence. Same arguments and results as :func:`wavefront`; ``y`` is the time-major output
    seen batch-first (a transposed view, as ``nn.RNN(batch_first=True)`` returns).
    """
    seq = x.transpose(0, 1)
    steps, batch = seq.shape[0], seq.shape[1]
    n_layers = len(w_hh)
    chunk = max(1, min(steps, chunk_rows // max(batch, 1)))  # batch 0: no rows, never a division by 0
    u = [rec.t().contiguous() for rec in w_hh]
    out = x.new_empty(steps, batch, w_hh[n_layers - 1].shape[0])
    scratch = [x.new_empty(chunk, batch, rec.shape[0]) for rec in w_hh[:-1]]
    states = h0
    for c in range((steps + chunk - 1) // chunk):
        t0 = c * chunk
        n = min(chunk, steps - t0)
        inp = seq[t0 : t0 + n]
        ends: list[Tensor] = []  # a new list: ``states[i] = h`` hits a TorchScript bug (torch 2.13)
        for i in range(n_layers):
            buf = out[t0 : t0 + n] if i == n_layers - 1 else scratch[i][:n]
            h = _layer_into(buf, inp, w_ih[i], u[i], bias[i], relu[i], states[i])
            ends.append(h.clone())  # the scratch buffer is overwritten by the next chunk
            inp = buf
        states = ends
    return out.transpose(0, 1), states


def _layer_into(buf: Tensor, inp: Tensor, w_ih: Tensor, u: Tensor, bias: Tensor, relu: bool, h: Tensor) -> Tensor:
    """One SimpleRNN layer over ``inp [steps, batch, in]`` (any strides) into ``buf [steps, batch,
    units]`` (contiguous): ``buf = inp @ w_ih^T + bias`` in one GEMM, then each step in place,
    ``buf[t] = act(buf[t] + h @ u)`` with ``u = W_hh^T`` contiguous. Returns the last ``h``
    (a view of ``buf``)."""
    n, batch = inp.shape[0], inp.shape[1]
    buf.copy_(bias.expand(buf.shape))  # then in-place products: TorchScript mis-resolves ``out=`` here
    if inp.is_contiguous():
        buf.view(n * batch, w_ih.shape[0]).addmm_(inp.view(n * batch, inp.shape[2]), w_ih.t())
    else:  # the batch-first input seen time-major: a strided batched GEMM, no copy
        buf.baddbmm_(inp, w_ih.t().expand(n, w_ih.shape[1], w_ih.shape[0]))
    for t in range(n):
        h = _activate_(buf[t].addmm_(h, u), relu)
    return h


def time_major_all(
    x: Tensor, w_ih: list[Tensor], w_hh: list[Tensor], bias: list[Tensor], relu: list[bool], h0: list[Tensor]
) -> list[Tensor]:
    """Every layer's whole output ``[time, batch, units_l]``, time-major: what the backward of
    :mod:`rnn_xframework.backends.torch.compile.bptt` needs (arguments as :func:`wavefront`)."""
    seq = x.transpose(0, 1)
    steps, batch = seq.shape[0], seq.shape[1]
    outs: list[Tensor] = []
    for i in range(len(w_hh)):
        buf = x.new_empty(steps, batch, w_hh[i].shape[0])
        _layer_into(buf, seq, w_ih[i], w_hh[i].t().contiguous(), bias[i], relu[i], h0[i])
        outs.append(buf)
        seq = buf
    return outs


class SimpleRNNLayer(nn.Module):
    """``h_t = act(xp_t + h_{t-1} W_hh^T)`` with ``xp = x W_ih^T + b_ih + b_hh``; ``act`` tanh or relu.

    ``forward(seq [batch, time, in], state [h]) -> (out [batch, time, units], [h_T])``. With
    ``inplace`` (TorchScript) and autograd off, each step overwrites its slice of the projection,
    which becomes the output; ``torch.compile`` gets the out-of-place form, which it can fuse
    (functionalizing the in-place form would copy the buffer every step).
    """

    __constants__ = ["relu", "inplace"]

    def __init__(self, cell: nn.Module, relu: bool, inplace: bool) -> None:
        super().__init__()
        self.cell = cell
        self.relu = relu
        self.inplace = inplace

    @classmethod
    def of(cls, cell: Any, inplace: bool) -> SimpleRNNLayer:
        """The layer around a built library cell (sharing its ``nn.RNNCell``)."""
        return cls(cell.cell, cell.cell.nonlinearity == "relu", inplace)

    def simple_weights(self) -> tuple[Tensor, Tensor, Tensor, bool]:
        """``(W_ih, W_hh, b_ih + b_hh (zeros without bias), relu)`` for the whole-stack loops."""
        c = self.cell
        b = _bias_sum(c.bias_ih, c.bias_hh)
        return c.weight_ih, c.weight_hh, c.weight_hh.new_zeros(c.weight_hh.shape[0]) if b is None else b, self.relu

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        xp = project(seq, c.weight_ih, _bias_sum(c.bias_ih, c.bias_hh))
        u = c.weight_hh.t().contiguous()
        h = state[0]
        if self.inplace and not torch.is_grad_enabled():
            for t in range(xp.shape[1]):
                h = _activate_(xp[:, t].addmm_(h, u), self.relu)
            return xp, [h.clone()]  # the state, not a view into the output
        outs: list[Tensor] = []  # autograd: in-place writes to one buffer would break the saved steps
        for xt in xp.unbind(1):  # one UnbindBackward (a stack), not a full-size zero buffer per step
            z = torch.addmm(xt, h, u)
            h = torch.relu(z) if self.relu else torch.tanh(z)
            outs.append(h)
        return torch.stack(outs, 1), [h]


def gate_positions(cell: Any) -> list[int]:
    """Where each canonical gate block of the cell's spec (``spec.gates``, in order) sits in
    PyTorch's parameters, from the layout's ``torch_order`` (LSTM ``[0, 1, 2, 3]``, GRU ``[1, 0, 2]``)."""
    spec = cells.get(cell.cell_kind)
    order = cell.layout.torch_order or tuple(range(spec.n_gates))
    return [order.index(g) for g in range(spec.n_gates)]


class LSTMLayer(nn.Module):
    """Keras's LSTM step on ``xp_t + h W_hh^T`` in PyTorch's layout; states ``[h, c]``. The gate
    blocks ``i, f, c, o`` are read at ``positions`` (:func:`gate_positions`)."""

    __constants__ = ["gi", "gf", "gc", "go"]

    def __init__(self, cell: nn.Module, positions: list[int]) -> None:
        super().__init__()
        self.cell = cell
        self.gi, self.gf, self.gc, self.go = positions

    @classmethod
    def of(cls, cell: Any, inplace: bool) -> LSTMLayer:
        """The layer around a built library cell (sharing its native cell)."""
        return cls(cell.cell, gate_positions(cell))

    def simple_weights(self) -> tuple[Tensor, Tensor, Tensor, bool]:
        raise RuntimeError("simple_weights: not a SimpleRNN layer")

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        xp = project(seq, c.weight_ih, _bias_sum(c.bias_ih, c.bias_hh))
        u = c.weight_hh.t().contiguous()
        h, cs = state[0], state[1]
        outs: list[Tensor] = []
        for xt in xp.unbind(1):
            z = torch.addmm(xt, h, u).chunk(4, 1)
            cs = torch.sigmoid(z[self.gf]) * cs + torch.sigmoid(z[self.gi]) * torch.tanh(z[self.gc])
            h = torch.sigmoid(z[self.go]) * torch.tanh(cs)
            outs.append(h)
        return torch.stack(outs, 1), [h, cs]


class GRULayer(nn.Module):
    """Keras's GRU step with ``reset_after=True`` (PyTorch's form: the reset gate after the
    recurrent product) in PyTorch's layout. The gate blocks ``z, r, h`` are read at ``positions``
    (:func:`gate_positions`; PyTorch stores them ``r, z, n``)."""

    __constants__ = ["gz", "gr", "gh"]

    def __init__(self, cell: nn.Module, positions: list[int]) -> None:
        super().__init__()
        self.cell = cell
        self.gz, self.gr, self.gh = positions

    @classmethod
    def of(cls, cell: Any, inplace: bool) -> nn.Module:
        """The layer around a built library cell (sharing its native cell); a layout
        ``nn.GRUCell`` cannot hold (``reset_after=False``) gets :mod:`.script_gru`'s layer."""
        if cell.layout.torch_problem is not None:
            return script_gru.GRUResetBeforeLayer(cell.cell, gate_positions(cell))
        return cls(cell.cell, gate_positions(cell))

    def simple_weights(self) -> tuple[Tensor, Tensor, Tensor, bool]:
        raise RuntimeError("simple_weights: not a SimpleRNN layer")

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        xp = project(seq, c.weight_ih, c.bias_ih)
        u = c.weight_hh.t().contiguous()
        bias_hh = c.bias_hh
        h = state[0]
        outs: list[Tensor] = []
        for xt in xp.unbind(1):
            hu = torch.mm(h, u) if bias_hh is None else torch.addmm(bias_hh, h, u)
            xg, hg = xt.chunk(3, 1), hu.chunk(3, 1)
            r = torch.sigmoid(xg[self.gr] + hg[self.gr])
            z = torch.sigmoid(xg[self.gz] + hg[self.gz])
            n = torch.tanh(xg[self.gh] + r * hg[self.gh])
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, 1), [h]


def layer_for(cell: Any, inplace: bool) -> nn.Module:
    """The whole-sequence layer around a built torch cell of this library (sharing its
    parameters): its type's layer in :data:`~rnn_xframework.backends.torch.kinds.KINDS`, or
    :class:`SpecLayer` for a type without a row."""
    row = kinds.get(cell.cell_kind)
    return (SpecLayer if row is None else row.layer_class()).of(cell, inplace)


WAVEFRONT_MAX_UNITS = 128
"""An all-SimpleRNN stack runs :func:`wavefront` in inference when its units, summed over the
layers, are at most this and the batch at most :data:`WAVEFRONT_MAX_BATCH`; else
:func:`time_major` (docs/performance.md has the measurements)."""
WAVEFRONT_MAX_BATCH = 8
CHUNK_ROWS = 2048
"""``batch * steps`` per chunk of :func:`time_major`."""


class FastLoop(nn.Module):
    """``(x [batch, time, in], states [[...] per layer]) -> (y, states)``, layer by layer.

    ``y`` is ``[batch, time, units]`` with ``return_sequences``, else ``[batch, units]``; with
    ``go_backwards`` the sequence is processed in reverse and ``y`` is in processing order.
    With ``inplace`` a stack of SimpleRNN layers only, with autograd off, runs as one unit:
    :func:`wavefront` up to :data:`WAVEFRONT_MAX_BATCH` rows and :data:`WAVEFRONT_MAX_UNITS`
    units summed over the layers, else :func:`time_major`. The thresholds are attributes of the
    instance (``wavefront_max_units``, ``wavefront_max_batch``, ``chunk_rows``), settable after
    scripting.
    """

    __constants__ = ["return_sequences", "go_backwards", "simple"]

    def __init__(self, layers: list[nn.Module], return_sequences: bool, go_backwards: bool) -> None:
        super().__init__()
        self.cells = nn.ModuleList(layers)  # named as the RNN's cells: same state_dict keys
        self.return_sequences = return_sequences
        self.go_backwards = go_backwards
        self.simple = all(isinstance(m, SimpleRNNLayer) and m.inplace for m in layers)
        self.wavefront_max_units = WAVEFRONT_MAX_UNITS
        self.wavefront_max_batch = WAVEFRONT_MAX_BATCH
        self.chunk_rows = CHUNK_ROWS

    def forward(self, x: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[list[Tensor]]]:
        seq = x.flip(1) if self.go_backwards else x
        new_states: list[list[Tensor]] = []
        if self.simple and not torch.is_grad_enabled():
            seq, hs = self._simple_stack(seq, states)
            new_states = [[h] for h in hs]
        else:
            i = 0
            for layer in self.cells:
                seq, state = layer(seq, states[i])
                new_states.append(state)
                i += 1
        y = seq if self.return_sequences else seq[:, -1]
        return y, new_states

    def _simple_stack(self, seq: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[Tensor]]:
        w_ih: list[Tensor] = []
        w_hh: list[Tensor] = []
        bias: list[Tensor] = []
        relu: list[bool] = []
        units = 0
        for layer in self.cells:
            w_i, w_h, b, r = layer.simple_weights()
            relu.append(r)
            w_ih.append(w_i)
            w_hh.append(w_h)
            bias.append(b)
            units += w_h.shape[0]
        h0 = [s[0] for s in states]
        if units <= self.wavefront_max_units and seq.shape[0] <= self.wavefront_max_batch:
            return wavefront(seq, w_ih, w_hh, bias, relu, h0)
        return time_major(seq, w_ih, w_hh, bias, relu, h0, self.chunk_rows)


def fast_loop(rnn: Any, inplace: bool) -> FastLoop:
    """A :class:`FastLoop` over a built torch ``RNN``'s cells (sharing their parameters);
    ``inplace``: SimpleRNN layers write their steps in place when autograd is off."""
    check_built(rnn)
    return FastLoop([layer_for(c, inplace) for c in rnn.cells], rnn.return_sequences, rnn.go_backwards)
