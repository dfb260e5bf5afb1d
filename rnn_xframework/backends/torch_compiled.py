"""The torch side of ``xf.compile``: :class:`CompiledRNN`, the ``torch.nn.Module`` that the
``"torchscript"`` and ``"inductor"`` methods return around their loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework import compiled

Loop = Callable[[Tensor, list[list[Tensor]]], tuple[Tensor, list[list[Tensor]]]]


class CompiledRNN(compiled.CompiledRNN, nn.Module):
    """An RNN whose time loop runs in ``loop`` (scripted or compiled); called and answering
    exactly like the source: ``y = fast(x, initial_state=None, training=None)``.

    Parameters live in ``source`` only, so training or ``set_weights`` on either object shows in
    the other. Dropout in training and ``mask`` are refused (:class:`UnsupportedConfigError`):
    the fast loop has neither, and it never silently takes the slow path. ``train``, where given,
    replaces ``loop`` while autograd is on (same call and results; see
    :mod:`~rnn_xframework.backends.torch_bptt`).
    """

    backend = "torch"

    def __init__(self, rnn: Any, loop: Loop, method: str, train: Loop | None = None) -> None:
        nn.Module.__init__(self)
        self._init_compiled(rnn, method)
        object.__setattr__(self, "loop", loop)  # not submodules: parameters counted once
        object.__setattr__(self, "train_loop", train)

    def forward(self, inputs: Tensor, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        source = self.source
        states = self.check_call(inputs, initial_state, training, mask)
        if states is None:
            states = source.cell.get_initial_state(inputs.shape[0])
        run = self.train_loop if self.train_loop is not None and torch.is_grad_enabled() else self.loop
        y, states = run(inputs, states)
        return (y, states) if source.return_state else y
