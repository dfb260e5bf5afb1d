"""The TorchScript-ready layer of Keras's ``GRUCell(reset_after=False)`` on torch, for
``GRULayer.of`` in :mod:`~rnn_xframework.backends.torch.compile.script_loops` (``"torchscript"``,
``"inductor"``, ``torch.jit.script`` of an ``RNN``, and the saved form of ``"cpu"``).

``torch.nn.GRUCell`` cannot express this form (its reset gate multiplies the recurrent product);
the library's torch cell holds its parameters under PyTorch's names and gate order (``r, z, n``;
the one Keras bias in ``bias_ih``, ``bias_hh`` zero unless trained), so the layer reads them as
:class:`~rnn_xframework.backends.torch.compile.script_loops.GRULayer` reads ``nn.GRUCell``'s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnn_xframework.backends.torch.compile.spec_layer import project
from rnn_xframework.errors import UnsupportedConfigError


class GRUResetBeforeLayer(nn.Module):
    """``z, r = sigmoid(xp_zr + h U_zr + b'_zr)``, ``h~ = tanh(xp_h + (r * h) U_h + b'_h)``,
    ``h' = z * h + (1 - z) * h~``; ``xp = x W^T + b`` for the whole sequence in one GEMM."""

    __constants__ = ["gz", "gr", "gh"]

    def __init__(self, cell: nn.Module, positions: list[int]) -> None:
        super().__init__()
        self.cell = cell
        self.gz, self.gr, self.gh = positions
        if self.gh != 2:
            raise UnsupportedConfigError(f"GRU reset_after=False: expected the candidate block last, got {positions}")

    def simple_weights(self) -> tuple[Tensor, Tensor, Tensor, bool]:
        raise RuntimeError("simple_weights: not a SimpleRNN layer")

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        hid = c.weight_hh.shape[1]
        xp = project(seq, c.weight_ih, c.bias_ih)
        u_gates = c.weight_hh[: 2 * hid].t().contiguous()
        u_h = c.weight_hh[2 * hid :].t().contiguous()
        b = c.bias_hh
        h = state[0]
        outs: list[Tensor] = []
        for xt in xp.unbind(1):
            hg = torch.mm(h, u_gates) if b is None else torch.addmm(b[: 2 * hid], h, u_gates)
            xg = xt.chunk(3, 1)
            hzr = hg.chunk(2, 1)
            r = torch.sigmoid(xg[self.gr] + hzr[self.gr])
            z = torch.sigmoid(xg[self.gz] + hzr[self.gz])
            rh = r * h
            hh = torch.mm(rh, u_h) if b is None else torch.addmm(b[2 * hid :], rh, u_h)
            n = torch.tanh(xg[self.gh] + hh)
            h = z * h + (1 - z) * n
            outs.append(h)
        return torch.stack(outs, 1), [h]
