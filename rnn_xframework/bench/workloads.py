"""Workload shapes for the two-layer RNN benchmark and their FLOP counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from rnn_xframework import layouts

LAYERS = 2
"""Every benchmarked network is a two-layer stack of one cell type (SimpleRNN by default, tanh),
float32, batch-first."""
CELLS = {"SimpleRNN": "SimpleRNNCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}
"""``--cells`` names -> cell types; a workload of another cell than SimpleRNN is named
``"W1 LSTM"``."""


@dataclass(frozen=True)
class Workload:
    """One benchmark shape; the input is ``x[batch, steps, features]``."""

    name: str
    batch: int
    steps: int
    features: int
    units: int
    cell: str = "SimpleRNNCell"

    @property
    def base(self) -> str:
        """The shape without the cell type: ``"W1"`` or ``"BxTxFxU"``."""
        return self.name.split(" ", 1)[0]

    def with_cell(self, cell: str) -> Workload:
        """The same shape for another cell type (``"LSTMCell"``), named ``"W1 LSTM"``."""
        short = next(k for k, v in CELLS.items() if v == cell)
        return replace(self, cell=cell, name=self.base if cell == "SimpleRNNCell" else f"{self.base} {short}")

    def forward_flops(self) -> int:
        """FLOPs of one forward pass of the two-layer SimpleRNN.

        Counting a multiply-add as 2 FLOPs and ignoring bias, activations, gates' elementwise
        work and the initial state, with ``G`` gate blocks (1 SimpleRNN, 4 LSTM, 3 GRU):

        * layer 1: ``2 * batch * steps * G * (features * units + units * units)``
        * layer 2: ``2 * batch * steps * G * (units * units + units * units)``
        """
        b, t, f, u = self.batch, self.steps, self.features, self.units
        g = layouts.get(self.cell).gates
        layer1 = 2 * b * t * g * (f * u + u * u)
        layer2 = 2 * b * t * g * (u * u + u * u)
        return layer1 + layer2

    def flops(self, grad: bool) -> int:
        """FLOPs of one call: forward, or forward + backward.

        The backward pass is counted as about twice the forward (gradients with
        respect to both the inputs and the weights), so forward + backward is
        ``3 * forward_flops()``.
        """
        fwd = self.forward_flops()
        return 3 * fwd if grad else fwd

    def to_dict(self) -> dict[str, int | str]:
        """Plain-dict form for JSON output."""
        return asdict(self)


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
