"""``xf.compile(Bidirectional, "cpu")``: both directions in one call, without the per-layer glue.

A compiled ``Bidirectional`` is its backend's ``Bidirectional`` over two compiled RNNs
(:func:`rnn_xframework.compiled.recompile_bidirectional`); :class:`FusedBidirectional` is the torch
mixin of its class. Where both RNNs are ``"cpu"``-compiled (what ``"auto"`` picks on the CPU), a call
runs their C loops (:class:`~rnn_xframework.backends.torch.compile.cpu.CpuLoop`) directly: each
RNN's checks once, the backward direction's output flipped back to time order by one ``torch.flip``
(the generic layer restacked every step), merged. W1 (batch 4, 80 steps, 100 features, 64 units, two
``Bidirectional`` layers, forward, the bench): an LSTM pair 1.27 ms, 1.51 ms as two compiled RNNs
(``nn.LSTM(bidirectional=True)``: 2.09 / 2.01 ms in the same runs); GRU 0.98 ms, 1.31 before
(``nn.GRU``: 4.42 / 4.97 ms).

Masks: a right-padded mask (``mask[b, t] == (t < length[b])``, a ``PackedSequence``'s) runs both
directions in the C loop (:meth:`~rnn_xframework.backends.torch.compile.cpu_masked.CpuMaskedLoop.right_padded`),
the batch sorted longest first once for both (a batch the C loop runs in its own order -- at most 8
rows, autograd off -- is not sorted), the backward direction over each row reversed
within its length (PyTorch's packed bidirectional order; TensorFlow's ``reverse_sequence``), which
is right-padded again: Keras's ``go_backwards`` over a right-padded row holds its initial state
through the padding and then runs the real steps last to first, which is what this computes. Its
outputs are reversed back the same way, the two merged in the sorted order and restored once.
Keras's semantics otherwise as the RNNs' own masked calls (``zero_output_for_mask``, which
``Bidirectional`` sets to ``return_sequences``; NaN in padding reaching nothing).

Every other call defers to the two compiled RNNs (``super().run``, same results within float
rounding): another method, a mask with gaps or left padding, dropout in training, a layer the C
loop does not run, a device other than the CPU, an empty batch, hooks on the compiled RNNs.

Running the two directions on two threads was measured and not kept: in a prototype, Python
threads around the two C loops (which release the GIL) took the W1 LSTM pair from 1.14 to 1.39 ms,
the GIL changing hands at every short torch call of the other thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnn_xframework import bidirectional, compiled
from rnn_xframework.backends.torch.compile import compiled_module, cpu, cpu_masked, masked_loops


def reversal_index(lengths: np.ndarray, steps: int) -> np.ndarray:
    """``int64 [batch, steps]``: row ``b`` reversed within its length (``length - 1 - t`` for
    ``t < length``, ``t`` after it); its own inverse."""
    t = np.arange(steps)
    n = np.asarray(lengths, dtype=np.int64)[:, None]
    return np.where(t < n, n - 1 - t, t)


def _take_steps(seq: Tensor, rows: np.ndarray) -> Tensor:
    """``seq [batch, time, n]`` with step ``(b, t)`` taken from flat step ``rows[b, t]`` (``b' * time +
    t'``): one ``index_select`` of whole rows (a gather along time moves elements one by one)."""
    batch, steps, n = seq.shape
    flat = seq.reshape(batch * steps, n).index_select(0, torch.from_numpy(rows.reshape(-1)))
    return flat.view(batch, steps, n)


def _right_padded_pair(
    f: Any, b: Any, x: Tensor, states: tuple[Any, Any], keep: Tensor, lengths: np.ndarray, sequences: bool
) -> tuple[Tensor, Tensor, Any, Any, Tensor | None]:
    """Both directions of a right-padded call in the C loop, the batch sorted once for both (where
    :func:`~rnn_xframework.backends.torch.compile.cpu_masked.sorts_rows`): ``(y, y_rev, states_f,
    states_b, inverse)``, the outputs in the sorted order (``inverse`` restores the caller's; ``None``:
    it was sorted, or stays unsorted) and in time order, the states in the caller's."""
    states_f, states_b = states
    steps = x.shape[1]
    order = inverse = None
    if cpu_masked.sorts_rows(x.shape[0]) and bool((lengths[:-1] < lengths[1:]).any()):
        sort = np.argsort(-lengths, kind="stable")
        lengths, order = lengths[sort], torch.from_numpy(sort)
        inverse = torch.from_numpy(np.argsort(sort, kind="stable"))
        keep = keep.index_select(0, order)
        states_f = [[s.index_select(0, order) for s in layer] for layer in states_f]
        states_b = [[s.index_select(0, order) for s in layer] for layer in states_b]
    within = reversal_index(lengths, steps)  # sorted row i reversed within its length
    first = np.arange(len(lengths))[:, None] * steps
    source = first if order is None else order.numpy()[:, None] * steps
    x_f = x if order is None else x.index_select(0, order)
    y, states_f = f.masked_loop.right_padded(x_f, states_f, keep, lengths)  # no permutation inside
    y_rev, states_b = b.masked_loop.right_padded(_take_steps(x, source + within), states_b, keep, lengths)
    if sequences:
        y_rev = _take_steps(y_rev, first + within)
    if inverse is not None:
        states_f = [[s.index_select(0, inverse) for s in layer] for layer in states_f]
        states_b = [[s.index_select(0, inverse) for s in layer] for layer in states_b]
    return y, y_rev, states_f, states_b, inverse


def _fusable(layer: Any) -> bool:
    """A built ``"cpu"``-compiled torch RNN with no hooks of its own (a fused call skips its ``forward``)."""
    return (
        isinstance(layer, compiled_module.CompiledRNN)
        and layer.built
        and isinstance(layer.loop, cpu.CpuLoop)
        and not (layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks)
    )


class FusedBidirectional:
    """The torch mixin of a compiled ``Bidirectional``'s class (``TorchBackend.fused_bidirectional``):
    :meth:`run` as the module docstring says. Shapes as ``Bidirectional``'s: ``inputs [batch, time,
    features]`` (``[time, batch, features]`` with ``time_major``), ``mask [batch, time]``."""

    forward_layer: Any
    backward_layer: Any

    def run(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        f, b = self.forward_layer, self.backward_layer
        if not (_fusable(f) and _fusable(b) and isinstance(inputs, Tensor) and inputs.device.type == "cpu"):
            return super().run(inputs, initial_state, training, mask)  # type: ignore[misc]
        if training and (compiled.has_dropout(f.source) or compiled.has_dropout(b.source)):
            return super().run(inputs, initial_state, training, mask)  # type: ignore[misc]
        forward_state, backward_state = bidirectional.split_state(initial_state)
        states_f = f.check_call(inputs, forward_state, training, mask)  # the RNNs' own checks and errors
        states_b = b.check_call(inputs, backward_state, training, mask)
        x = inputs.transpose(0, 1) if self.time_major else inputs
        batch = x.shape[0]
        lengths = keep = None
        if mask is not None:
            keep = masked_loops.as_mask(mask, x)
            lengths, padded = cpu_masked.read_mask(keep) if batch > 0 else (None, -1)
            runs = f.masked_loop.kernel_layers and b.masked_loop.kernel_layers
            if lengths is None or not runs:
                return super().run(inputs, initial_state, training, mask)  # type: ignore[misc]
            if padded == 0:
                lengths = None  # every step real: the unmasked loops (oneDNN's LSTM included)
        states_f = states_f if states_f is not None else f.source.cell.get_initial_state(batch)
        states_b = states_b if states_b is not None else b.source.cell.get_initial_state(batch)
        inverse = None
        if lengths is None:
            # processing order for the backward direction: last step first
            (y, states_f), (y_rev, states_b) = f.loop.run_both(b.loop, x, states_f, states_b)
            if self.return_sequences:
                y_rev = y_rev.flip(1)
        else:
            pair = (states_f, states_b)
            y, y_rev, states_f, states_b, inverse = _right_padded_pair(
                f, b, x, pair, keep, lengths, self.return_sequences
            )
        if torch.is_grad_enabled():
            y, states_f = compiled_module.defined_gradients(y, states_f)
            y_rev, states_b = compiled_module.defined_gradients(y_rev, states_b)
        merged = self._merge(y, y_rev)  # type: ignore[attr-defined]
        outputs = merged if isinstance(merged, list) else [merged]  # merge_mode=None: [y, y_rev]
        if inverse is not None:  # merged in the sorted order (merging is per row), then restored once
            outputs = [o.index_select(0, inverse) for o in outputs]
        if self.time_major and self.return_sequences:
            outputs = [o.transpose(0, 1) for o in outputs]
        output = outputs if isinstance(merged, list) else outputs[0]
        return (output, [*states_f, *states_b]) if self.return_state else output
