"""The small functions a ported model's ``forward`` calls where PyTorch has no one-call form of a
Keras layer's behaviour (masked pooling, Keras's BatchNormalization update, right-padded masks
through ``nn.LSTM``, ``"same"`` padding).

Each function uses only ``torch`` (and ``torch.nn.functional as F``), is TorchScript-ready
(typed, tensors in, tensors out) and is written once: the live module calls it and the
generated ``model.py`` carries a verbatim copy (:func:`source_of`), so the two run the same code.
"""

from __future__ import annotations

import inspect
from typing import Tuple  # noqa: UP035 (TorchScript reads these names)

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


def mask_lengths(mask: Tensor) -> Tensor:
    """The lengths of a right-padded mask ``[batch, time]`` (true = a real step); raises for a
    mask with a gap, which ``nn.LSTM``/``nn.GRU``/``nn.RNN`` cannot skip."""
    lengths = mask.sum(1)
    steps = torch.arange(mask.shape[1], device=mask.device)
    if not bool(torch.equal(mask, steps[None, :] < lengths[:, None])):
        raise ValueError(
            "the mask is not right-padded (a masked step before a real one): port the model with "
            "xf.to_torch(model, masks='any') to run its recurrent layers step by step"
        )
    return lengths


def pack(x: Tensor, lengths: Tensor) -> PackedSequence:
    """``x`` ``[batch, time, features]`` packed to its lengths (an empty row keeps one step)."""
    return pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)


def unpack(y: PackedSequence, lengths: Tensor, steps: int, hold: bool) -> Tensor:
    """The padded outputs ``[batch, steps, units]``; at a masked step the last real output when
    ``hold`` (Keras's default), zeros otherwise (``zero_output_for_mask=True``); an empty row is
    all zeros."""
    out, _ = pad_packed_sequence(y, batch_first=True, total_length=steps)
    real = torch.arange(steps, device=out.device)[None, :, None] < lengths[:, None, None]
    if hold:
        last = out[torch.arange(out.shape[0], device=out.device), (lengths - 1).clamp(min=0)]
        out = torch.where(real, out, last[:, None])
    else:
        out = torch.where(real, out, torch.zeros_like(out))
    return torch.where(lengths[:, None, None] > 0, out, torch.zeros_like(out))


def keep_empty(lengths: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """A final state ``[layers, batch, units]``: ``old`` (the initial state) for empty rows."""
    return torch.where(lengths[None, :, None] > 0, new, old)


def masked_mean(x: Tensor, mask: Tensor, keepdim: bool) -> Tensor:
    """Keras's masked ``GlobalAveragePooling1D``: the mean over the real steps of ``x``."""
    m = mask[:, :, None]
    total = torch.where(m, x, torch.zeros_like(x)).sum(1, keepdim=keepdim)
    return total / m.to(x.dtype).sum(1, keepdim=keepdim)


def concat_mask(xs: list[Tensor], masks: list[Tensor | None], dim: int) -> Tensor:
    """Keras's ``Concatenate`` mask: each input's mask (all true where it has none) broadcast to
    the input, concatenated along ``dim``, any() over the last axis."""
    full: list[Tensor] = []
    for x, m in zip(xs, masks):  # noqa: B905 (TorchScript has no strict=)
        if m is None:
            full.append(torch.ones_like(x, dtype=torch.bool))
        else:
            full.append(m[..., None].expand(x.shape))
    return torch.cat(full, dim=dim).any(-1)


def batch_norm(
    x: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor,
    moving_mean: Tensor,
    moving_variance: Tensor,
    momentum: float,
    eps: float,
    training: bool,
) -> Tensor:
    """Keras's ``BatchNormalization`` over the last axis: in training the batch's (biased)
    moments, masked steps left out, and ``moving = moving * momentum + batch * (1 - momentum)``
    (Keras's momentum); otherwise the moving statistics."""
    if training:
        axes = list(range(x.dim() - 1))
        if mask is None:
            mean = x.mean(axes)
            variance = (x - mean).square().mean(axes)
        else:
            m = mask[..., None].expand(x.shape)
            count = m.to(x.dtype).sum(axes) + 1e-7
            mean = torch.where(m, x, torch.zeros_like(x)).sum(axes) / count
            variance = torch.where(m, x - mean, torch.zeros_like(x)).square().sum(axes) / count
        with torch.no_grad():
            moving_mean.copy_(moving_mean * momentum + mean * (1.0 - momentum))
            moving_variance.copy_(moving_variance * momentum + variance * (1.0 - momentum))
    else:
        mean, variance = moving_mean, moving_variance
    inv = torch.rsqrt(variance + eps) * weight
    return x * inv + (bias - mean * inv)


def pad_same(x: Tensor, kernel: int, stride: int, dilation: int, value: float) -> Tensor:
    """``x`` ``[batch, channels, time]`` padded as Keras's ``padding="same"`` (the odd element on the right)."""
    steps = x.shape[-1]
    out = (steps + stride - 1) // stride
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - steps, 0)
    return F.pad(x, [total // 2, total - total // 2], value=value)


HELPERS = (mask_lengths, pack, unpack, keep_empty, masked_mean, concat_mask, batch_norm, pad_same)
IMPORTS = {
    "pack": "from torch.nn.utils.rnn import pack_padded_sequence",
    "unpack": "from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence",
    "pad_same": "import torch.nn.functional as F",
}


def source_of(names: set[str]) -> str:
    """The source of the helpers named, in this module's order (what ``model.py`` carries)."""
    return "\n\n".join(inspect.getsource(f) for f in HELPERS if f.__name__ in names)


__all__ = ["Tuple", *(f.__name__ for f in HELPERS)]
