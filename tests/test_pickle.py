"""Every object pickles, deep-copies and ``torch.save``\\ s, and the copy computes the same outputs
(float32, 1e-5): cells of every type (the registered MGU of tests/plugins/xf_mgu.py included),
stacks and RNNs on every backend, unbuilt ones, compiled RNNs (as their recipe: loading compiles
again), Keras layers from ``xf.to_keras`` (Keras's own pickling), and a cell sent to
``DataLoader`` workers started with ``spawn``. ``xf.compile`` of an unbuilt RNN builds it on the
first call, for every method.

Before: a torch cell failed with "Can't pickle local object 'TorchCell.__init__.<locals>.<lambda>'",
a registered type on every backend with "attribute lookup MGUCell on rnn_xframework.backends.numpy
failed", compiled RNNs with raw TorchScript/``_thread.lock``/``FuncGraph`` errors, and compiling an
unbuilt RNN with "the RNN is not built yet".
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, max_err, native, numpy, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import cells, layers, registry

UNITS, FEATURES, BATCH, STEPS = 4, 3, 2, 5
HOW = ["pickle", "deepcopy", "torch.save"]


def round_trip(how: str, obj: Any) -> Any:
    if how == "pickle":
        return pickle.loads(pickle.dumps(obj))
    if how == "deepcopy":
        return copy.deepcopy(obj)
    require("torch")
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.fixture(params=[*KINDS, "MGUCell"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "MGUCell":
        request.getfixturevalue("mgu")  # registered for this test only
    return request.param


def make(backend: str, kind: str, built: bool = True, device: str | None = None) -> Any:
    """A two-layer RNN of ``kind`` on ``backend`` with random weights (or unbuilt)."""
    kw = {} if device is None else {"device": device}
    rnn = layers.RNN(
        [layers.make_cell(kind, units=UNITS, backend=backend, **kw) for _ in range(2)], return_sequences=True
    )
    if built:
        rnn.build((None, None, FEATURES))
        rnn.set_weights(random_cell_weights(np.random.default_rng(5), kind, [FEATURES, UNITS], UNITS, "float32"))
    return rnn


def inputs(backend: str, *shape: int, device: str | None = None) -> Any:
    return native(backend, np.random.default_rng(6).standard_normal(shape).astype("float32"), device)


def flat(backend: str, out: Any) -> list[np.ndarray]:
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in flat(backend, o)]
    return [numpy(backend, out.detach() if hasattr(out, "detach") else out)]


def outputs(backend: str, what: str, obj: Any, device: str | None = None) -> list[np.ndarray]:
    """What ``obj`` (a cell, a stack or an RNN) computes for fixed inputs and states."""
    if what == "rnn":
        return flat(backend, obj(inputs(backend, BATCH, STEPS, FEATURES, device=device)))
    return flat(backend, obj(inputs(backend, BATCH, FEATURES), obj.get_initial_state(batch_size=BATCH)))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and max_err(x, y) <= TOL["float32"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("what", ["cell", "stack", "rnn"])
def test_objects_round_trip(backend: str, kind: str, what: str, how: str) -> None:
    rnn = make(backend, kind)
    obj = {"cell": rnn.cells[0], "stack": rnn.cell, "rnn": rnn}[what]
    expected = outputs(backend, what, obj)
    copied = round_trip(how, obj)
    assert type(copied) is type(obj) and copied is not obj
    same(outputs(backend, what, copied), expected)
    same([np.asarray(w) for w in copied.get_weights()], [np.asarray(w) for w in obj.get_weights()])
    copied.set_weights([np.zeros_like(w) for w in copied.get_weights()])  # a copy, not a view
    same(outputs(backend, what, obj), expected)


@pytest.mark.parametrize("how", HOW)
def test_unbuilt_torch_cells_keep_dtype_and_device(how: str) -> None:
    """PyTorch pickles an uninitialized parameter without its dtype: the cell keeps it."""
    require("torch")
    import torch

    for kind in KINDS:
        cell = layers.make_cell(kind, units=UNITS, backend="torch", dtype="float64")
        copied = round_trip(how, cell)
        assert copied.input_dim is None
        copied.build((None, FEATURES))
        assert copied.cell.weight_ih.dtype == torch.float64 and copied.cell.weight_ih.shape[1] == FEATURES
        assert copied.cell.weight_ih.device == cell.cell.weight_ih.device


def compile_cases() -> list[Any]:
    """(backend, method) for every compile method runnable here (CUDA-only ones need CUDA)."""
    cases = []
    for name in registry.names():
        framework = registry.framework(name)
        if framework is None or not _installed(framework):
            continue
        backend = registry.get(name)
        for method in backend.compile_methods:
            marks = [pytest.mark.slow] if method in backend.slow_to_compile else []
            if method == "cudagraph":
                marks.append(pytest.mark.cuda)
            cases.append(pytest.param(name, method, marks=marks, id=f"{name}-{method}"))
    return cases


def _installed(framework: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(framework) is not None


@pytest.fixture
def triton_interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """``TRITON_INTERPRET=1`` for this test where no CUDA device runs the kernels."""
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        return
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def device_for(method: str) -> str | None:
    """Where the method's test runs: ``cudagraph`` on CUDA only (its cases are marked ``cuda``)."""
    return "cuda" if method == "cudagraph" else None


@pytest.mark.parametrize(("backend", "method"), compile_cases())
def test_compiled_rnns_round_trip_as_their_recipe(backend: str, method: str, triton_interpret: None) -> None:
    if method == "triton":
        pytest.importorskip("triton")
    device = device_for(method)
    rnn = make(backend, "LSTMCell", device=device)
    fast = xf.compile(rnn, method)
    expected = outputs(backend, "rnn", fast, device)
    for how in HOW:
        copied = round_trip(how, fast)
        assert type(copied) is type(fast) and copied.method == method and copied.source is not rnn
        same(outputs(backend, "rnn", copied, device), expected)


@pytest.mark.parametrize(("backend", "method"), [*compile_cases(), ("torch", "auto"), ("tensorflow", "auto")])
def test_compile_of_an_unbuilt_rnn_builds_on_the_first_call(backend: str, method: str, triton_interpret: None) -> None:
    require(backend)
    if method == "triton":
        pytest.importorskip("triton")
    device = device_for(method)
    rnn = make(backend, "GRUCell", built=False, device=device)
    fast = xf.compile(rnn, method)
    assert not fast.built and rnn.cells[0].input_dim is None
    waiting = round_trip("pickle", fast)  # an unbuilt compiled RNN pickles too
    x = inputs(backend, BATCH, STEPS, FEATURES, device=device)
    y = fast(x)
    assert fast.built and rnn.cells[0].input_dim == FEATURES and rnn.cells[1].input_dim == UNITS
    same(flat(backend, y), flat(backend, rnn(x)))
    assert fast.method == (xf.compile(rnn, "auto").method if method == "auto" else method)
    same(flat(backend, fast(x)), flat(backend, y))  # compiled once, runs again
    assert waiting(x).shape == y.shape


def test_keras_layers_pickle_by_keras_rules() -> None:
    """A native Keras layer from ``xf.to_keras`` pickles by Keras 3's own rules (its config and
    weights) and computes the same."""
    require("tensorflow")
    keras_layer = xf.to_keras(make("tensorflow", "LSTMCell"))
    x = inputs("tensorflow", BATCH, STEPS, FEATURES)
    expected = flat("tensorflow", keras_layer(x))
    for how in ("pickle", "deepcopy"):
        copied = round_trip(how, keras_layer)
        assert type(copied) is type(keras_layer)
        same(flat("tensorflow", copied(x)), expected)


def test_registered_type_unpickles_in_another_process(tmp_path: Path, mgu: cells.CellSpec) -> None:
    """The class of a registered type is found by name in a process that registers the spec
    (and a typed hint where it does not)."""
    rnn = make("numpy", "MGUCell")
    x = np.random.default_rng(6).standard_normal((BATCH, STEPS, FEATURES)).astype("float32")
    (tmp_path / "rnn.pkl").write_bytes(pickle.dumps(rnn))
    np.save(tmp_path / "y.npy", rnn(x))
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(
        """
        import pickle, sys
        import numpy as np
        from rnn_xframework import cells
        from rnn_xframework.errors import UnsupportedConfigError
        try:
            pickle.loads(open("rnn.pkl", "rb").read())
        except UnsupportedConfigError as e:
            print("unregistered:", "no cell type 'MGUCell' is registered" in str(e))
        from plugins.xf_mgu import MGU
        cells.register(MGU)
        rnn = pickle.loads(open("rnn.pkl", "rb").read())
        print("same:", float(np.abs(rnn(np.load("x.npy")) - np.load("y.npy")).max()) <= 1e-5)
        """
    )
    tests = Path(__file__).resolve().parent
    root = Path(xf.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tests), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["unregistered:", "True", "same:", "True"]


@pytest.mark.slow
def test_cell_goes_to_dataloader_workers_by_spawn() -> None:
    """``DataLoader(num_workers=2)`` with the ``spawn`` start method pickles the dataset, a
    library cell inside, into each worker; the workers compute what the cell computes here."""
    require("torch")
    import torch
    from plugins.xf_workers import CellOutputs

    cell = make("torch", "LSTMCell").cells[0]
    x = inputs("torch", 6, FEATURES)
    loader = torch.utils.data.DataLoader(
        CellOutputs(cell, x), batch_size=3, num_workers=2, multiprocessing_context="spawn"
    )
    got = torch.cat(list(loader))
    with torch.no_grad():
        want, _ = cell(x, cell.get_initial_state(batch_size=6))
    assert max_err(got.numpy(), want.numpy()) <= TOL["float32"]
