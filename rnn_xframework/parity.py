"""Forward parity: the tutorial's workload on every installed backend and ordering, compared
with the NumPy reference using the same random weights and initial states.

``run()`` returns one :class:`Result` per (backend, ordering, dtype); ``format_table()`` prints
them. The tolerances are the project's stated ones, not tuned to pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rnn_xframework import backends, layers, transfer

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
ORDERINGS = {"timestep": ("timestep", None), "layer": ("layer", None), "torchscript": ("timestep", "torchscript")}


@dataclass(frozen=True)
class Sizes:
    batch: int = 4
    steps: int = 80
    features: int = 100
    units: int = 64
    layers: int = 2


@dataclass
class Result:
    backend: str
    ordering: str
    dtype: str
    device: str
    max_abs: float
    max_rel: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.max_abs <= self.tolerance)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def random_problem(
    sizes: Sizes, dtype: str, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray], list[list[np.ndarray]]]:
    """Inputs ``[batch, steps, features]``, random non-zero canonical weights, random states."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(sizes.batch, sizes.steps, sizes.features)).astype(dtype)
    weights, states, dim = [], [], sizes.features
    for _ in range(sizes.layers):
        weights += [
            rng.uniform(-1, 1, (dim, sizes.units)) * np.sqrt(3.0 / dim),
            rng.uniform(-1, 1, (sizes.units, sizes.units)) * np.sqrt(1.5 / sizes.units),
            rng.uniform(-0.5, 0.5, (sizes.units,)),
        ]
        states.append([rng.uniform(-1, 1, (sizes.batch, sizes.units)).astype(dtype)])
        dim = sizes.units
    return x, [w.astype(dtype) for w in weights], states


def build_rnn(backend: str, sizes: Sizes, dtype: str, order: str, device: Any = None) -> Any:
    kw = {"device": device} if device is not None else {}
    cells = [layers.SimpleRNNCell(sizes.units, backend=backend, dtype=dtype, **kw) for _ in range(sizes.layers)]
    rnn = layers.RNN(cells, return_sequences=True, return_state=True, order=order)
    rnn.build((None, None, sizes.features))
    return rnn


def _flat(y: Any, states: list[list[Any]], ops: backends.Backend) -> np.ndarray:
    parts = [ops.to_numpy(y).ravel()] + [ops.to_numpy(s).ravel() for layer in states for s in layer]
    return np.concatenate(parts).astype(np.float64)


def orderings_for(backend: str) -> list[str]:
    return [o for o in ORDERINGS if ORDERINGS[o][1] is None or backend == "torch"]


def run(
    sizes: Sizes = Sizes(),
    backend_names: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float32", "float64"),
    device: str = "cpu",
    seed: int = 0,
) -> list[Result]:
    """Compare outputs at every step and final states against the NumPy reference."""
    from rnn_xframework import compile as xf_compile

    names = list(backend_names) if backend_names is not None else backends.installed()
    results = []
    for dtype in dtypes:
        x, weights, states = random_problem(sizes, dtype, seed)
        reference = build_rnn("numpy", sizes, dtype, "timestep")
        reference.set_weights(weights)
        expected = _flat(*reference(x, states), backends.get("numpy"))
        for name in names:
            ops = backends.get(name)
            for ordering in orderings_for(ops.name):
                order, method = ORDERINGS[ordering]
                dev = device if ops.name == "torch" else None
                rnn = build_rnn(ops.name, sizes, dtype, order, dev)
                transfer.transfer_weights(reference, rnn)
                if method is not None:
                    rnn = xf_compile(rnn, method)
                native_states = [[ops.from_numpy(s, dev) for s in layer] for layer in states]
                got = _flat(*rnn(ops.from_numpy(x, dev), native_states), ops)
                err = np.abs(got - expected)
                rel = err / np.maximum(np.abs(expected), 1e-30)
                results.append(
                    Result(
                        ops.name,
                        ordering,
                        dtype,
                        device if dev else "cpu",
                        float(err.max()),
                        float(rel.max()),
                        TOLERANCE[dtype],
                    )
                )
    return results


def format_table(results: Sequence[Result], sizes: Sizes) -> str:
    """A plain-text table, one row per comparison against the NumPy reference."""
    head = ("backend", "ordering", "dtype", "device", "max abs err", "max rel err", "tolerance", "result")
    rows = [
        (
            r.backend,
            r.ordering,
            r.dtype,
            r.device,
            f"{r.max_abs:.3e}",
            f"{r.max_rel:.3e}",
            f"{r.tolerance:.0e}",
            "PASS" if r.passed else "FAIL",
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    title = (
        f"Forward parity vs the NumPy reference (batch {sizes.batch}, {sizes.steps} steps, {sizes.features} features, "
        f"{sizes.units} units, {sizes.layers} layers): outputs at every step and final states"
    )
    body = [fmt.format(*row) for row in rows]
    verdict = f"{sum(r.passed for r in results)} passed, {sum(not r.passed for r in results)} failed"
    return "\n".join([title, line, fmt.format(*head), line, *body, line, verdict])
