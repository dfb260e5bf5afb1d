"""Property-based tests (Hypothesis) over the public API: every backend, cell type, ordering and
compiled path against the NumPy reference.

Valid inputs (batch 0 and 1 included, T = 1, masks whose padding holds NaN/inf, states given or
not, ``return_sequences``/``return_state``/``go_backwards``) must match the NumPy reference within
the stated tolerances (float32 1e-5, float64 1e-12). Invalid inputs (wrong rank, sizes, dtype,
framework, state structure, T = 0, mask shape) must raise a typed :class:`rnn_xframework.RNNXError`
and change nothing: same weights, and the next valid call gives the same answer as before.

Each example counts towards the campaign table conftest.py prints (category x cases x silent
wrong x raw error x hang, and "generated cases: N");
the budget is mostly cheap eager NumPy/torch examples, fewer TensorFlow and compiled ones.
Values come from a drawn seed (shapes and flags are what Hypothesis shrinks).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from conftest import FRAMEWORK, TOL, count_case, require
from helpers import KINDS, N_STATES, max_err, native, numpy, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# NumPy computing a padding step's NaN/inf (the selection drops it) warns; that is not a failure.
pytestmark = [
    pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning"),
]

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def available(*names: str) -> list[str]:
    out = []
    for name in names:
        fw = FRAMEWORK[name]
        if fw is None:
            out.append(name)
            continue
        try:
            __import__(fw)
        except ImportError:
            continue
        out.append(name)
    return out


@st.composite
def problems(draw: Any, max_batch: int = 3, max_steps: int = 4, min_steps: int = 1) -> dict[str, Any]:
    """A stack configuration and a call: shapes, flags, a mask (maybe), states (maybe), a seed."""
    kind = draw(st.sampled_from(KINDS))
    n_layers = draw(st.integers(1, 2))
    units = draw(st.integers(1, 4))
    features = draw(st.integers(1, 3))
    batch = draw(st.sampled_from([0, 1, *range(2, max_batch + 1)]))
    steps = draw(st.integers(min_steps, max_steps))
    masked = draw(st.booleans())
    return {
        "kind": kind,
        "n_layers": n_layers,
        "units": units,
        "features": features,
        "batch": batch,
        "steps": steps,
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "order": draw(st.sampled_from(["timestep", "layer"])),
        "return_sequences": draw(st.booleans()),
        "return_state": draw(st.booleans()),
        "go_backwards": draw(st.booleans()),
        "use_bias": draw(st.booleans()),
        "with_states": draw(st.booleans()),
        "mask": draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps), min_size=batch, max_size=batch))
        if masked
        else None,
        "poison": draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def arrays(p: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[list[np.ndarray]] | None]:
    """Weights, the clean input, the input with poisoned padding, and initial states (or None)."""
    rng = np.random.default_rng(p["seed"])
    dims = [p["features"]] + [p["units"]] * (p["n_layers"] - 1)
    weights = random_cell_weights(rng, p["kind"], dims, p["units"], p["dtype"])
    if not p["use_bias"]:
        weights = [w for i, w in enumerate(weights) if i % 3 != 2]
    x = rng.normal(size=(p["batch"], p["steps"], p["features"])).astype(p["dtype"])
    poisoned = x.copy()
    clean = x.copy()
    if p["mask"] is not None:
        pad = ~np.asarray(p["mask"], bool).reshape(p["batch"], p["steps"])
        poisoned[pad] = p["poison"]
        clean[pad] = 0.0
    states = None
    if p["with_states"]:
        states = [
            [rng.uniform(-1, 1, (p["batch"], p["units"])).astype(p["dtype"]) for _ in range(N_STATES[p["kind"]])]
            for _ in range(p["n_layers"])
        ]
    return weights, clean, poisoned, states


def build(backend: str, p: dict[str, Any], weights: list[np.ndarray]) -> Any:
    cells = [
        getattr(layers, p["kind"])(p["units"], backend=backend, dtype=p["dtype"], use_bias=p["use_bias"])
        for _ in range(p["n_layers"])
    ]
    rnn = layers.RNN(
        cells,
        return_sequences=p["return_sequences"],
        return_state=p["return_state"],
        go_backwards=p["go_backwards"],
        order=p["order"],
    )
    rnn.set_weights(weights)
    return rnn


def call(backend: str, model: Any, p: dict[str, Any], x: np.ndarray, states: Any, mask: Any) -> list[np.ndarray]:
    """The call's results as flat NumPy arrays: ``[y, *states]`` (``[y]`` without return_state)."""
    kwargs = {}
    if states is not None:
        kwargs["initial_state"] = [[native(backend, s) for s in layer] for layer in states]
    if mask is not None:
        kwargs["mask"] = np.asarray(mask, bool).reshape(p["batch"], p["steps"])
    result = model(native(backend, x), **kwargs)
    if p["return_state"]:
        y, final = result
        return [numpy(backend, y), *(numpy(backend, s) for layer in final for s in layer)]
    return [numpy(backend, result)]


def reference(p: dict[str, Any], weights: list[np.ndarray], clean: np.ndarray, states: Any) -> list[np.ndarray]:
    return call("numpy", build("numpy", p, weights), p, clean, states, p["mask"])


def assert_matches(got: list[np.ndarray], want: list[np.ndarray], dtype: str) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert np.isfinite(g).all()
        if g.size:
            assert max_err(g, w) <= TOL[dtype]


# --- valid calls: every eager backend against the reference ----------------------------------
def _eager_property(backend: str, p: dict[str, Any]) -> None:
    count_case(f"eager {backend} RNN vs reference (masks poisoned with NaN/inf)")
    weights, clean, poisoned, states = arrays(p)
    want = reference(p, weights, clean, states)
    got = call(backend, build(backend, p, weights), p, poisoned, states, p["mask"])
    assert_matches(got, want, p["dtype"])


@settings(FAST, max_examples=1800)
@given(p=problems())
def test_torch_eager_matches_reference(p):
    require("torch")
    _eager_property("torch", p)


@settings(FAST, max_examples=700)
@given(p=problems())
def test_numpy_padding_and_orderings_match_reference(p):
    """The reference against itself across orderings, poisoned padding and state handling."""
    count_case("numpy reference vs itself (orderings, padding)")
    weights, clean, poisoned, states = arrays(p)
    want = reference(p, weights, clean, states)
    other = dict(p, order="layer" if p["order"] == "timestep" else "timestep")
    got = call("numpy", build("numpy", other, weights), other, poisoned, states, p["mask"])
    assert_matches(got, want, p["dtype"])


@settings(FAST, max_examples=160)
@given(p=problems(max_batch=2, max_steps=3))
def test_tensorflow_eager_matches_reference(p):
    require("tensorflow")
    _eager_property("tensorflow", p)


# --- one step of a cell -----------------------------------------------------------------------
@st.composite
def steps_(draw: Any) -> dict[str, Any]:
    return {
        "backend": draw(st.sampled_from(available("torch", "numpy", "torch", "tensorflow"))),
        "kind": draw(st.sampled_from(KINDS)),
        "units": draw(st.integers(1, 5)),
        "features": draw(st.integers(1, 4)),
        "batch": draw(st.sampled_from([0, 1, 2, 3, 5])),
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "bare": draw(st.booleans()),  # a bare tensor as the state of a one-state cell
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(FAST, max_examples=1100)
@given(s=steps_())
def test_cell_step_matches_reference(s):
    count_case(f"cell step {s['backend']} vs reference")
    rng = np.random.default_rng(s["seed"])
    weights = random_cell_weights(rng, s["kind"], [s["features"]], s["units"], s["dtype"])
    x = rng.normal(size=(s["batch"], s["features"])).astype(s["dtype"])
    states = [rng.uniform(-1, 1, (s["batch"], s["units"])).astype(s["dtype"]) for _ in range(N_STATES[s["kind"]])]
    results = {}
    for be in ("numpy", s["backend"]):
        cell = getattr(layers, s["kind"])(s["units"], backend=be, dtype=s["dtype"])
        cell.set_weights(weights)
        st_in = native(be, states[0]) if s["bare"] and len(states) == 1 else [native(be, a) for a in states]
        out, new = cell(native(be, x), st_in)
        assert isinstance(new, list) and len(new) == len(states)
        results[be] = [numpy(be, out), *(numpy(be, a) for a in new)]
    assert_matches(results[s["backend"]], results["numpy"], s["dtype"])


# --- invalid calls: a typed error, and nothing changes ---------------------------------------
CORRUPTIONS = [
    "features",
    "rank",
    "dtype",
    "framework",
    "list",
    "no_layer",
    "extra_state",
    "bare_state",
    "state_batch",
    "state_units",
    "steps_0",
    "mask_shape",
    "matrix",
]


@settings(FAST, max_examples=1000)
@given(
    p=problems(max_batch=3, max_steps=3),
    backend=st.sampled_from(available("numpy", "torch", "torch", "tensorflow")),
    corruption=st.sampled_from(CORRUPTIONS),
)
def test_invalid_calls_raise_typed_errors_and_change_nothing(p, backend, corruption):
    count_case("invalid calls: typed error, nothing changed")
    p = dict(p, mask=None, with_states=True)
    weights, clean, _, states = arrays(p)
    model = build(backend, p, weights)
    before = call(backend, model, p, clean, states, None)
    x: Any = native(backend, clean)
    init: Any = [[native(backend, s) for s in layer] for layer in states]
    mask = None
    other = {"numpy": "torch", "torch": "numpy", "tensorflow": "torch"}[backend]
    if corruption == "features":
        x = native(backend, np.zeros((p["batch"], p["steps"], p["features"] + 1), p["dtype"]))
    elif corruption == "rank":
        x = native(backend, clean[:, 0])
    elif corruption == "dtype":
        x = native(backend, clean.astype("float64" if p["dtype"] == "float32" else "float32"))
    elif corruption == "framework":
        if not available(other):
            return
        x = native(other, clean)
    elif corruption == "list":
        x = clean.tolist()
    elif corruption == "no_layer":
        init = init[:-1]
    elif corruption == "extra_state":
        init = [[*layer, layer[0]] for layer in init]
    elif corruption == "bare_state":
        if N_STATES[p["kind"]] == 1:
            return  # a bare tensor per layer (or, for one layer, for the stack) is a valid state there
        init = [layer[0] for layer in init]  # an LSTM layer given h without c
    elif corruption == "state_batch":
        init = [[native(backend, np.zeros((p["batch"] + 1, p["units"]), p["dtype"])) for _ in layer] for layer in init]
    elif corruption == "state_units":
        init = [[native(backend, np.zeros((p["batch"], p["units"] + 1), p["dtype"])) for _ in layer] for layer in init]
    elif corruption == "steps_0":
        x = native(backend, np.zeros((p["batch"], 0, p["features"]), p["dtype"]))
        init = None
    elif corruption == "mask_shape":
        mask = np.ones((p["batch"], p["steps"] + 1), bool)
    elif corruption == "matrix":
        if backend != "numpy":
            return
        # np.asmatrix warns that matrix is deprecated; the library must refuse it all the same
        x = native(backend, clean)
        init = [[np.asmatrix(s) for s in layer] for layer in states]
    with pytest.raises(xf.RNNXError):
        model(x, initial_state=init, mask=mask)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))
    after = call(backend, model, p, clean, states, None)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(after, before, strict=True))


@settings(FAST, max_examples=300)
@given(
    units=st.one_of(
        st.booleans(),
        st.text(max_size=3),
        st.floats(allow_nan=True),
        st.integers(-5, 0),
        st.none(),
        st.just(np.float32(3)),
        st.just(np.bool_(True)),
    ),
    backend=st.sampled_from(available("numpy", "torch", "tensorflow")),
    kind=st.sampled_from(KINDS),
)
def test_invalid_units_are_refused_on_every_backend(units, backend, kind):
    count_case("invalid units: typed error")
    with pytest.raises(xf.UnsupportedConfigError, match="units must be a positive integer"):
        getattr(layers, kind)(units, backend=backend)


# --- compiled paths ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def compiled(method: str, backend: str, kind: str, n_layers: int, units: int, features: int, dtype: str, flags: tuple):
    """Compiled objects, made once per configuration and reused (weights are set per example)."""
    return_sequences, return_state, go_backwards, use_bias = flags
    p = {
        "kind": kind,
        "n_layers": n_layers,
        "units": units,
        "dtype": dtype,
        "use_bias": use_bias,
        "return_sequences": return_sequences,
        "return_state": return_state,
        "go_backwards": go_backwards,
        "order": "timestep",
    }
    dims = [features] + [units] * (n_layers - 1)
    weights = random_cell_weights(np.random.default_rng(0), kind, dims, units, dtype)
    rnn = build(backend, p, [w for i, w in enumerate(weights) if use_bias or i % 3 != 2])
    return rnn, xf.compile(rnn, method)


@st.composite
def compiled_problems(draw: Any, backend: str) -> dict[str, Any]:
    p = draw(problems(max_batch=3, max_steps=4))
    # few configurations, so the compiled objects are reused
    return dict(
        p,
        mask=None,
        units=draw(st.sampled_from([2, 3])),
        features=2,
        n_layers=draw(st.sampled_from([1, 2])),
        dtype="float64" if backend == "torch" else draw(st.sampled_from(["float32", "float64"])),
    )


def _compiled_property(method: str, backend: str, p: dict[str, Any]) -> None:
    count_case(f"compiled {method!r} vs reference")
    flags = (p["return_sequences"], p["return_state"], p["go_backwards"], p["use_bias"])
    rnn, fast = compiled(method, backend, p["kind"], p["n_layers"], p["units"], p["features"], p["dtype"], flags)
    weights, clean, _, states = arrays(p)
    rnn.set_weights(weights)
    want = reference(dict(p, order="timestep"), weights, clean, states)
    if backend == "torch":
        import torch

        with torch.no_grad():
            got = call(backend, fast, p, clean, states, None)
        got_grad_mode = call(backend, fast, p, clean, states, None)  # autograd on: the training path
        assert_matches(got_grad_mode, want, p["dtype"])
    else:
        got = call(backend, fast, p, clean, states, None)
    assert_matches(got, want, p["dtype"])


@settings(FAST, max_examples=400)
@given(data=st.data())
def test_torchscript_matches_reference(data):
    require("torch")
    _compiled_property("torchscript", "torch", data.draw(compiled_problems("torch")))


@settings(FAST, max_examples=40)
@given(data=st.data())
def test_tf_function_matches_reference(data):
    require("tensorflow")
    p = data.draw(compiled_problems("tensorflow"))
    _compiled_property("tf.function", "tensorflow", dict(p, kind="SimpleRNNCell" if p["seed"] % 2 else p["kind"]))
