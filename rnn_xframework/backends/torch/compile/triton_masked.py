"""Masked calls of ``xf.compile(rnn, "triton")``: a right-padded batch in the persistent kernels.

A mask whose rows are real up to a length and padding after it (``mask[b, t] == (t < length[b])``,
a ``PackedSequence``'s; what ``Embedding(mask_zero=True)`` gives for right-padded tokens) runs the
same launches as an unmasked call, each row holding its state once its length is reached
(:func:`~rnn_xframework.kernels.triton.persistent.forward_kernel` with ``MASKED``: a select per
step, no sorting, no extra launch); the backward passes the held rows' gradients through. The mask
is checked on the device (one host sync for the answer).

Keras's semantics, as the other compiled masked calls (:mod:`~rnn_xframework.backends.torch.compile.cpu_masked`):
the final states are each row's last real step's (the initial state for an empty row); a padding
step's output is the row's last real output (zeros for an empty row), or zeros with
``zero_output_for_mask``; where autograd records, padding inputs become zeros before the
projection, so NaN or inf in padding reaches no result and no gradient (forward, the kernels'
select never lets a padding step's projection through).

Every other masked call runs ``fallback``, the scripted masked loop (Keras's masked loop in
TorchScript; same results): a mask with gaps or left padding, ``go_backwards``, dropout in
training (the cells' own masks), a layer too wide for one program (the column-split kernels take
no lengths), an empty batch. On the CPU both need Triton's interpreter, as unmasked calls do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def right_padded_lengths(keep: Tensor) -> Tensor | None:
    """``int32 [batch]`` lengths of ``keep [batch, time]`` (bool, any device) if every row is real
    up to its length and padding after it, else ``None``: the rule of
    :func:`~rnn_xframework.backends.torch.compile.cpu_masked.read_mask`, on the mask's own device
    (that one reads a CPU mask in one C pass, for the C loop's host-side sort)."""
    lengths = keep.sum(1, dtype=torch.int32)
    steps = torch.arange(keep.shape[1], device=keep.device)
    return lengths if bool(torch.equal(keep, steps[None, :] < lengths[:, None])) else None


class TritonMaskedLoop:
    """``(x [batch, time, in], states, keep [batch, time] bool, xm, hm) -> (y, states)``: the masked
    loop of a ``"triton"``-compiled RNN (``CompiledRNN.masked_loop``). ``runner`` is its
    :class:`~rnn_xframework.backends.torch.compile.triton.StackRunner` (called with ``lengths``;
    its ``check`` refuses what the kernels cannot run), ``fallback`` the scripted masked loop."""

    def __init__(self, runner: Any, fallback: Any, zero_output: bool) -> None:
        self.runner = runner
        self.fallback = fallback
        self.zero_output = zero_output
        self.runs_lengths = not runner.rnn.go_backwards and not any(split for _, _, split in runner.plans)

    def __call__(
        self, x: Tensor, states: list[list[Tensor]], keep: Tensor, xm: list[list[Tensor]], hm: list[list[Tensor]]
    ) -> tuple[Tensor, list[list[Tensor]]]:
        self.runner.check(x)  # the unmasked call's refusals (CPU tensors without the interpreter, other dtypes)
        lengths = None
        if self.runs_lengths and not (any(xm) or any(hm)) and x.shape[0] > 0:
            lengths = right_padded_lengths(keep)
        if lengths is None:
            return self.fallback(x, states, keep, xm, hm)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        seq = torch.where(keep.unsqueeze(2), x, zero) if torch.is_grad_enabled() else x
        y, new_states = self.runner(seq, states, lengths)
        real = keep.unsqueeze(2) if self.runner.rnn.return_sequences else keep[:, -1:]
        if self.zero_output:
            y = torch.where(real, y, zero)
        else:  # an empty row's held output is its initial state; Keras's is zeros
            y = torch.where((lengths > 0).view(-1, *[1] * (y.dim() - 1)), y, zero)
        return y, new_states
