"""Workload shapes for the two-layer RNN benchmark, their variants (cell type, bidirectional,
masked) and their FLOP counts."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace

from rnn_xframework import layouts

LAYERS = 2
"""Every benchmarked network is a two-layer stack of one cell type (SimpleRNN by default, tanh),
float32, batch-first."""
CELLS = {"SimpleRNN": "SimpleRNNCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}
"""``--cells`` names -> cell types; a workload of another cell than SimpleRNN is named
``"W1 LSTM"``."""
LENGTHS_SEED = 0
"""Seed of a masked workload's random lengths (:meth:`Workload.lengths`): every framework's worker
draws the same lengths."""


@dataclass(frozen=True)
class Workload:
    """One benchmark shape; the input is ``x[batch, steps, features]``.

    ``bidirectional``: each of the two layers runs both directions (PyTorch's ``bidirectional=True``,
    Keras's ``Bidirectional``, concatenated), so layer 2 reads ``2 * units`` features.
    ``masked``: the sequences have random lengths (:meth:`lengths`), right-padded to ``steps``.
    """

    name: str
    batch: int
    steps: int
    features: int
    units: int
    cell: str = "SimpleRNNCell"
    bidirectional: bool = False
    masked: bool = False

    @property
    def base(self) -> str:
        """The shape without the cell type and variant: ``"W1"`` or ``"BxTxFxU"``."""
        return self.name.split(" ", 1)[0]

    def variant(self, cell: str | None = None, *, bidirectional: bool = False, masked: bool = False) -> Workload:
        """The same shape for a cell type (default: this one) and variant, named
        ``"W1 LSTM bi masked"`` (no cell name for SimpleRNN; ``bi`` / ``masked`` when set)."""
        cell = cell or self.cell
        short = next(k for k, v in CELLS.items() if v == cell)
        parts = [self.base, *([short] if cell != "SimpleRNNCell" else [])]
        parts += [*(["bi"] if bidirectional else []), *(["masked"] if masked else [])]
        return replace(self, cell=cell, name=" ".join(parts), bidirectional=bidirectional, masked=masked)

    def lengths(self) -> list[int]:
        """The sequence lengths: for a masked workload each drawn uniformly from
        ``[ceil(steps / 2), steps]`` with :data:`LENGTHS_SEED` (the same on every framework), else
        ``steps`` for every sequence. Sequence ``i`` is real at steps ``t < lengths[i]``."""
        if not self.masked:
            return [self.steps] * self.batch
        rng = random.Random(LENGTHS_SEED)
        return [rng.randint(math.ceil(self.steps / 2), self.steps) for _ in range(self.batch)]

    def forward_flops(self) -> int:
        """FLOPs of one forward pass of the two-layer stack.

        Counting a multiply-add as 2 FLOPs and ignoring bias, activations, gates' elementwise
        work and the initial state, with ``G`` gate blocks (1 SimpleRNN, 4 LSTM, 3 GRU), ``D``
        directions (2 when bidirectional) and ``S`` real steps (``batch * steps``, or the sum of
        :meth:`lengths` when masked: padding is not counted as work):

        * layer 1: ``D * 2 * S * G * (features * units + units * units)``
        * layer 2: ``D * 2 * S * G * (D * units * units + units * units)``
        """
        f, u = self.features, self.units
        g = layouts.get(self.cell).gates
        d = 2 if self.bidirectional else 1
        s = sum(self.lengths())
        layer1 = d * 2 * s * g * (f * u + u * u)
        layer2 = d * 2 * s * g * (d * u * u + u * u)
        return layer1 + layer2

    def flops(self, grad: bool) -> int:
        """FLOPs of one call: forward, or forward + backward.

        The backward pass is counted as about twice the forward (gradients with
        respect to both the inputs and the weights), so forward + backward is
        ``3 * forward_flops()``.
        """
        fwd = self.forward_flops()
        return 3 * fwd if grad else fwd

    def to_dict(self) -> dict[str, object]:
        """Plain-dict form for JSON output (with the ``lengths`` of a masked workload)."""
        return {**asdict(self), **({"lengths": self.lengths()} if self.masked else {})}


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", batch=4, steps=80, features=100, units=64),
    "W2": Workload("W2", batch=64, steps=100, features=256, units=256),
    "W3": Workload("W3", batch=128, steps=200, features=512, units=512),
}
"""The default workloads, keyed by name."""


def gemm_flops(n: int) -> int:
    """FLOPs of one ``n x n`` by ``n x n`` matrix product (``2 * n**3``)."""
    return 2 * n**3


def parse_workload(text: str) -> Workload:
    """A name from :data:`WORKLOADS`, or ``BxTxFxU`` for a custom shape."""
    if text in WORKLOADS:
        return WORKLOADS[text]
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"workload {text!r}: use one of {list(WORKLOADS)} or BxTxFxU")
    b, t, f, u = (int(p) for p in parts)
    return Workload(text, batch=b, steps=t, features=f, units=u)
