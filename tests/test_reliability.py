"""Issue 11: each defect a probe found, kept by a test that failed before its fix.

Silent wrong results (NaN in masked padding, lazy builds and dropout masks raced by threads,
a ``keras.json`` on torch, ``np.matrix``), raw crashes (TorchScript LSTM backward through ``c``,
inductor past 8 variants, TorchScript batch 0, TF stacks given foreign tensors, constructor
arguments), ``use_backend`` in generators, and TF compiled caches (bounded, released, shown in
``repr``; long sequences not unrolled). Property-based coverage of the same ground is in
tests/test_properties.py.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, max_err, native, numpy, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers

MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 0]], bool)


# --- 1. NaN/inf in masked padding never reaches the outputs ----------------------------------
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy computing the padding's NaN
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_masked_padding_may_hold_nan_and_inf(backend, kind, order, rng):
    x = rng.normal(size=(3, 4, 3)).astype("float64")
    weights = random_cell_weights(rng, kind, [3, 5], 5, "float64")
    padded = x.copy()
    padded[1, 2:] = np.nan  # the repro: padding steps of row 1 hold NaN
    padded[2, 0] = np.inf
    padded[2, 3] = -np.inf

    def run(be, data):
        cells = [getattr(layers, kind)(5, backend=be, dtype="float64") for _ in range(2)]
        rnn = layers.RNN(cells, return_sequences=True, return_state=True, order=order)
        rnn.set_weights(weights)
        y, states = rnn(native(be, data), mask=MASK)
        return numpy(be, y), [numpy(be, s) for layer in states for s in layer]

    want_y, want_states = run("numpy", np.where(MASK[:, :, None], x, 0.0))  # padding holds zeros
    got_y, got_states = run(backend, padded)
    assert np.isfinite(got_y).all() and all(np.isfinite(s).all() for s in got_states)
    assert max_err(got_y, want_y) <= TOL["float64"]
    assert all(max_err(g, w) <= TOL["float64"] for g, w in zip(got_states, want_states, strict=True))


# --- 2. a lazy build from several threads runs once ------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_lazy_build_from_8_threads_builds_once(backend, kind):
    rnn = layers.RNN([getattr(layers, kind)(4, backend=backend), getattr(layers, kind)(3, backend=backend)])
    x = native(backend, np.linspace(-1, 1, 2 * 3 * 5).reshape(2, 3, 5).astype("float32"))
    barrier = threading.Barrier(8)
    outputs, errors = [], []

    def first_call():
        barrier.wait()
        try:
            outputs.append(numpy(backend, rnn(x)))
        except Exception as e:  # pragma: no cover - the defect
            errors.append(e)

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = numpy(backend, rnn(x))  # the weights the RNN kept
    assert len(outputs) == 8
    assert all(max_err(o, final) == 0.0 for o in outputs)


# --- 3. dropout masks per call, never shared between threads ---------------------------------
def _count_draws(backend, cells):
    """Wrap each cell's mask drawing; return the list every draw appends to."""
    draws = []
    for cell in cells:
        name = "_create_dropout_mask" if backend == "tensorflow" else "_new_mask"
        original = getattr(cell, name)

        def counted(*args, _original=original, **kwargs):
            draws.append(1)
            return _original(*args, **kwargs)

        object.__setattr__(cell, name, counted)
    return draws


@pytest.mark.parametrize("kind", ["SimpleRNNCell", "LSTMCell"])
def test_dropout_training_from_threads_draws_one_mask_per_call(backend, kind):
    cells = [getattr(layers, kind)(4, backend=backend, dropout=0.3, recurrent_dropout=0.2) for _ in range(2)]
    rnn = layers.RNN(cells, return_sequences=True)
    x = native(backend, np.ones((2, 6, 3), "float32"))
    rnn(x)  # build
    draws = _count_draws(backend, cells)
    n_threads, calls = 4, 5 if backend == "tensorflow" else 10
    errors, outputs = [], []
    barrier = threading.Barrier(n_threads)

    def train():
        barrier.wait()
        for _ in range(calls):
            try:
                outputs.append(numpy(backend, rnn(x, training=True)))
            except Exception as e:  # pragma: no cover - the defect
                errors.append(e)

    threads = [threading.Thread(target=train) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    per_call = sum(c.n_dropout_masks if backend != "tensorflow" else 1 for c in cells) * 2  # inputs + recurrent
    if backend == "tensorflow":
        per_call = 2 * len(cells)  # Keras draws a cell's list of gate masks in one call
    assert len(draws) == n_threads * calls * per_call
    assert all(np.isfinite(o).all() for o in outputs)
    assert all(c.get_dropout_masks() == (None, None) for c in cells)  # nothing left on the cells


def test_dropout_mask_is_the_same_at_every_step_of_a_call_under_threads():
    """Input dropout only, inputs of ones, identity-like weights: step outputs of one call that used
    one mask agree with a NumPy replay of that mask; a mask swapped mid-sequence would not."""
    require("torch")
    import torch

    cell = layers.SimpleRNNCell(3, backend="torch", dropout=0.5, dtype="float64")
    rnn = layers.RNN([cell], return_sequences=True)
    rnn.build((None, None, 4))
    rnn.set_weights([np.eye(4, 3), np.zeros((3, 3)), np.zeros(3)])  # h_t = tanh(x_t * m @ I)
    x = torch.ones(2, 8, 4, dtype=torch.float64)
    bad, done = [], []

    def train():
        for _ in range(20):
            y = rnn(x, training=True).detach().numpy()
            if not np.all(y == y[:, :1]):  # every step must see the same mask
                bad.append(y)
            done.append(1)

    threads = [threading.Thread(target=train) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == [] and len(done) == 80


# --- 4. a keras.json that selects torch is refused by the TensorFlow backend -----------------
def test_keras_json_selecting_torch_is_refused(tmp_path):
    require("tensorflow")
    require("torch")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch", "floatx": "float32"}))
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    code = (
        "import torch, numpy as np\n"
        "import rnn_xframework as xf\n"
        "try:\n"
        "    xf.layers.SimpleRNNCell(3, backend='tf')\n"
        "except xf.BackendUnavailableError as e:\n"
        "    print('REFUSED', 'torch' in str(e))\n"
        "else:\n"
        "    print('ACCEPTED')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "REFUSED True", out.stdout + out.stderr[-2000:]


# --- 5. np.matrix is refused (its '*' is a matrix product) -----------------------------------
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("kind", KINDS)
def test_numpy_matrix_is_refused_not_miscomputed(kind):
    cell = getattr(layers, kind)(3, backend="numpy")
    x = np.arange(9.0, dtype="float32").reshape(3, 3) / 10  # batch == units: the wrong math fits
    states = cell.get_initial_state(3)
    cell(x, states)
    before = cell.get_weights()
    with pytest.raises(xf.FrameworkMismatchError, match="matrix"):
        cell(np.matrix(x), states)
    with pytest.raises(xf.FrameworkMismatchError, match="matrix"):
        cell(x, [np.matrix(s) for s in states])
    assert all(np.array_equal(a, b) for a, b in zip(before, cell.get_weights(), strict=True))


# --- 6. TorchScript LSTM: backward through the final c, call after call ----------------------
@pytest.mark.parametrize("target", ["c", "h"])
def test_torchscript_lstm_backward_through_final_state_every_call(target, rng):
    require("torch")
    import torch

    rnn = layers.RNN([layers.LSTMCell(4, backend="torch", dtype="float64")], return_state=True)
    rnn.build((None, None, 3))
    rnn.set_weights(random_cell_weights(rng, "LSTMCell", [3], 4, "float64"))
    fast = xf.compile(rnn, "torchscript")
    for _ in range(4):  # the scripted graph is optimized after the first call
        data = rng.normal(size=(2, 5, 3))
        grads = []
        for model in (fast, rnn):
            x = torch.tensor(data, requires_grad=True)
            _, [[h, c]] = model(x)
            (c if target == "c" else h).sum().backward()
            grads.append(x.grad.numpy())
        assert max_err(grads[0], grads[1]) <= TOL["float64"]


# --- 7. inductor: more than 8 shapes per process ---------------------------------------------
def test_inductor_compiles_more_than_8_shapes(monkeypatch, rng):
    """Dynamo's recompile bookkeeping is the same for every backend: the cheap ``"eager"`` one
    stands in for inductor here (tests/test_compile_inductor.py runs the real one)."""
    require("torch")
    import torch

    from rnn_xframework.backends.torch.compile import inductor

    monkeypatch.setattr(inductor, "BACKEND", "eager")
    rnn = layers.RNN([layers.SimpleRNNCell(2, backend="torch")], return_sequences=True)
    rnn.build((None, None, 3))
    fast = xf.compile(rnn, "inductor")
    fast.loop.cache_size = 4  # small regions, so region changes are exercised too
    with torch.no_grad():
        for steps in [*range(1, 12), 1, 2]:
            x = torch.tensor(rng.normal(size=(1, steps, 3)), dtype=torch.float32)
            assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float32"]
    assert fast.loop.regions >= 3


# --- 8. TorchScript inference with batch 0 and more than 128 units ---------------------------
@pytest.mark.parametrize("units", [3, 200])
def test_torchscript_batch_0(units):
    require("torch")
    import torch

    rnn = layers.RNN([layers.SimpleRNNCell(units, backend="torch")], return_sequences=True, return_state=True)
    rnn.build((None, None, 3))
    fast = xf.compile(rnn, "torchscript")
    with torch.no_grad():
        y, [[h]] = fast(torch.zeros(0, 5, 3))
    assert tuple(y.shape) == (0, 5, units) and tuple(h.shape) == (0, units)


# --- 13. TF stacks: foreign tensors, lists, batch 0; one validation of units -----------------
@pytest.mark.parametrize("kind", KINDS)
def test_tf_stack_and_rnn_refuse_torch_tensors_and_lists(kind):
    require("tensorflow")
    require("torch")
    import torch

    cells = [getattr(layers, kind)(3, backend="tf") for _ in range(2)]
    rnn = layers.RNN(cells)
    stack = layers.StackedRNNCells(cells)
    for bad in (torch.zeros(2, 4, 5), [[[0.0] * 5] * 4] * 2):
        with pytest.raises(xf.FrameworkMismatchError, match="expected a tensorflow tensor"):
            rnn(bad)
    x = np.zeros((2, 4, 5), "float32")
    rnn(x)
    states = [[torch.zeros(2, 3) for _ in cell.state_sizes] for cell in cells]
    with pytest.raises(xf.FrameworkMismatchError):
        rnn(x, initial_state=states)
    with pytest.raises(xf.FrameworkMismatchError):
        stack(torch.zeros(2, 5), stack.get_initial_state(2))
    with pytest.raises(xf.FrameworkMismatchError):
        stack(np.zeros((2, 5), "float32"), states)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_0_gives_empty_outputs(backend, kind):
    rnn = layers.RNN([getattr(layers, kind)(3, backend=backend)], return_sequences=True, return_state=True)
    y, states = rnn(native(backend, np.zeros((0, 4, 5), "float32")))
    assert tuple(numpy(backend, y).shape) == (0, 4, 3)
    assert all(tuple(numpy(backend, s).shape) == (0, 3) for layer in states for s in layer)


@pytest.mark.parametrize("units", [True, False, "8", 3.0, 0, -2, None, np.float64(3), np.bool_(True)])
def test_invalid_units_refused_the_same_on_every_backend(backend, units):
    for kind in KINDS:
        with pytest.raises(xf.UnsupportedConfigError, match="units must be a positive integer"):
            getattr(layers, kind)(units, backend=backend)


@pytest.mark.parametrize("units", [np.int64(3), np.int32(3), 3])
def test_integral_numpy_units_accepted_as_int(backend, units):
    for kind in KINDS:
        cell = getattr(layers, kind)(units, backend=backend)
        assert cell.units == 3 and type(cell.units) is int


@pytest.mark.parametrize("rate", [True, "0.5", None, 1.0, -0.1])
def test_invalid_dropout_refused_the_same_on_every_backend(backend, rate):
    with pytest.raises(xf.UnsupportedConfigError, match="dropout"):
        layers.SimpleRNNCell(3, backend=backend, dropout=rate)


# --- 14. use_backend in generators and across threads ----------------------------------------
def test_use_backend_in_a_suspended_generator_does_not_leak():
    xf.set_backend(None)

    def gen():
        with xf.use_backend("numpy"):
            yield xf.get_backend()
            yield xf.get_backend()
        yield xf.get_backend()

    g = gen()
    assert next(g) == "numpy"
    assert xf.get_backend() == "torch"  # the caller, while the generator is suspended
    with xf.use_backend("tf"):
        assert next(g) == "numpy"  # the generator's own block, resumed inside another
        assert xf.get_backend() == "tensorflow"
    assert next(g) == "torch"
    assert xf.get_backend() == "torch"


def test_use_backend_inner_block_wins_over_an_enclosing_generator_block():
    """The innermost ``use_backend`` applies, whichever of the two blocks is in a generator: a
    plain function's block inside a generator's block, and a generator's block inside a plain one."""
    xf.set_backend(None)

    def helper(name):
        with xf.use_backend(name):
            return xf.get_backend()

    def gen():
        with xf.use_backend("numpy"):
            yield helper("tf")  # the helper's block is the inner one
            yield xf.get_backend()
            with xf.use_backend("torch"):
                yield helper("numpy")

    assert list(gen()) == ["tensorflow", "numpy", "numpy"]

    def inner_gen():
        with xf.use_backend("tf"):
            yield xf.get_backend()

    with xf.use_backend("numpy"):
        assert list(inner_gen()) == ["tensorflow"]  # the generator's block is the inner one
        assert xf.get_backend() == "numpy"
    assert xf.get_backend() == "torch"


def test_use_backend_generator_finished_in_another_thread():
    def gen():
        with xf.use_backend("numpy"):
            yield xf.get_backend()
            yield xf.get_backend()

    g = gen()
    assert next(g) == "numpy"
    seen, errors = [], []

    def finish():
        try:
            seen.extend(g)
        except Exception as e:  # pragma: no cover - the defect
            errors.append(e)

    t = threading.Thread(target=finish)
    t.start()
    t.join()
    assert errors == [] and seen == ["numpy"]
    assert xf.get_backend() == "torch"


# --- 16. "tf.function" does not unroll long sequences ----------------------------------------
def test_tf_function_graph_size_does_not_grow_with_length_past_the_threshold(rng, monkeypatch):
    require("tensorflow")
    from rnn_xframework.backends.tensorflow.compile import graphs as tf_graphs

    monkeypatch.setattr(tf_graphs, "UNROLL_MAX_STEPS", 8)
    rnn = layers.RNN([layers.LSTMCell(3, backend="tf", dtype="float64")], return_sequences=True)
    rnn.build((None, None, 2))
    rnn.set_weights(random_cell_weights(rng, "LSTMCell", [2], 3, "float64"))
    fast = xf.compile(rnn, "tf.function")

    def ops_for(steps):
        x = rng.normal(size=(2, steps, 2))
        assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float64"]
        x = native("tensorflow", x)
        concrete = fast._graphs.function(x, None).get_concrete_function(x, None, fast._flat_weights())
        return len(concrete.graph.get_operations())

    assert ops_for(20) == ops_for(200)
    assert ops_for(4) < ops_for(8)  # short sequences are still unrolled (fastest)


# --- concurrency and growth of the compile caches --------------------------------------------
@pytest.mark.parametrize("method", ["tf.function", "torchscript"])
def test_compiled_object_called_from_threads(method, rng):
    """Several threads, several shapes at once: right answers, no errors."""
    backend = "torch" if method == "torchscript" else "tensorflow"
    require(backend)
    rnn = layers.RNN([layers.SimpleRNNCell(3, backend=backend), layers.GRUCell(2, backend=backend)])
    rnn.build((None, None, 2))
    fast = xf.compile(rnn, method)
    inputs = [rng.normal(size=(b, t, 2)).astype("float32") for b in (1, 2, 3) for t in (1, 3)]
    want = [numpy(backend, rnn(native(backend, x))) for x in inputs]
    errors, bad = [], []

    def work(k):
        for j in range(6):
            i = (k + j) % len(inputs)
            try:
                got = numpy(backend, fast(native(backend, inputs[i])))
                if max_err(got, want[i]) > TOL["float32"]:
                    bad.append(i)
            except Exception as e:  # pragma: no cover - a defect
                errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and bad == []


# --- 15. TF compiled caches: bounded, released with the last object, shown in repr ----------
def live_concrete_functions():
    """Concrete functions (traced graphs, XLA executables) alive in the process."""
    from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction

    gc.collect()
    return sum(isinstance(o, ConcreteFunction) for o in gc.get_objects())


def tf_simple_rnn(rng, units):
    rnn = layers.RNN([layers.SimpleRNNCell(units, backend="tf", dtype="float64")], return_sequences=True)
    rnn.build((None, None, 2))
    rnn.set_weights(random_cell_weights(rng, "SimpleRNNCell", [2], units, "float64"))
    return rnn


@pytest.mark.parametrize("method", ["tf.function", "xla"])
def test_tf_compiled_cache_stays_bounded_over_many_shapes(method, rng, request):
    """40 input shapes (not 200: each is a trace, and for XLA a compile) through a cache of 4:
    at most 4 shapes stay traced, the evicted shapes' graphs are freed (weakrefs dead, live
    concrete functions do not grow with the shapes), and a re-traced shape computes the same
    outputs and gradients as the uncompiled RNN."""
    require("tensorflow")
    import tensorflow as tf

    rnn = tf_simple_rnn(rng, 3)
    fast = xf.compile(rnn, method)
    fast.cache_size = 4
    before = live_concrete_functions()
    functions = []  # weakrefs to every per-shape tf.function made
    shapes = [(batch, steps) for steps in range(1, 21) for batch in (1, 2)]
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    tf.get_logger().addHandler(handler)
    request.addfinalizer(lambda: tf.get_logger().removeHandler(handler))
    for batch, steps in shapes:
        x = tf.constant(rng.normal(size=(batch, steps, 2)))
        assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float64"]
        if method == "xla":
            with tf.GradientTape():  # the differentiable graphs (the eager call took the inference ones)
                fast(x)
            functions += [weakref.ref(fn) for fn, _ in fast._inference_cache.entries.values()]
        functions += [weakref.ref(fn) for fn in fast._graphs.cache.entries.values()]
        assert fast.cache_info()["graphs"] <= 4 and fast.cache_info()["inference"] <= 4
    # one trace per shape by design: TensorFlow's frequent-retracing warning stays quiet
    assert not [r.getMessage() for r in records if "retracing" in r.getMessage()]
    grown = live_concrete_functions() - before
    # XLA: run, its backward, the XLA forward and forward+backward, the inference function
    per_shape = 5 if method == "xla" else 1
    assert grown <= 4 * per_shape + 4, grown  # unbounded (a traced custom gradient never released): 40+
    gc.collect()
    alive = {id(r()) for r in functions if r() is not None}
    assert len(alive) <= (8 if method == "xla" else 4), len(alive)

    # the first shape, long evicted: traced again (T = 1, whose XLA gradient once failed)
    x = tf.constant(rng.normal(size=(1, 1, 2)))
    variables = rnn.trainable_variables
    with tf.GradientTape() as tape:
        y = fast(x, [tf.ones((1, 3), tf.float64)])
    got = tape.gradient(y, variables)
    with tf.GradientTape() as tape:
        y_want = rnn(x, [tf.ones((1, 3), tf.float64)])
    want = tape.gradient(y_want, variables)
    assert max_err(y.numpy(), y_want.numpy()) <= TOL["float64"]
    assert all(max_err(g.numpy(), w.numpy()) <= TOL["float64"] for g, w in zip(got, want, strict=True))
    assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float64"]


def test_xla_gradient_without_a_releasable_registry_runs_eagerly(rng, monkeypatch):
    """Where TensorFlow's gradient registry cannot be cleaned (``CAN_RELEASE_GRADIENTS`` false),
    the XLA custom gradient is not traced into a graph (it would pin evicted shapes): it runs
    eagerly and gives the uncompiled RNN's outputs and gradients."""
    require("tensorflow")
    import tensorflow as tf

    from rnn_xframework.backends.tensorflow.compile import cache as tf_cache

    monkeypatch.setattr(tf_cache, "CAN_RELEASE_GRADIENTS", False)
    rnn = tf_simple_rnn(rng, 11)  # a structure no other test compiles: its shapes trace here
    fast = xf.compile(rnn, "xla")
    x = tf.constant(rng.normal(size=(3, 4, 2)))
    with tf.GradientTape() as tape:
        y = fast(x)
    got = tape.gradient(y, rnn.trainable_variables)
    (entry,) = fast._graphs.cache.entries.values()
    assert not isinstance(entry, tf.types.experimental.GenericFunction)  # the eager wrapper, no graph
    with tf.GradientTape() as tape:
        y_want = rnn(x)
    want = tape.gradient(y_want, rnn.trainable_variables)
    assert max_err(y.numpy(), y_want.numpy()) <= TOL["float64"]
    assert all(max_err(g.numpy(), w.numpy()) <= TOL["float64"] for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("method", ["tf.function", "xla"])
def test_tf_compiled_graphs_go_with_the_last_object(method, rng):
    """The graphs shared by compiled RNNs of one structure live while one of them does:
    ``del fast; gc.collect()`` frees them (and their concrete functions)."""
    require("tensorflow")
    rnn = tf_simple_rnn(rng, 7)  # a structure no other test compiles
    before = live_concrete_functions()
    first, second = xf.compile(rnn, method), xf.compile(rnn, method)
    assert first._graphs is second._graphs  # shared: a second object traces nothing
    for steps in (1, 2, 3):
        x = rng.normal(size=(2, steps, 2))
        assert max_err(first(x).numpy(), rnn(x).numpy()) <= TOL["float64"]
        assert max_err(second(x).numpy(), rnn(x).numpy()) <= TOL["float64"]
    graphs = weakref.ref(first._graphs)
    assert live_concrete_functions() > before
    del first
    gc.collect()
    assert graphs() is not None  # the second object still uses them
    del second
    gc.collect()
    assert graphs() is None
    assert live_concrete_functions() <= before


def test_tf_compiled_repr_shows_the_cache(rng):
    require("tensorflow")
    from rnn_xframework.errors import UnsupportedConfigError

    rnn = tf_simple_rnn(rng, 4)  # structures of its own: graphs are shared per structure, with the
    fast = xf.compile(rnn, "xla")  # size last set on them (the test above sets 4 on the 3-unit graphs)
    assert "cache=0/16 shapes" in repr(fast) and "inference cache=0/16 shapes" in repr(fast)
    fast(rng.normal(size=(2, 3, 2)))  # eager inference: the XLA inference function
    assert "inference cache=1/16 shapes" in repr(fast)
    fast.cache_size = 8
    assert fast.cache_size == 8 and "/8 shapes" in repr(fast) and "/16" not in repr(fast)
    for bad in (0, -1, 2.5, "8", True):
        with pytest.raises(UnsupportedConfigError, match="cache_size"):
            fast.cache_size = bad
    assert fast.cache_size == 8  # a refused size changes nothing
    plain = xf.compile(tf_simple_rnn(rng, 5), "tf.function")
    plain(rng.normal(size=(1, 2, 2)))
    assert "cache=1/16 shapes" in repr(plain) and "inference" not in repr(plain)


# --- issue 18: devices that are not there are refused, with what is there ------------------
def _has_gpu(backend):
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@pytest.mark.parametrize(
    "backend, device, pattern",
    [
        ("torch", "cuda", "CPU-only build|not available here"),
        ("torch", "cuda:0", "CPU-only build|not available here"),
        ("torch", "xpu", "not available here"),
        ("torch", "bogus", "not a device PyTorch can use"),
        ("torch", 3, "not a device PyTorch can use"),
        ("tensorflow", "cuda", "TensorFlow sees no GPU:0"),
        ("tensorflow", "/GPU:0", "TensorFlow sees no GPU:0"),
        ("tensorflow", "gpu", "TensorFlow sees no GPU:0"),
        ("tensorflow", "bogus", "not a TensorFlow device"),
        ("tensorflow", 7, "not a TensorFlow device"),
    ],
)
@pytest.mark.parametrize("kind", ["LSTMCell"])
def test_a_device_that_is_not_here_is_refused_with_what_is(backend, device, pattern, kind):
    """Issue 18: ``device="cuda"`` without CUDA raised ``AssertionError: Torch not compiled with
    CUDA enabled``; TensorFlow's ``"cuda"`` a raw ``ValueError: Unknown attribute 'cuda'`` at the
    first call, and ``"/GPU:0"`` without a GPU ran on the CPU silently. Now the constructor raises
    ``UnsupportedConfigError`` naming the devices available here and ``'cpu'``."""
    require(backend)
    if device not in ("bogus", 3, 7) and _has_gpu(backend):
        pytest.skip("this machine has the device")
    with pytest.raises(xf.UnsupportedConfigError, match=pattern) as raised:
        getattr(layers, kind)(3, backend=backend, device=device)
    assert "cpu" in str(raised.value).lower()


def test_tensorflow_takes_pytorch_device_names():
    """``device="cpu"`` and ``"cuda"`` mean the same on both frameworks (``"cuda:1"`` is ``/GPU:1``)."""
    require("tensorflow")
    cell = layers.LSTMCell(3, backend="tf", device="cpu")
    assert cell(np.zeros((2, 4), "float32"), cell.get_initial_state(2))[0].shape == (2, 3)
    from rnn_xframework.backends.tensorflow.ops import resolve_device

    if _has_gpu("tensorflow"):
        assert resolve_device("cuda") == "/GPU:0"


def test_the_meta_device_defers_initialization_as_in_pytorch(rng):
    """``device="meta"`` works as PyTorch users expect: parameters without values, then
    ``to_empty(device=...)`` and weights; before that a call or ``get_weights`` raises
    ``NotBuiltError`` saying so (it was a raw ``RuntimeError`` / ``NotImplementedError``)."""
    require("torch")
    import torch

    rnn = layers.RNN([layers.LSTMCell(3, backend="torch", device="meta") for _ in range(2)])
    rnn.build((None, None, 2))
    assert all(p.is_meta for p in rnn.parameters())
    x = rng.normal(size=(2, 4, 2)).astype("float32")
    with pytest.raises(xf.NotBuiltError, match="to_empty"):
        rnn(torch.from_numpy(x))
    with pytest.raises(xf.NotBuiltError, match="to_empty"):
        rnn.get_weights()
    with pytest.raises(xf.NotBuiltError, match="to_empty"):
        rnn.cells[0](torch.from_numpy(x[:, 0]), rnn.cells[0].get_initial_state(2))
    rnn.to_empty(device="cpu")
    weights = random_cell_weights(rng, "LSTMCell", [2, 3], 3, "float32")
    rnn.set_weights(weights)
    ref = layers.RNN([layers.LSTMCell(3, backend="numpy") for _ in range(2)])
    ref.set_weights(weights)
    assert max_err(rnn(torch.from_numpy(x)).detach().numpy(), ref(x)) <= TOL["float32"]


def test_xla_recompiles_are_counted_and_can_be_bounded(rng):
    """Issue 18: each re-compile of an evicted shape keeps about 1 MB of TensorFlow's memory for
    the life of the process (not releasable from Python: docs/reliability.md). ``cache_info()``
    counts the compiles, re-compiles included, and ``fast.max_compiles`` bounds them: the call
    that would compile once more raises, shapes still compiled keep running."""
    require("tensorflow")
    rnn = tf_simple_rnn(rng, 13)  # a structure no other test compiles: the shared count starts at 0
    fast = xf.compile(rnn, "xla")
    fast.cache_size = 2
    assert fast.max_compiles is None and fast.cache_info()["compiles"] == 0
    for steps in (1, 2, 3, 1):  # the second T=1 was evicted: compiled again
        x = rng.normal(size=(2, steps, 2))
        assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float64"]
    assert fast.cache_info()["compiles"] == 4
    fast.max_compiles = 5
    fast(rng.normal(size=(2, 2, 2)))  # evicted too: the fifth compile
    with pytest.raises(xf.UnsupportedConfigError, match="max_compiles"):
        fast(rng.normal(size=(2, 4, 2)))
    assert fast.cache_info()["compiles"] == 5
    x = rng.normal(size=(2, 2, 2))  # still compiled: runs
    assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float64"]
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(xf.UnsupportedConfigError, match="max_compiles"):
            fast.max_compiles = bad
    assert fast.max_compiles == 5
    fast.max_compiles = None
    fast(rng.normal(size=(2, 4, 2)))
    assert fast.cache_info()["compiles"] == 6
