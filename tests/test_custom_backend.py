"""The extension point for backends is real: a backend of our own (tests/plugins/xf_boxed.py, a
small tensor type that wraps NumPy arrays without being one), written as docs/architecture.md
says and registered with one ``registry.register`` line, runs every cell type (the built-ins and
the MGU of tests/plugins/xf_mgu.py) in both orderings, moves to and from the other backends,
through weight files, and through the parity matrix and the golden check, with outputs equal to
the NumPy reference's within the stated tolerances. ``registry.unregister`` takes it away again.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, make_cells, max_err, native, numpy, random_cell_states, random_cell_weights, to_native_states

import rnn_xframework as xf
from rnn_xframework import layers, parity, registry
from rnn_xframework.parity.report import PASS, SKIP
from rnn_xframework.testing import GOLDEN_DIR

NAME, MODULE = "boxed", "plugins.xf_boxed"
BATCH, STEPS, FEATURES, UNITS, LAYERS = 3, 5, 4, 6, 2
OTHERS = ["numpy", "torch", "tensorflow"]


def _registry_state() -> tuple[dict, dict, set]:
    """The registry's tables: names, aliases, and backend objects whose name is not registered."""
    return dict(registry._MODULES), dict(registry._ALIASES), set(registry._REGISTRY) - set(registry._MODULES)


@pytest.fixture
def boxed():
    """The boxed backend, registered for one test and unregistered after."""
    before = _registry_state()
    registry.register(NAME, MODULE, aliases=("box",))  # the one registration line
    yield registry.get(NAME)
    registry.unregister(NAME)
    assert _registry_state() == before  # nothing left behind


@pytest.fixture(params=[*KINDS, "MGUCell"])
def kind(request: pytest.FixtureRequest) -> str:
    """Every built-in cell type, and the MGU of tests/plugins/xf_mgu.py (registered for the test)."""
    if request.param == "MGUCell":
        request.getfixturevalue("mgu")
    return request.param


def problem(rng, kind, dtype):
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype)
    weights = random_cell_weights(rng, kind, [FEATURES] + [UNITS] * (LAYERS - 1), UNITS, dtype)
    return x, weights, random_cell_states(rng, kind, LAYERS, BATCH, UNITS, dtype)


def make_rnn(backend, kind, dtype, weights=None, cell_kw=None, **kw):
    kw = {"return_sequences": True, "return_state": True, **kw}
    rnn = layers.RNN(make_cells(backend, kind, LAYERS, UNITS, dtype, **(cell_kw or {})), **kw)
    rnn.build((None, None, FEATURES))
    if weights is not None:
        rnn.set_weights(weights)
    return rnn


def run(rnn, backend, x, states, **kw):
    """``rnn`` on NumPy inputs; outputs and final states back as NumPy (native ones checked)."""
    ops = registry.get(backend)
    y, final = rnn(native(backend, x), to_native_states(backend, states), **kw)
    assert ops.is_native(y) and all(ops.is_native(s) for layer in final for s in layer)
    return numpy(backend, y), [[numpy(backend, s) for s in layer] for layer in final]


def assert_same(got, want, dtype):
    (y, final), (want_y, want_final) = got, want
    assert max_err(y, want_y) <= TOL[dtype]
    for layer, want_layer in zip(final, want_final, strict=True):
        for s, w in zip(layer, want_layer, strict=True):
            assert max_err(s, w) <= TOL[dtype]


# --- the backend runs -------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_every_cell_type_and_ordering_matches_numpy(boxed, kind, dtype, order, rng):
    x, weights, states = problem(rng, kind, dtype)
    rnn = make_rnn(NAME, kind, dtype, weights, order=order)
    assert isinstance(rnn.cells[0], getattr(layers, kind)) and type(rnn.cells[0]).__module__ == MODULE
    assert isinstance(rnn, layers.RNN) and isinstance(rnn.cells[0], xf.Cell)
    want = run(make_rnn("numpy", kind, dtype, weights), "numpy", x, states)
    assert_same(run(rnn, NAME, x, states), want, dtype)


@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_masks_go_backwards_and_time_major_match_numpy(boxed, order, rng):
    """``where`` (masked steps) and ``swap_batch_time`` (``time_major``) of the new backend."""
    x, weights, states = problem(rng, "LSTMCell", "float64")
    mask = rng.random((BATCH, STEPS)) > 0.3
    kw = {"order": order, "go_backwards": True, "time_major": True}
    xt = np.swapaxes(x, 0, 1)
    got = run(make_rnn(NAME, "LSTMCell", "float64", weights, **kw), NAME, xt, states, mask=native(NAME, mask))
    want = run(make_rnn("numpy", "LSTMCell", "float64", weights, **kw), "numpy", xt, states, mask=mask)
    assert_same(got, want, "float64")


def test_is_native_tells_the_technologies_apart(boxed, rng):
    """A boxed RNN takes boxes only, a NumPy RNN arrays only, each error naming the right backend."""
    x, weights, _ = problem(rng, "GRUCell", "float32")
    np_ops = registry.get("numpy")
    assert not boxed.is_native(x) and not np_ops.is_native(native(NAME, x))
    assert registry.backend_for(native(NAME, x)) == NAME and registry.backend_for(x) == "numpy"
    assert registry.backend_for(object()) is None
    with pytest.raises(xf.FrameworkMismatchError, match=r"expected a boxed tensor.*backend='numpy'"):
        make_rnn(NAME, "GRUCell", "float32", weights)(x)
    with pytest.raises(xf.FrameworkMismatchError, match=r"expected a numpy tensor.*backend='boxed'"):
        make_rnn("numpy", "GRUCell", "float32", weights)(native(NAME, x))


def test_dropout_with_masks_set_by_hand_matches_numpy(boxed, rng):
    x, weights, states = problem(rng, "GRUCell", "float32")
    rates = {"dropout": 0.25, "recurrent_dropout": 0.5}
    rnns = {b: make_rnn(b, "GRUCell", "float32", weights, cell_kw=rates) for b in ("numpy", NAME)}

    def drop(n, rate):  # one mask per gate (GRU with recurrent dropout), Keras's inverted masks
        return [((rng.random((BATCH, n)) >= rate) / (1 - rate)).astype("float32") for _ in range(3)]

    masks = [(drop(dim, rates["dropout"]), drop(UNITS, rates["recurrent_dropout"])) for dim in (FEATURES, UNITS)]
    got = {}
    for backend, rnn in rnns.items():
        for cell, (inputs, recurrent) in zip(rnn.cells, masks, strict=True):
            cell.set_dropout_masks(inputs, recurrent)
        got[backend] = run(rnn, backend, x, states, training=True)
    assert_same(got[NAME], got["numpy"], "float32")
    assert max_err(got[NAME][0], run(rnns[NAME], NAME, x, states)[0]) > 1e-3  # the masks were used


# --- weights in and out -----------------------------------------------------------------------------
@pytest.mark.parametrize("other", OTHERS)
def test_convert_and_transfer_to_and_from_every_backend(boxed, kind, other, rng):
    require(other)
    x, weights, states = problem(rng, kind, "float64")
    source = make_rnn(NAME, kind, "float64", weights, order="layer")
    ported = xf.convert(source, backend=other)
    assert ported.backend == other and ported.order == "layer"
    assert_same(run(ported, other, x, states), run(source, NAME, x, states), "float64")
    back = xf.convert(ported, backend=NAME)
    assert back.backend == NAME and type(back.cells[0]) is type(source.cells[0])
    for got, want in zip(back.get_weights(), weights, strict=True):
        assert np.array_equal(got, want)
    fresh = xf.transfer_weights(ported, make_rnn(NAME, kind, "float64"))
    assert_same(run(fresh, NAME, x, states), run(source, NAME, x, states), "float64")
    assert xf.transfer_weights(source, make_rnn(other, kind, "float64")).backend == other


def test_weight_file_round_trip(boxed, kind, tmp_path, rng):
    x, weights, states = problem(rng, kind, "float32")
    source = make_rnn(NAME, kind, "float32", weights)
    path = xf.save_weights(source, tmp_path / "boxed")
    for backend in ("numpy", NAME):
        fresh = xf.load_weights(make_rnn(backend, kind, "float32"), path)
        for got, want in zip(fresh.get_weights(), weights, strict=True):
            assert np.array_equal(got, want)
    from_numpy = xf.save_weights(make_rnn("numpy", kind, "float32", weights), tmp_path / "numpy")
    loaded = xf.load_weights(make_rnn(NAME, kind, "float32"), from_numpy)
    assert_same(run(loaded, NAME, x, states), run(source, NAME, x, states), "float32")
    wrong = make_rnn(NAME, "SimpleRNNCell" if kind != "SimpleRNNCell" else "GRUCell", "float32")
    kept = wrong.get_weights()
    with pytest.raises(xf.WeightsError):
        xf.load_weights(wrong, path)
    for got, old in zip(wrong.get_weights(), kept, strict=True):
        assert np.array_equal(got, old)  # all or nothing


# --- the parity suite -------------------------------------------------------------------------------
SIZES = parity.Sizes(batch=2, steps=4, features=3, units=5, layers=2)


def test_parity_matrix_on_the_new_backend_and_numpy(boxed, mgu):
    report = parity.run(parity.Config(sizes=SIZES, backends=[NAME, "np"], checks=("forward",)))
    rows = {(r.cell, r.dtype, r.backend, r.ordering): r for r in report.results}
    kinds = [*KINDS, "MGUCell"]
    expected = {(k, d, NAME, o) for k in kinds for d in ("float32", "float64") for o in ("timestep", "layer")}
    expected |= {(k, d, "numpy", "layer") for k in kinds for d in ("float32", "float64")}
    assert set(rows) == expected
    for r in rows.values():
        assert r.status == PASS and r.reference == "numpy" and r.max_abs <= TOL[r.dtype], r
    assert report.passed


def test_parity_training_checks_skip_a_backend_without_a_trainer(boxed):
    report = parity.run(parity.Config(sizes=SIZES, backends=[NAME], cells=["SimpleRNNCell"], dtypes=["float64"]))
    mine = [r for r in report.results if r.backend == NAME]
    outputs = {"forward", "masked", "masked:wide"}  # outputs: unmasked, masked, masked on a wide batch
    assert {r.check for r in mine if r.status == PASS} == outputs
    for r in mine:
        if r.check not in outputs:  # only where an installed backend has gradients
            assert r.status == SKIP and "boxed has no gradients" in r.note
    assert report.passed


def test_golden_vectors(boxed):
    report = parity.check_golden(GOLDEN_DIR, backend_names=[NAME])
    forward = [r for r in report.results if r.check == "forward"]
    assert {(r.cell, r.dtype) for r in forward} == {(k, d) for k in KINDS for d in ("float32", "float64")}
    assert all(r.status == PASS and r.backend == NAME for r in forward)
    assert report.passed


def test_the_shipped_parity_tests_take_a_registered_backend(boxed, monkeypatch):
    """``pytest --pyargs rnn_xframework.testing`` runs over ``registry.names()``: a user's backend
    registered before collection gets the same golden and matrix tests, and the same device rule."""
    from rnn_xframework.testing import test_parity as shipped

    shipped.test_golden(NAME, "cpu")
    shipped.test_matrix(NAME, "cpu")
    with pytest.raises(pytest.skip.Exception, match="boxed has no cuda device here"):
        shipped.test_matrix(NAME, "cuda")
    monkeypatch.setattr(type(boxed), "devices", lambda self: ["cpu", "cuda"])
    try:
        shipped._require(NAME, "cuda")  # a backend that lists CUDA gets its CUDA rows
    except pytest.skip.Exception as e:
        pytest.fail(f"skipped a backend whose devices() lists cuda: {e}")


# --- framework objects in and out, compile methods -------------------------------------------------
def test_ports_from_and_to_torch_and_keras(boxed, rng):
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    require("torch")
    import torch

    lstm = torch.nn.LSTM(FEATURES, UNITS, num_layers=LAYERS, batch_first=True).double()
    rnn = xf.from_torch(lstm, backend=NAME)
    assert rnn.backend == NAME and len(rnn.cells) == LAYERS
    want = lstm(torch.from_numpy(x))[0].detach().numpy()
    assert max_err(numpy(NAME, rnn(native(NAME, x))), want) <= TOL["float64"]
    assert max_err(xf.to_torch(rnn)(torch.from_numpy(x))[0].detach().numpy(), want) <= TOL["float64"]
    require("tensorflow")
    import keras

    gru = keras.layers.GRU(UNITS, return_sequences=True, dtype="float64")
    gru.build((None, None, FEATURES))
    ported = xf.from_keras(gru, backend=NAME)
    assert max_err(numpy(NAME, ported(native(NAME, x))), np.asarray(gru(x))) <= TOL["float64"]
    assert max_err(np.asarray(xf.to_keras(ported)(x)), np.asarray(gru(x))) <= TOL["float64"]


def test_compile_auto_points_to_the_registered_backends_with_methods(boxed, monkeypatch, rng):
    """The backends ``"auto"`` points to come from the registry: not ours while it has no compile
    methods, ours once it has one (the message named torch and TensorFlow, always)."""
    rnn = make_rnn(NAME, "LSTMCell", "float32", problem(rng, "LSTMCell", "float32")[1])
    with pytest.raises(xf.FrameworkMismatchError, match="got one on 'boxed'") as e:
        xf.compile(rnn, "auto")
    assert "boxed" not in str(e.value).split(";")[1]
    monkeypatch.setattr(type(boxed), "compile_methods", {"boxed-jit": f"{MODULE}:compile_rnn"})
    with pytest.raises(xf.FrameworkMismatchError, match=r"got one on 'numpy'; .*to one of: .*boxed"):
        xf.compile(make_rnn("numpy", "LSTMCell", "float32"), "auto")


# --- the registry -----------------------------------------------------------------------------------
def test_unregister_forgets_name_and_aliases_and_register_brings_it_back(rng):
    before = _registry_state()
    registry.register(NAME, MODULE, aliases=("box", "boxes"))
    try:
        cell = layers.SimpleRNNCell(UNITS, backend="box", input_size=FEATURES)
        assert cell.backend == NAME and NAME in registry.names() and NAME in registry.installed()
        box = cell.get_initial_state(BATCH)[0]
        assert registry.backend_for(box) == NAME
    finally:
        registry.unregister("boxes")  # an alias names it too
    assert _registry_state() == before
    assert NAME not in registry.names() and NAME not in registry.installed()
    assert registry.backend_for(box) is None
    for name in (NAME, "box", "boxes"):
        with pytest.raises(xf.UnknownBackendError, match=f"unknown backend '{name}'"):
            layers.SimpleRNNCell(UNITS, backend=name)
    with pytest.raises(xf.UnknownBackendError):
        registry.get(NAME)
    with pytest.raises(xf.FrameworkMismatchError):
        registry.of(cell)
    with pytest.raises(xf.UnknownBackendError):  # built on a backend that is gone: a typed error
        layers.RNN([cell])

    registry.register(NAME, MODULE)  # its module is imported already: get() finds its class again
    try:
        rnn = make_rnn(NAME, "SimpleRNNCell", "float64", problem(rng, "SimpleRNNCell", "float64")[1])
        assert registry.get(NAME).is_native(rnn(native(NAME, np.zeros((BATCH, STEPS, FEATURES))))[0])
    finally:
        registry.unregister(NAME)
    assert _registry_state() == before


def test_unregister_of_an_unknown_name_is_a_typed_error_and_changes_nothing():
    before = _registry_state()
    with pytest.raises(xf.UnknownBackendError, match=r"unknown backend 'jax'; expected one of: .*numpy"):
        registry.unregister("jax")
    assert _registry_state() == before


def test_a_registration_line_naming_the_wrong_module_is_a_typed_error():
    before = _registry_state()
    registry.register("misnamed", MODULE)  # the module's backend is named "boxed"
    try:
        with pytest.raises(xf.BackendUnavailableError, match=r"no registry\.Backend subclass with name='misnamed'"):
            registry.get("misnamed")
    finally:
        registry.unregister("misnamed")
    assert _registry_state() == before  # not even the module's unregistered "boxed" backend


def test_backend_base_where_raises_and_every_backend_has_its_own(boxed, backend):
    """A backend that forgets ``where`` fails loudly (the base used to return ``None``)."""
    for name in (backend, NAME):
        ops = registry.get(name)
        assert type(ops).where is not registry.Backend.where
        cond, a = ops.from_numpy(np.array([[True], [False]])), ops.from_numpy(np.ones((2, 3)))
        assert np.array_equal(ops.to_numpy(ops.where(cond, a, None)), [[1, 1, 1], [0, 0, 0]])
        with pytest.raises(NotImplementedError):
            registry.Backend.where(ops, cond, a, None)
