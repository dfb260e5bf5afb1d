"""TensorFlow / Keras 3 peers: ``SimpleRNN`` / ``LSTM`` / ``GRU`` stacks and ``SimpleRNNCell`` loops.

The Keras stack is ``Sequential([Layer(u, return_sequences=True), Layer(u)])``
(``Layer`` the workload's ``keras.layers.SimpleRNN``, ``LSTM`` or ``GRU``): as in the
Keras tutorial the second layer returns only its last output, while the torch
peers and the cell loops return the whole sequence of the second layer; all of
them compute every step of both layers. Bidirectional: each layer wrapped in
``keras.layers.Bidirectional`` (concatenated). Masked: the two layers called with
``mask=`` (the workload's lengths; the first with ``zero_output_for_mask=True``,
zeros in the padding as PyTorch's packed output has), since ``Sequential`` drops a
mask given to it. With ``grad=True`` a call is forward + ``tape.gradient(sum(outputs),
[x, *weights])``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from rnn_xframework.bench.framework_setup import check_device, quiet_tensorflow, sync_fn
from rnn_xframework.bench.methods import Runner
from rnn_xframework.bench.timing import time_first_call
from rnn_xframework.bench.workloads import Workload

if TYPE_CHECKING:
    import tensorflow as tf

Mode = Literal["eager", "function", "xla"]
Forward = Callable[["tf.Tensor"], "tf.Tensor"]


def _device_name(device: str) -> str:
    check_device("tensorflow", device)
    return "/GPU:0" if device == "cuda" else "/CPU:0"


def _input(w: Workload) -> tf.Tensor:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    return tf.random.normal([w.batch, w.steps, w.features])


def _compile(
    forward: Forward,
    weights: list[object],
    x: tf.Tensor,
    grad: bool,
    mode: Mode,
    device: str,
) -> tuple[Runner, float]:
    """Wrap ``forward`` for fwd or fwd+bwd, eager or ``tf.function`` (+XLA); time call 1."""
    import tensorflow as tf

    fn: Forward
    if grad:

        def fn(x: tf.Tensor) -> object:
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(forward(x))
            return tape.gradient(loss, [x, *weights])
    else:
        fn = forward
    if mode != "eager":
        fn = tf.function(fn, jit_compile=(mode == "xla"))

    if device == "cpu":

        def run() -> object:
            return fn(x)
    else:
        name = _device_name(device)

        def run() -> object:
            with tf.device(name):
                return fn(x)

    return run, time_first_call(run, sync_fn("tensorflow", device))


KERAS_LAYERS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}


def mask(w: Workload) -> tf.Tensor:
    """The ``[batch, steps]`` boolean mask of ``w.lengths()`` (true for real steps, right-padded)."""
    import tensorflow as tf

    return tf.sequence_mask(w.lengths(), w.steps)


def keras_stack(w: Workload, device: str) -> tuple[Forward, Any, tf.Tensor]:
    """``(forward, model, x)``: the Keras stack of ``w`` (a ``Sequential``), the function that runs
    it (masked: its two layers called with the workload's ``mask=``) and the input."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    layer = getattr(keras.layers, KERAS_LAYERS[w.cell])
    wrap = keras.layers.Bidirectional if w.bidirectional else (lambda inner: inner)
    with tf.device(_device_name(device)):
        x = _input(w)
        m = mask(w) if w.masked else None
        first = wrap(layer(w.units, return_sequences=True, zero_output_for_mask=w.masked))
        model = keras.Sequential([keras.Input(shape=(w.steps, w.features)), first, wrap(layer(w.units))])

    def forward(x: tf.Tensor) -> tf.Tensor:
        return model(x)

    def forward_masked(x: tf.Tensor) -> tf.Tensor:
        layer1, layer2 = model.layers
        return layer2(layer1(x, mask=m), mask=m)

    return (forward_masked if w.masked else forward), model, x


def _keras_stack(w: Workload, grad: bool, device: str, mode: Mode) -> tuple[Runner, float]:
    forward, model, x = keras_stack(w, device)
    return _compile(forward, list(model.trainable_variables), x, grad, mode, device)


def setup_stack_eager(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The workload's Keras layer (``SimpleRNN``, ``LSTM``, ``GRU``) x2 called eagerly."""
    return _keras_stack(w, grad, device, "eager")


def setup_stack_function(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The workload's Keras layer x2 inside ``tf.function``."""
    return _keras_stack(w, grad, device, "function")


def setup_stack_xla(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The workload's Keras layer x2 inside ``tf.function(jit_compile=True)`` (XLA)."""
    return _keras_stack(w, grad, device, "xla")


def _built_cells(w: Workload, make: Callable[[int], Any] | None = None) -> tuple[Any, Any]:
    """Two ``keras.layers.SimpleRNNCell`` (or ``make(units)``), built eagerly (so tf.function
    creates no variables)."""
    import keras
    import tensorflow as tf

    make = make or keras.layers.SimpleRNNCell
    cell0 = make(w.units)
    cell1 = make(w.units)
    zeros = tf.zeros([w.batch, w.units])
    out0, _ = cell0(tf.zeros([w.batch, w.features]), [zeros])
    cell1(out0, [zeros])
    return cell0, cell1


def cell_loop(
    w: Workload, grad: bool, device: str, mode: Mode, make: Callable[[int], Any] | None = None
) -> tuple[Runner, float]:
    """The tutorial's timestep-major loop over two cells (Keras's, or ``make(units)``)."""
    quiet_tensorflow()
    import tensorflow as tf

    with tf.device(_device_name(device)):
        x = _input(w)
        cell0, cell1 = _built_cells(w, make)

    def forward(x: tf.Tensor) -> tf.Tensor:
        h0 = [tf.zeros([w.batch, w.units])]
        h1 = [tf.zeros([w.batch, w.units])]
        outs = []
        for xt in tf.unstack(x, axis=1):
            out0, h0 = cell0(xt, h0)
            out1, h1 = cell1(out0, h1)
            outs.append(out1)
        return tf.stack(outs, axis=1)

    weights = [*cell0.trainable_variables, *cell1.trainable_variables]
    return _compile(forward, weights, x, grad, mode, device)


def setup_cell_loop_function(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """Raw ``SimpleRNNCell`` loop in ``tf.function`` (unrolled over ``steps`` at trace)."""
    return cell_loop(w, grad, device, "function")


def setup_cell_loop_eager(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The same raw ``SimpleRNNCell`` loop, run eagerly."""
    return cell_loop(w, grad, device, "eager")


def setup_tutorial_eager(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """The tutorial's eager loop: two ``keras.layers.SimpleRNNCell``,
    ``for xt in tf.unstack(x, axis=1)``, states in lists,
    ``out0, h0 = cell0(xt, h0); out1, h1 = cell1(out0, h1)``. The same code as
    ``setup_cell_loop_eager``, listed under the tutorial's name: the two rows show the noise."""
    return cell_loop(w, grad, device, "eager")


def setup_gemm_matmul(n: int, device: str) -> tuple[Runner, float]:
    """``tf.linalg.matmul`` of fp32 ``n x n`` inside ``tf.function``."""
    quiet_tensorflow()
    import tensorflow as tf

    with tf.device(_device_name(device)):
        tf.random.set_seed(0)
        a = tf.random.normal([n, n])
        b = tf.random.normal([n, n])
    fn = tf.function(tf.linalg.matmul)

    def run() -> object:
        return fn(a, b)

    return run, time_first_call(run, sync_fn("tensorflow", device))
