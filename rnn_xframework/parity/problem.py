"""One parity problem: random inputs, weights, initial states and loss weights, and the models
that run it on any backend, ordering and device.

Everything here is framework-free; models are built through :mod:`rnn_xframework.layers` and
receive the problem's weights through :func:`rnn_xframework.transfer_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rnn_xframework import cells, layers, layouts, orderings, registry, transfer
from rnn_xframework.compile import compile as compile_rnn


@dataclass(frozen=True)
class Sizes:
    """The tutorial's workload by default: batch 4, 80 steps, 100 features, 64 units, 2 layers."""

    batch: int = 4
    steps: int = 80
    features: int = 100
    units: int = 64
    layers: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"sizes: {f.name} must be a positive integer, got {value!r}")

    def describe(self) -> str:
        s = self
        return f"batch {s.batch}, {s.steps} steps, {s.features} features, {s.units} units, {s.layers} layers"


@dataclass
class Problem:
    """Arrays of one comparison, all NumPy, all of ``dtype``.

    Attributes:
        kind: the cell type (``"SimpleRNNCell"``).
        x: inputs ``[batch, steps, features]``.
        weights: canonical weights of the whole stack, layer after layer.
        states: initial states, one list per layer of ``[batch, state_size]`` arrays.
        loss_weights: ``(w_y [batch, steps, units], [[w_s [batch, state_size], ...] per layer])``;
            the loss is ``sum(y * w_y) + sum(final_state * w_s)``.
        mask: ``[batch, steps]`` bool for the masked checks: right-padded, each row's length drawn
            in ``[steps/2, steps]``, the first row full, the last ``steps/2`` (``None`` in golden files
            written before).
    """

    kind: str
    dtype: str
    sizes: Sizes
    x: np.ndarray
    weights: list[np.ndarray]
    states: list[list[np.ndarray]]
    loss_weights: tuple[np.ndarray, list[list[np.ndarray]]]
    mask: np.ndarray | None = None


def cell_kinds(backend_names: list[str]) -> list[str]:
    """Registered cell types that at least one of these backends implements."""
    return [k for k in cells.names() if any(registry.get(b).supports(cells.get(k)) for b in backend_names)]


def orderings_for(backend: str, device: str | None = None) -> list[str]:
    """``timestep`` and ``layer`` everywhere, plus each compile method of this backend that
    compiles in about a second (not in the backend's ``slow_to_compile``) and runs on ``device``
    (the backend's ``cuda_only`` methods on ``"cuda"`` only; ``None``: every device)."""
    be = registry.get(backend)
    fast = (m for m in be.compile_methods if m not in be.slow_to_compile)
    return [*orderings.ORDERS, *(m for m in fast if device in (None, "cuda") or m not in be.cuda_only)]


def random_weights(rng: np.random.Generator, kind: str, sizes: Sizes, dtype: str) -> list[np.ndarray]:
    """Non-zero canonical weights from the layout's shapes: kernels ``U(-1,1)*sqrt(3/fan_in)``,
    recurrent kernels ``U(-1,1)*sqrt(1.5/units)`` (a stable recurrence), biases ``U(-0.5,0.5)``."""
    layout, weights, dim = layouts.get(kind), [], sizes.features
    for _ in range(sizes.layers):
        for name, shape in layout.shapes(dim, sizes.units, use_bias=True):
            if name == "kernel":
                w = rng.uniform(-1, 1, shape) * np.sqrt(3.0 / dim)
            elif name == "recurrent_kernel":
                w = rng.uniform(-1, 1, shape) * np.sqrt(1.5 / sizes.units)
            else:
                w = rng.uniform(-0.5, 0.5, shape)
            weights.append(w.astype(dtype))
        dim = sizes.units
    return weights


def random_problem(kind: str, sizes: Sizes, dtype: str, seed: int = 0) -> Problem:
    """A problem whose states follow ``cell.state_sizes`` of a reference cell of ``kind``."""
    rng = np.random.default_rng(seed)
    state_sizes = [sizes.units] * cells.get(kind).n_states
    x = rng.normal(size=(sizes.batch, sizes.steps, sizes.features)).astype(dtype)
    weights = random_weights(rng, kind, sizes, dtype)

    def per_layer() -> list[list[np.ndarray]]:
        return [[rng.uniform(-1, 1, (sizes.batch, n)).astype(dtype) for n in state_sizes] for _ in range(sizes.layers)]

    states = per_layer()
    loss_weights = (rng.uniform(-1, 1, (sizes.batch, sizes.steps, sizes.units)).astype(dtype), per_layer())
    lengths = rng.integers((sizes.steps + 1) // 2, sizes.steps + 1, sizes.batch)
    lengths[-1], lengths[0] = (sizes.steps + 1) // 2, sizes.steps  # never all real (batch > 1)
    mask = np.arange(sizes.steps)[None, :] < lengths[:, None]
    return Problem(kind, dtype, sizes, x, weights, states, loss_weights, mask)


def build(problem: Problem, backend: str, ordering: str = "timestep", device: str = "cpu", source: Any = None) -> Any:
    """An ``RNN`` (``return_sequences`` and ``return_state``) of ``problem.kind`` on ``backend``.

    It holds the problem's weights: moved from ``source`` (another model of the problem) with
    :func:`~rnn_xframework.transfer_weights`, or set directly when there is none. It is compiled
    when ``ordering`` names a compile method (``"torchscript"``).
    """
    sizes = problem.sizes
    kw = {} if device == "cpu" else {"device": device}
    stack = [
        layers.make_cell(problem.kind, backend=backend, units=sizes.units, dtype=problem.dtype, **kw)
        for _ in range(sizes.layers)
    ]
    order = ordering if ordering in orderings.ORDERS else "timestep"
    rnn = layers.RNN(stack, return_sequences=True, return_state=True, order=order)
    rnn.build((None, None, sizes.features))
    if source is not None:
        transfer.transfer_weights(source, rnn)
    else:
        rnn.set_weights(problem.weights)
    return rnn if ordering in orderings.ORDERS else compile_rnn(rnn, ordering)
