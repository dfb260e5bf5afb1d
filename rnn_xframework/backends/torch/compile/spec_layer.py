"""The compiled loop of a cell type without a ``torch.nn`` cell (no row in
:data:`~rnn_xframework.backends.torch.kinds.KINDS`, such as a registered ``MGUCell``):
:class:`SpecLayer`, the layer-major loop of :mod:`~rnn_xframework.backends.torch.compile.script_loops`
around the spec's own step, traced once (``torch.jit.trace``) so that TorchScript can call it.
``xf.compile(rnn, "auto")`` therefore compiles every registered cell type on torch."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework import cells
from rnn_xframework.backends.torch.step import STEP_OPS


def project(seq: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``seq [batch, time, in] @ weight^T (+ bias)`` -> ``[batch, time, G*units]`` in one GEMM.

    Batch-major throughout: the reshape is a view (no copy of the input), and step ``t`` reads
    ``xp[:, t]``, a strided ``[batch, G*units]`` matrix that BLAS takes as it is."""
    b, t = seq.shape[0], seq.shape[1]
    flat = seq.reshape(b * t, seq.shape[2])
    out = torch.mm(flat, weight.t()) if bias is None else torch.addmm(bias, flat, weight.t())
    return out.view(b, t, weight.shape[0])


class SpecStep(nn.Module):
    """One step of a spec, ``(xp [batch, G*units], u [units, G*units], b [G*units], states) ->
    (out, states)``: ``xp`` the step's input projection (input bias included), ``u`` the canonical
    recurrent kernel, ``b`` the recurrent bias (zeros where the layout has one bias row). No
    parameters of its own: :class:`SpecLayer` traces it once and passes the cell's weights in."""

    def __init__(self, spec: Any, config: dict[str, Any]) -> None:
        super().__init__()
        self.spec, self.config = spec, config

    def forward(self, xp: Tensor, u: Tensor, b: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        w = cells.StepWeights(None, u, None, b)
        recurrent = cells.recurrent_product(w, self.config["units"], self.spec.n_gates)
        out, new = self.spec.step(STEP_OPS, self.config, xp, recurrent, list(states))
        return out, list(new)


class SpecLayer(nn.Module):
    """The layer-major loop for a cell type without a ``torch.nn`` cell: ``xp = seq @ W^T + b`` in
    one product, then the spec's step per time step (:class:`SpecStep`, traced: the spec's Python
    formula becomes a graph the scripted loop calls). The cell's parameters (``cell.weight_ih``,
    ...) are read in canonical gate order (``perm``) on every call, so gradients reach them."""

    __constants__ = ["two_biases"]

    def __init__(self, cell: Any) -> None:
        super().__init__()
        self.cell = cell.cell  # the parameters, under the name every layer uses
        self.two_biases = cell.layout.bias_rows == 2
        order = cell.layout.torch_order or tuple(range(cell.gates))
        u = cell.units
        self.register_buffer("perm", torch.cat([torch.arange(u) + u * order[g] for g in range(cell.gates)]), False)
        n, dt, dev = cell.gates * u, cell.cell.weight_hh.dtype, cell.cell.weight_hh.device
        example = (torch.zeros(1, n, dtype=dt, device=dev), torch.zeros(u, n, dtype=dt, device=dev))
        states = [torch.zeros(1, u, dtype=dt, device=dev)] * cell.spec.n_states
        example += (torch.zeros(n, dtype=dt, device=dev), states)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            self.step = torch.jit.trace(SpecStep(cell.spec, dict(cell.config)), example, strict=False)

    @classmethod
    def of(cls, cell: Any, inplace: bool) -> SpecLayer:
        return cls(cell)

    def simple_weights(self) -> tuple[Tensor, Tensor, Tensor, bool]:
        raise RuntimeError("simple_weights: not a SimpleRNN layer")

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        w_ih = c.weight_ih.index_select(0, self.perm)
        u = c.weight_hh.index_select(0, self.perm).t().contiguous()
        b_ih, b_hh = c.bias_ih, c.bias_hh
        b_in: Tensor | None = None
        b_rec = u.new_zeros(u.shape[1])
        if b_ih is not None and b_hh is not None:
            if self.two_biases:
                b_in, b_rec = b_ih.index_select(0, self.perm), b_hh.index_select(0, self.perm)
            else:
                b_in = (b_ih + b_hh).index_select(0, self.perm)
        xp = project(seq, w_ih, b_in)
        outs: list[Tensor] = []
        for xt in xp.unbind(1):
            out, state = self.step(xt, u, b_rec, state)
            outs.append(out)
        return torch.stack(outs, 1), state
