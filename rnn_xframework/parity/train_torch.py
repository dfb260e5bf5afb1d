"""The parity suite's training half on PyTorch: gradients with ``torch.autograd`` and one step of
``torch.optim.SGD`` / ``torch.optim.Adam`` set up as Keras's (:mod:`rnn_xframework.parity.training`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from rnn_xframework import layouts, protocol, registry
from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.parity.training import Gradients, Optimizer

OPS = registry.get("torch")


def _loss(model: Any, x: Any, states: Any, loss_weights: Any, device: Any) -> tuple[Any, Any, Any]:
    xt = OPS.from_numpy(x, device).requires_grad_()
    st = [[OPS.from_numpy(s, device).requires_grad_() for s in layer] for layer in states]
    y, final = model(xt, st)
    w_y, w_states = loss_weights
    loss = (y * OPS.from_numpy(w_y, device)).sum()
    for layer, weights in zip(final, w_states, strict=True):
        for s, w in zip(layer, weights, strict=True):
            loss = loss + (s * OPS.from_numpy(w, device)).sum()
    return loss, xt, st


def loss_and_grads(model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Gradients:
    """``torch.autograd``; weight gradients mapped to the canonical layout by the cell's layout.

    Each trainable torch parameter is one canonical weight rearranged (``weight_ih`` is
    ``kernel.T``, ``bias_ih`` is ``bias``), so the canonical gradient is the same rearrangement
    of the parameter gradients; the frozen ``bias_hh`` counts as zero. Cells built with
    ``train_recurrent_bias=True`` have two trainable biases for one canonical bias and are refused.
    """
    cells = protocol.cells_of(model)
    if any(getattr(c, "train_recurrent_bias", False) for c in cells):
        raise UnsupportedConfigError(
            "canonical gradients need bias_hh frozen (train_recurrent_bias=False): with both biases "
            "trainable, one canonical bias has two torch parameters"
        )
    named = [(i, name, p) for i, c in enumerate(cells) for name, p in c.cell.named_parameters()]
    trainable = [p for _, _, p in named if p.requires_grad]
    loss, xt, st = _loss(model, x, states, loss_weights, device)
    flat_states = [s for layer in st for s in layer]
    grads = iter(torch.autograd.grad(loss, [xt, *flat_states, *trainable], allow_unused=True))
    grad_x = OPS.to_numpy(next(grads))
    grad_states = [[OPS.to_numpy(next(grads)) for _ in layer] for layer in st]
    per_cell: list[dict[str, np.ndarray]] = [{} for _ in cells]
    for i, name, p in named:
        g = next(grads) if p.requires_grad else None
        per_cell[i][name] = OPS.to_numpy(g) if g is not None else np.zeros(tuple(p.shape), OPS.dtype_name(p))
    weights = [w for c, g in zip(cells, per_cell, strict=True) for w in layouts.of(c).from_torch(g, own=True)]
    return Gradients(float(loss.detach()), grad_x, grad_states, weights)


def adam_epsilon(optimizer: Optimizer) -> float:
    """Keras's Adam adds ``epsilon`` to ``sqrt(v)``, torch's to ``sqrt(v / (1 - beta_2**t))``;
    for the first step they agree exactly with ``eps_torch = epsilon / sqrt(1 - beta_2)``."""
    return optimizer.epsilon / math.sqrt(1.0 - optimizer.beta_2)


def train_step(model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Optimizer, device: Any = None) -> float:
    """One step of ``torch.optim.SGD`` / ``torch.optim.Adam`` set up as Keras's (see :func:`adam_epsilon`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=optimizer.learning_rate, momentum=0.0)
    elif optimizer.name == "adam":
        betas = (optimizer.beta_1, optimizer.beta_2)
        opt = torch.optim.Adam(params, lr=optimizer.learning_rate, betas=betas, eps=adam_epsilon(optimizer))
    else:
        raise UnsupportedConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer.name!r}")
    opt.zero_grad(set_to_none=True)
    loss, _, _ = _loss(model, x, states, loss_weights, device)
    loss.backward()
    opt.step()
    return float(loss.detach())


def frozen_parameters(model: Any) -> dict[str, np.ndarray]:
    """``bias_hh`` of each cell (unless ``train_recurrent_bias=True``), by parameter name."""
    return {name: OPS.to_numpy(p) for name, p in model.named_parameters() if not p.requires_grad}
