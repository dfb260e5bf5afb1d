"""Training a SimpleRNN stack compiled with ``"torchscript"``: forward and backward through time
as one ``torch.autograd.Function``, its products batched the way ``nn.RNN``'s are.

Autograd through the per-step loop records two small products per step (the gradient with
respect to ``h`` and the accumulation into ``W_hh``) plus the activation's and the ``stack``'s
backward. Here the forward keeps every layer's output ``H_l [time, batch, units]`` (time-major,
from :func:`~rnn_xframework.backends.torch.compile.script_loops.time_major_all`), and the backward runs, per
layer from the top:

* per step, in place on the incoming gradient ``D [time, batch, units]``: ``D[t] *= act'(H[t])``
  (now ``dL/dz_t``), then ``D[t-1] += D[t] @ W_hh``: one elementwise op and one ``addmm_``
  (:func:`backward_steps`, scripted);
* then whole-sequence GEMMs: ``dW_hh = sum_t dz_t^T h_{t-1}``, ``dW_ih = dZ^T X``,
  ``db = sum dZ``, and ``dX = dZ W_ih``, the next layer's incoming gradient.

The numbers are the chain rule of the same step, summed in another order: gradients agree
with autograd through the uncompiled cells within float rounding (tests/test_fast_paths.py,
including ``torch.autograd.gradcheck``). It is once-differentiable (no double backward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnn_xframework.backends.torch import kinds
from rnn_xframework.backends.torch.compile import script_loops


def backward_steps(d: Tensor, out: Tensor, w_hh: Tensor, relu: bool) -> Tensor:
    """Backward through one layer's steps, in place: ``d [time, batch, units]`` holds ``dL/dh_t``
    from the layer above, the output and the final state; it becomes ``dL/dz_t`` (before the
    activation). ``out [time, batch, units]`` is the layer's output. Returns ``dL/dh_{-1}``,
    the initial state's gradient.

    The activation's derivative is taken per step from ``out[t]`` (ATen's own ``tanh_backward``
    / ``threshold_backward``), not for the whole sequence at once: that needed three passes
    over a fresh full-size buffer, 10% of W3's training step (measured)."""
    steps = d.shape[0]
    for t in range(steps - 1, -1, -1):
        if relu:
            dz = torch.ops.aten.threshold_backward(d[t], out[t], 0.0)
        else:
            dz = torch.ops.aten.tanh_backward(d[t], out[t])
        d[t].copy_(dz)
        if t > 0:
            d[t - 1].addmm_(dz, w_hh)
    return torch.mm(d[0], w_hh)


class Kernels(NamedTuple):
    """The two loops :class:`StackFunction` runs, scripted by
    :func:`rnn_xframework.backends.torch.compile.torchscript.bptt_kernels` (or plain, for tests):
    ``forward`` is :func:`~rnn_xframework.backends.torch.compile.script_loops.time_major_all`, ``backward_steps``
    is :func:`backward_steps`."""

    forward: Callable[..., list[Tensor]]
    backward_steps: Callable[..., Tensor]


class StackFunction(torch.autograd.Function):
    """``apply(x, kernels, relu, n_layers, *h0, *w_ih, *w_hh, *bias) -> (y_tm, *h_T)``: ``x [batch,
    time, in]``, :class:`Kernels`, per layer ``h0 [batch, units]``, ``w_ih [units, in]``, ``w_hh
    [units, units]``, ``bias [units]`` (the cell's ``bias_ih + bias_hh``); ``y_tm [time, batch,
    units_top]`` time-major."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, kernels: Kernels, relu: tuple[bool, ...], n_layers: int, *tensors: Tensor) -> Any:
        h0, w_ih, w_hh, bias = (list(tensors[i * n_layers : (i + 1) * n_layers]) for i in range(4))
        outs = kernels.forward(x, w_ih, w_hh, bias, list(relu), h0)
        ctx.kernels, ctx.relu, ctx.n_layers = kernels, relu, n_layers
        ctx.save_for_backward(x, *h0, *w_ih, *w_hh, *outs)
        return (outs[-1], *(o[-1].clone() for o in outs))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor | None, *grad_states: Tensor | None) -> Any:
        n = ctx.n_layers
        x, *saved = ctx.saved_tensors
        h0, w_ih, w_hh, outs = (saved[i * n : (i + 1) * n] for i in range(4))
        all_needs = ctx.needs_input_grad  # (x, kernels, relu, n_layers, *h0, *w_ih, *w_hh, *bias)
        needs = (all_needs[0], *all_needs[2:])  # as if without kernels
        grads: list[list[Tensor | None]] = [[None] * n for _ in range(4)]  # h0, w_ih, w_hh, bias
        top = outs[-1]
        d = torch.zeros_like(top) if grad_y is None else grad_y.clone(memory_format=torch.contiguous_format)
        grad_x = None
        for i in range(n - 1, -1, -1):
            out = outs[i]
            steps, batch, units = out.shape
            if grad_states[i] is not None:
                d[-1] += grad_states[i]
            grad_h0 = ctx.kernels.backward_steps(d, out, w_hh[i], ctx.relu[i])
            dz = d.view(steps * batch, units)
            if needs[3 + i]:
                grads[0][i] = grad_h0
            if needs[3 + 2 * n + i]:  # sum_t dz_t^T h_{t-1}, h_{-1} = h0: two products, no concatenated copy
                first = d[0].t().mm(h0[i])
                rest = d[1:].view(-1, units).t()
                grads[2][i] = first if steps == 1 else first.addmm_(rest, out[:-1].reshape(-1, units))
            if needs[3 + 3 * n + i]:
                grads[3][i] = dz.sum(0)
            below = x.transpose(0, 1) if i == 0 else outs[i - 1]  # the layer's input, time-major
            if needs[3 + n + i]:
                grads[1][i] = dz.t().mm(below.reshape(steps * batch, below.shape[2]))
            if i > 0 or needs[0]:
                d_below = dz.mm(w_ih[i]).view(steps, batch, w_ih[i].shape[1])
                if i == 0:
                    grad_x = d_below.transpose(0, 1)
                else:
                    d = d_below
        return (grad_x, None, None, None, *(g for group in grads for g in group))


def simple_stack(rnn: Any, kernels: Callable[[], Kernels]) -> Any:
    """For a built torch ``RNN`` whose cells' types all run :class:`~.script_loops.SimpleRNNLayer`
    (:data:`~rnn_xframework.backends.torch.kinds.KINDS`): ``train(x, states) -> (y, states)`` running
    :class:`StackFunction` with ``kernels()`` (same results and flags as the ``RNN``); else ``None``."""
    rows = [kinds.get(c.cell_kind) for c in rnn.cells]
    if not all(row is not None and row.layer_class() is script_loops.SimpleRNNLayer for row in rows):
        return None
    cells = [c.cell for c in rnn.cells]
    relu = tuple(c.nonlinearity == "relu" for c in cells)
    n_layers = len(cells)

    def train(x: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[list[Tensor]]]:
        seq = x.flip(1) if rnn.go_backwards else x
        sums = [script_loops._bias_sum(c.bias_ih, c.bias_hh) for c in cells]
        bias = [c.weight_hh.new_zeros(c.hidden_size) if b is None else b for c, b in zip(cells, sums, strict=True)]
        y_tm, *ends = StackFunction.apply(
            seq,
            kernels(),
            relu,
            n_layers,
            *(s[0] for s in states),
            *(c.weight_ih for c in cells),
            *(c.weight_hh for c in cells),
            *bias,
        )
        y = y_tm.transpose(0, 1) if rnn.return_sequences else y_tm[-1]
        return y, [[h] for h in ends]

    return train
