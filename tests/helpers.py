"""Test helpers: random non-zero problems and conversions to and from native tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from rnn_xframework import backends, cells, layers


def native(backend: str, a: Any, device: Any = None) -> Any:
    return backends.get(backend).from_numpy(a, device)


def numpy(backend: str, x: Any) -> np.ndarray:
    return backends.get(backend).to_numpy(x)


def random_weights(rng: np.random.Generator, dims: list[int], units: int, dtype: str) -> list[np.ndarray]:
    """Canonical weights for a stack whose layers take ``dims[i]`` features: non-zero, bounded."""
    weights = []
    for dim in dims:
        weights += [
            rng.uniform(-1, 1, (dim, units)) * np.sqrt(3.0 / dim),
            rng.uniform(-1, 1, (units, units)) * np.sqrt(1.5 / units),
            rng.uniform(-0.5, 0.5, (units,)),
        ]
    return [w.astype(dtype) for w in weights]


def random_states(
    rng: np.random.Generator, n_layers: int, batch: int, units: int, dtype: str
) -> list[list[np.ndarray]]:
    return [[rng.uniform(-1, 1, (batch, units)).astype(dtype)] for _ in range(n_layers)]


def make_rnn(backend: str, n_layers: int, units: int, dtype: str, **kw: Any) -> Any:
    cells = [layers.SimpleRNNCell(units, backend=backend, dtype=dtype) for _ in range(n_layers)]
    return layers.RNN(cells, **kw)


def inference_mode(obj: Any) -> Any:
    """``obj`` set up so that ``training=None`` means inference on its backend: a torch module
    follows ``.train()`` / ``.eval()`` (PyTorch's rule) and is put in eval mode; Keras and NumPy
    objects already infer when ``training`` is not given. Returns ``obj``."""
    if hasattr(obj, "eval") and hasattr(obj, "train"):
        obj.eval()
    return obj


def max_err(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def flat(out: Any) -> list[Any]:
    """A call's outputs (nested lists of tensors: outputs, states) as one flat list."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flat(o)]
    return [out]


def assert_all_close(got: Any, want: Any, tol: float) -> None:
    """Every tensor of ``got`` and ``want`` (:func:`flat`), in order: same shapes, within ``tol``; torch
    tensors that require grad compared detached."""
    got, want = flat(got), flat(want)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert tuple(g.shape) == tuple(w.shape)
        assert max_err(*(t.detach() if hasattr(t, "detach") else t for t in (g, w))) <= tol


KINDS = ["SimpleRNNCell", "LSTMCell", "GRUCell"]  # the built-in cell types (tests/test_custom_cell.py adds one)
GATES = {kind: cells.get(kind).n_gates for kind in KINDS}
N_STATES = {kind: cells.get(kind).n_states for kind in KINDS}


def random_cell_weights(
    rng: np.random.Generator, kind: str, dims: list[int], units: int, dtype: str, reset_after: bool = True
) -> list[np.ndarray]:
    """Canonical weights of any cell type for a stack whose layers take ``dims[i]`` features
    (shapes from the type's layout; ``reset_after=False`` picks GRU's other layout)."""
    layout = cells.get(kind).layout({"reset_after": reset_after, "units": units})
    weights = []
    for dim in dims:
        (_, k), (_, r), (_, b) = layout.shapes(dim, units, use_bias=True)
        weights += [
            rng.uniform(-1, 1, k) * np.sqrt(3.0 / dim),
            rng.uniform(-1, 1, r) * np.sqrt(1.5 / units),
            rng.uniform(-0.5, 0.5, b),
        ]
    return [w.astype(dtype) for w in weights]


def random_cell_states(
    rng: np.random.Generator, kind: str, n_layers: int, batch: int, units: int, dtype: str
) -> list[list[np.ndarray]]:
    n_states = cells.get(kind).n_states  # any registered type, not only the built-ins
    return [[rng.uniform(-1, 1, (batch, units)).astype(dtype) for _ in range(n_states)] for _ in range(n_layers)]


def make_cells(backend: str, kind: str, n_layers: int, units: int, dtype: str, **cell_kw: Any) -> list[Any]:
    return [getattr(layers, kind)(units, backend=backend, dtype=dtype, **cell_kw) for _ in range(n_layers)]


def to_native_states(backend: str, states: list[list[np.ndarray]]) -> list[list[Any]]:
    return [[native(backend, s) for s in layer] for layer in states]


CHAPTER = (4, 80, 100, 64, 2)  # the book's RNN chapter: batch, steps, features, units, layers


def chapter_problem(
    rng: np.random.Generator, kind: str, dtype: str, sizes: tuple[int, ...] = CHAPTER
) -> tuple[np.ndarray, list[np.ndarray], list[list[np.ndarray]]]:
    """``(x, canonical weights, states)`` for a stack of ``kind`` at ``sizes``."""
    batch, steps, features, units, n = sizes
    x = rng.normal(size=(batch, steps, features)).astype(dtype)
    weights = random_cell_weights(rng, kind, [features] + [units] * (n - 1), units, dtype)
    return x, weights, random_cell_states(rng, kind, n, batch, units, dtype)


def run_rnn(
    backend: str,
    kind: str,
    dtype: str,
    x: np.ndarray,
    weights: list[np.ndarray],
    states: list[list[np.ndarray]],
    order: str = "timestep",
    **kw: Any,
) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """The library's stack of ``kind`` on ``backend`` with these weights: ``(y, states)`` in NumPy."""
    rnn = layers.RNN(make_cells(backend, kind, len(states), weights[1].shape[0], dtype, **kw), order=order)
    rnn.return_sequences = rnn.return_state = True
    rnn.build((None, None, x.shape[2]))
    rnn.set_weights(weights)
    y, s = rnn(native(backend, x), to_native_states(backend, states))
    return numpy(backend, y), [[numpy(backend, t) for t in layer] for layer in s]
