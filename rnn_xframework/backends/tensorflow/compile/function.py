"""``xf.compile(rnn, "tf.function")`` and ``xf.compile(rnn, "xla")``: a TensorFlow stack as one
graph, layer by layer with precomputed input projections.

The only module that calls ``tf.function`` for ``xf.compile``. Each layer projects its whole
input sequence in one product, ``xp = x[time*batch, in] @ kernel + bias``, then the traced loop
(unrolled over the static number of steps) runs only the recurrent product per step and the
cell's gates with the cell's own activations. ``"xla"`` adds ``jit_compile=True``; an XLA
call of a SimpleRNN stack that no ``tf.GradientTape`` records runs :func:`one_product_layer_major`
instead (one product per step, no gradient wrapper), through a cached concrete function.

Every step computes what the Keras cell computes, with the bias sums grouped differently:
results agree within float rounding. Both orderings give the same numbers, so this graph serves
both. The graph reads the cells' variables, so ``set_weights`` and optimizer steps on the
source show here, and ``tf.GradientTape`` differentiates through it. A new input shape traces
(and for XLA compiles) once, into a bounded LRU cache of :data:`CACHE_SIZE` shapes (settable per
object as ``fast.cache_size``): each shape gets its own ``tf.function``, so evicting a shape drops
its graphs and XLA executables (and the gradient function its XLA graph registered with TensorFlow:
:mod:`~rnn_xframework.backends.tensorflow.compile.cache`). The shared graphs of a structure are released when the last
compiled object using them is garbage-collected.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

try:
    from tensorflow.python.eager import context as _tf_context
    from tensorflow.python.eager.record import could_possibly_record as _could_possibly_record
except ImportError:  # pragma: no cover - other TensorFlow layouts: the differentiable path, no cache
    _tf_context = _could_possibly_record = None

from rnn_xframework import compiled
from rnn_xframework.backends.tensorflow.compile import cache
from rnn_xframework.backends.tensorflow.compile.cache import (
    CACHE_SIZE,
    LRU,
    GradientNames,
    check_max_compiles,
    per_shape,
    shape_key,
)
from rnn_xframework.backends.tensorflow.compile.graph_loops import (
    Weights,
    layer_major,
    one_product_layer_major,
    timestep_major,
    weights_of,
)
from rnn_xframework.errors import UnsupportedConfigError

TIMESTEP_MAJOR_MAX = 4096
"""``batch * units`` up to which :func:`timestep_major` is used (measured: W1 (4 x 64) runs
about 25% faster that way under XLA, W2 (64 x 256) about 10% slower)."""


UNROLL_MAX_STEPS = 256
"""``"tf.function"`` unrolls the time loop up to this many steps (fastest to run); longer
sequences run one ``tf.while_loop``, so tracing time and graph memory do not grow with T."""


class Structure(NamedTuple):
    """Everything a graph depends on except the weights' values and the call's tensors."""

    cells: tuple[tuple[Any, ...], ...]  # per cell: what cell_step and project read of it
    go_backwards: bool
    return_sequences: bool
    jit_compile: bool
    timestep_major_max: int  # TIMESTEP_MAJOR_MAX when compiled
    zero_output_for_mask: bool


def structure_of(rnn: Any, jit_compile: bool) -> Structure:
    cells = tuple(
        (
            c.cell_kind,
            c.layout_name,
            c.units,
            tuple(c.state_sizes),
            c.bias is not None,
            repr(sorted(c.portable_config().items())),
        )
        for c in rnn.cells
    )
    return Structure(
        cells,
        bool(rnn.go_backwards),
        bool(rnn.return_sequences),
        jit_compile,
        TIMESTEP_MAJOR_MAX,
        bool(rnn.zero_output_for_mask),
    )


class Graphs:
    """The ``tf.function`` objects of one :class:`Structure`, shared by every :class:`CompiledRNN` of it.

    The weights enter as tensors (read from the variables at each call), so two compiled RNNs
    of the same structure run the same traced graphs: compiling a new RNN of a structure seen
    before traces nothing, and TensorFlow's retracing warning (which counts traces per Python
    function, across objects) has nothing to count.

    Each input shape gets its own ``tf.function`` (made by :meth:`function`, kept in the LRU
    ``cache``): evicting a shape drops its traced graphs and XLA executables with it.
    """

    def __init__(self, structure: Structure, template: Sequence[Any]) -> None:
        self.structure = structure
        # The first compiled RNN's cells stand for every RNN of this structure: the graphs read
        # their configuration only (activations, sizes, layout), never their variables.
        self.cells = tuple(template)
        self.cache = LRU(CACHE_SIZE)

    def function(self, x: Any, states: Any, masked: bool = False) -> Any:
        """The ``tf.function`` for this call's shapes: ``(x, states, flat_weights) -> (y, states)``;
        ``masked``: ``(x, states, flat_weights, mask [batch, time] bool) -> (y, states)``."""
        return self.cache.get((*shape_key(x, states), masked), lambda: self._make(masked))

    def _make(self, masked: bool) -> Any:
        if not self.structure.jit_compile:  # one graph per call: the eager work is one function call
            return per_shape(self._run_masked if masked else self._run, jit_compile=False)
        forward = per_shape(self._loop, jit_compile=True)
        backward = per_shape(self._loop_gradients, jit_compile=True)
        if masked:
            return self._make_xla_masked(forward, backward)
        if not cache.CAN_RELEASE_GRADIENTS:  # eager: a traced custom gradient would pin evicted shapes
            return lambda x, states, weights: self._run_xla(x, states, weights, forward, backward)
        # One graph per call, as for "tf.function". The custom gradient traced into it registers
        # its gradient function in TensorFlow's process-wide registry; ``names`` takes it back
        # when this shape's function is evicted and collected (else it keeps the graphs alive).
        names = GradientNames()

        def run(x: tf.Tensor, states: Any, weights: list[Any]) -> tuple[tf.Tensor, list[Any]]:
            y, new = self._run_xla(x, states, weights, forward, backward)
            names.add(y)
            return y, new

        return names.release_with(per_shape(run, jit_compile=False))

    def _make_xla_masked(self, forward: Any, backward: Any) -> Any:
        """:meth:`_make`'s XLA function for masked calls (the same, with the mask passed on)."""
        if not cache.CAN_RELEASE_GRADIENTS:
            return lambda x, states, weights, mask: self._run_xla(x, states, weights, forward, backward, mask)
        names = GradientNames()

        def run(x: tf.Tensor, states: Any, weights: list[Any], mask: tf.Tensor) -> tuple[tf.Tensor, list[Any]]:
            y, new = self._run_xla(x, states, weights, forward, backward, mask)
            names.add(y)
            return y, new

        return names.release_with(per_shape(run, jit_compile=False))

    def _loop(
        self, x: tf.Tensor, states: list[list[tf.Tensor]], weights: list[Weights], mask: Any = None
    ) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
        """``x [batch, time, in]`` -> ``(y, states)`` with these weights, one per cell; with
        ``mask [batch, time]`` (bool), Keras's masked loop: the padding's inputs are zeros before
        any arithmetic (so NaN there reaches neither outputs nor gradients), then each step holds
        the states and output where the mask is false (graph_loops.hold_step)."""
        s = self.structure
        keep = None
        if mask is not None:
            keep = tf.transpose(mask)[:, :, None]  # [time, batch, 1]
            x = tf.where(tf.transpose(keep, [1, 0, 2]), x, tf.zeros_like(x))
            if s.go_backwards:
                keep = tf.reverse(keep, [0])
        if s.go_backwards:
            x = tf.reverse(x, [1])
        seq = tf.transpose(x, [1, 0, 2])
        layers = list(zip(self.cells, weights, strict=True))
        small = x.shape[0] is not None and x.shape[0] * max(c.units for c in self.cells) <= s.timestep_major_max
        run = timestep_major if (small or not s.jit_compile) and len(layers) > 1 else layer_major
        # unrolled up to UNROLL_MAX_STEPS (fastest); longer: one while loop, a graph that does not grow with T
        unroll = not s.jit_compile and x.shape[1] <= UNROLL_MAX_STEPS
        seq, new_states = run(layers, seq, states, unroll, keep, s.zero_output_for_mask)
        y = tf.transpose(seq, [1, 0, 2]) if s.return_sequences else seq[-1]
        return y, new_states

    def _pack_weights(self, flat: list[tf.Tensor]) -> list[Weights]:
        """``[kernel, recurrent_kernel, (bias), ...]`` -> one :class:`Weights` per cell."""
        values = iter(flat)
        return [Weights(*(None if v is None else next(values) for v in weights_of(c))) for c in self.cells]

    def _loop_gradients(
        self, x: tf.Tensor, flat: list[tf.Tensor], weights: list[tf.Tensor], upstream: list[Any], mask: Any = None
    ) -> Any:
        """Forward and backward of :meth:`_loop` in one XLA function: gradients of
        ``sum(y * dy) + sum(s * ds)`` (``upstream = [dy, *ds]``) w.r.t. ``x``, the flat states
        and the flat weights."""
        structure = [list(c.state_sizes) for c in self.cells]
        sources = [x, *flat, *weights]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            y, new = self._loop(x, tf.nest.pack_sequence_as(structure, flat), self._pack_weights(weights), mask)
        grads = tape.gradient([y, *tf.nest.flatten(new)], sources, output_gradients=upstream)
        return [tf.zeros_like(s) if g is None else g for g, s in zip(grads, sources, strict=True)]

    def _initial(self, x: tf.Tensor, states: Any) -> list[list[tf.Tensor]]:
        """``states``, or zeros ``[batch, units]`` for each state of each cell when ``None``."""
        if states is not None:
            return [list(s) for s in states]
        batch = tf.shape(x)[0]
        return [[tf.zeros([batch, n], x.dtype) for n in c.state_sizes] for c in self.cells]

    def _run(self, x: tf.Tensor, states: Any, flat_weights: list[Any]) -> tuple[tf.Tensor, list[Any]]:
        """The plain ``tf.function`` graph."""
        return self._loop(x, self._initial(x, states), self._pack_weights(flat_weights))

    def _run_masked(self, x: tf.Tensor, states: Any, flat_weights: list[Any], mask: tf.Tensor) -> Any:
        """The plain ``tf.function`` graph of a masked call."""
        return self._loop(x, self._initial(x, states), self._pack_weights(flat_weights), mask)

    def _run_xla(
        self, x: tf.Tensor, states: Any, flat_weights: list[Any], forward: Any, backward: Any, mask: Any = None
    ) -> tuple[tf.Tensor, list[Any]]:
        """The XLA while loop ``forward``, its gradient a second XLA function ``backward`` (the
        forward recomputed).

        TensorFlow cannot differentiate an XLA-compiled ``tf.while_loop`` from outside the
        compiled function ("TensorList crossing the XLA/TF boundary"), so the gradient is a
        ``tf.custom_gradient`` that runs forward and backward in one XLA function, as Keras's
        XLA training step does. The weights enter as tensors read from the variables, so
        gradients reach the variables through those reads. A ``mask`` goes to both (no gradient).
        """
        extra = () if mask is None else (mask,)
        structure = self._initial(x, states)
        flat_states = tf.nest.flatten(structure)
        n_states = len(flat_states)

        @tf.custom_gradient
        def run(x: tf.Tensor, *inputs: tf.Tensor) -> Any:
            frozen = [tf.stop_gradient(t) for t in (x, *inputs)]  # the forward records nothing
            states = tf.nest.pack_sequence_as(structure, frozen[1 : 1 + n_states])
            y, new = forward(frozen[0], states, self._pack_weights(frozen[1 + n_states :]), *extra)
            outputs = [y, *tf.nest.flatten(new)]

            def grad(*upstream: Any) -> list[tf.Tensor]:
                upstream_ = [tf.zeros_like(o) if d is None else d for d, o in zip(upstream, outputs, strict=True)]
                return backward(x, list(inputs[:n_states]), list(inputs[n_states:]), upstream_, *extra)

            return tuple(outputs), grad

        y, *flat_new = run(x, *flat_states, *(tf.convert_to_tensor(w) for w in flat_weights))
        return y, tf.nest.pack_sequence_as(structure, flat_new)


_GRAPHS: weakref.WeakValueDictionary[Structure, Graphs] = weakref.WeakValueDictionary()
"""Held weakly: a structure's graphs go when the last compiled object using them does."""
_GRAPHS_LOCK = threading.Lock()


def graphs_for(rnn: Any, jit_compile: bool) -> Graphs:
    """The shared :class:`Graphs` of ``rnn``'s structure (made on first use; thread-safe)."""
    structure = structure_of(rnn, jit_compile)
    with _GRAPHS_LOCK:
        graphs = _GRAPHS.get(structure)
        if graphs is None:
            graphs = _GRAPHS[structure] = Graphs(structure, rnn.cells)
        return graphs


class CompiledRNN(compiled.CompiledRNN):
    """A TensorFlow ``RNN`` run as one ``tf.function`` graph; called and answering like the
    source: ``y = fast(x, initial_state=None, training=None)``.

    ``mask=`` runs Keras's masked loop in the graph (its own trace per shape). Dropout in
    training is refused (:class:`UnsupportedConfigError`): the graph has none, and it never
    silently takes the slow path.
    """

    backend = "tensorflow"

    def __init__(self, rnn: Any, jit_compile: bool) -> None:
        self._init_compiled(rnn, "xla" if jit_compile else "tf.function")
        self.jit_compile = jit_compile
        self._graphs = graphs_for(rnn, jit_compile)
        shortcut = jit_compile and all(c.cell_kind == "SimpleRNNCell" for c in rnn.cells)
        # Plain functions, not bound methods, and no ``None`` argument: each of those costs
        # tf.function about 0.07 ms per call, 15% of W1 (measured).
        self._inference_shortcut = shortcut
        # key -> (tf.function, its concrete function for eager calls or None): one per shape
        self._inference_cache = LRU(self._graphs.cache.size)

    @property
    def cache_size(self) -> int:
        """Input shapes kept traced (LRU; default :data:`CACHE_SIZE`). Setting it also sets the
        bound of the graphs shared by every compiled RNN of this structure."""
        return self._inference_cache.size

    @cache_size.setter
    def cache_size(self, size: int) -> None:
        self._graphs.cache.resize(size)
        self._inference_cache.resize(size)

    @property
    def max_compiles(self) -> int | None:
        """The most per-shape traces (XLA: compiles) this object may make in all, re-compiles of
        shapes the LRU evicted included; ``None`` (default) for no bound. A call that would make
        one more raises :class:`~rnn_xframework.errors.UnsupportedConfigError`, so a service
        bounds the memory TensorFlow keeps per XLA compile (about 1 MB each, never released;
        docs/reliability.md). Setting it also sets the bound of the graphs shared by every
        compiled RNN of this structure, whose count is shared too."""
        return self._inference_cache.max_made

    @max_compiles.setter
    def max_compiles(self, value: int | None) -> None:
        value = check_max_compiles(value)
        self._graphs.cache.max_made = value
        self._inference_cache.max_made = value

    def cache_info(self) -> dict[str, int]:
        """``{"graphs": shapes traced in the shared graphs, "inference": shapes traced for XLA
        inference, "size": the bound of each, "compiles": per-shape traces / XLA compiles made so
        far (the shared graphs' and this object's inference ones)}``."""
        return {
            "graphs": len(self._graphs.cache),
            "inference": len(self._inference_cache),
            "size": self.cache_size,
            "compiles": self._graphs.cache.made + self._inference_cache.made,
        }

    def __repr__(self) -> str:
        if not self.built:
            return f"CompiledRNN(method={self.method!r}, source={self.source.name!r}, compiled on the first call)"
        info = self.cache_info()
        extra = f", inference cache={info['inference']}/{info['size']} shapes" if self._inference_shortcut else ""
        return (
            f"CompiledRNN(method={self.method!r}, source={self.source.name!r}, "
            f"cache={info['graphs']}/{info['size']} shapes{extra})"
        )

    @property
    def trainable_variables(self) -> list[Any]:
        return list(self.source.trainable_variables)

    def _flat_weights(self) -> list[Any]:
        """Every cell's weight variables (no bias without ``use_bias``): the graphs take them as
        arguments and read them inside, so one trace serves every RNN of the structure and a call
        does no eager reads."""
        # the tf.Variable under each Keras variable (``.value``): tf.function then takes it by
        # handle; a Keras variable is read through ``__array__`` to build its trace type, 0.8 ms
        # per W1 call (measured)
        return [v.value for cell in self.source.cells for v in weights_of(cell) if v is not None]

    def _initial(self, x: tf.Tensor, states: Any) -> list[list[tf.Tensor]]:
        return self._graphs._initial(x, states)

    def _run_inference(self, x: tf.Tensor, states: Any) -> Any:
        """XLA without a gradient (no tape records): :func:`one_product_layer_major` on the variables.

        Returns ``(y, states)`` with ``return_state``, else ``y`` alone (each output of an XLA
        function costs time at W1's sizes)."""
        seq = tf.reverse(x, [1]) if self.source.go_backwards else x
        layers = [(c, weights_of(c)) for c in self.source.cells]
        seq, new_states = one_product_layer_major(layers, tf.transpose(seq, [1, 0, 2]), self._initial(x, states))
        y = tf.transpose(seq, [1, 0, 2]) if self.source.return_sequences else seq[-1]
        return (y, new_states) if self.source.return_state else y

    def _inference(self, x: tf.Tensor, states: Any) -> Any:
        """Call the inference function; in eager mode through its concrete function for this
        signature, traced once and kept: ``tf.function``'s own per-call lookup (canonicalizing
        the arguments, the cache key) costs ~0.1 ms, 20% of W1 (measured). The key holds what
        ``tf.function``'s does for these arguments: shapes, dtypes and the device scope.
        Concrete functions read the variables at each call, so ``set_weights`` and optimizer
        steps show."""
        args = (x,) if states is None else (x, states)
        eager = _eager_key(args)
        key = eager if eager is not None else ("graph", shape_key(x, states))

        def make() -> tuple[Any, Any]:
            if states is None:
                fn = per_shape(lambda x: self._run_inference(x, None), jit_compile=True)
            else:
                fn = per_shape(lambda x, s: self._run_inference(x, s), jit_compile=True)
            return fn, (fn.get_concrete_function(*args) if eager is not None else None)

        fn, concrete = self._inference_cache.get(key, make)
        return (concrete or fn)(*args)

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        source = self.source
        inputs = _native(inputs)
        self._ready(inputs)
        if isinstance(initial_state, (list, tuple)):  # NumPy states, as Keras layers accept them
            initial_state = [
                [_native(s) for s in x] if isinstance(x, (list, tuple)) else _native(x) for x in initial_state
            ]
        states = self.check_call(inputs, initial_state, training, mask)
        if source.time_major:  # the graphs run batch-first
            inputs = tf.transpose(inputs, [1, 0, 2])
        if inputs.shape[1] is None:
            raise UnsupportedConfigError(f"compile: the {self.method} graph needs a static number of time steps")
        device = source.cell.cells[0].device
        with tf.device(device) if device is not None else contextlib.nullcontext():
            if mask is not None:
                mask = tf.cast(mask, tf.bool) if isinstance(mask, tf.Tensor) else tf.constant(np.asarray(mask) != 0)
                fn = self._graphs.function(inputs, states, masked=True)
                y, new_states = fn(inputs, states, self._flat_weights(), mask)
            elif self._inference_shortcut and not _recording():
                result = self._inference(inputs, states)
                y, new_states = (result, None) if not source.return_state else result
            else:
                y, new_states = self._graphs.function(inputs, states)(inputs, states, self._flat_weights())
        if source.time_major and source.return_sequences:
            y = tf.transpose(y, [1, 0, 2])
        return (y, [list(s) for s in new_states]) if source.return_state else y


def _recording() -> bool:
    """Whether a ``tf.GradientTape`` may record this call (then the differentiable path runs).

    TensorFlow has no public query; its own ``record.could_possibly_record`` (tf 2.12 and
    newer) answers it. Where that is missing, assume a tape: the differentiable path is always
    correct, only slower."""
    return _could_possibly_record is None or bool(_could_possibly_record())


def _eager_key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A cache key for an eager call with these arguments, or ``None`` (graph mode, an argument
    that is not a tensor, or a TensorFlow without the private context module)."""
    if _tf_context is None or not tf.executing_eagerly():
        return None
    flat = tf.nest.flatten(args)
    if not all(isinstance(t, tf.Tensor) for t in flat):
        return None
    # the structure is fixed by the call's checks (one state per SimpleRNN layer): shapes suffice
    return (_tf_context.context().device_name, *((tuple(t.shape), t.dtype) for t in flat))


def _native(x: Any) -> Any:
    return tf.convert_to_tensor(x) if isinstance(x, np.ndarray) else x


def compile_function(rnn: Any) -> CompiledRNN:
    """``xf.compile(rnn, "tf.function")``: the graph without XLA."""
    return CompiledRNN(rnn, jit_compile=False)


def compile_xla(rnn: Any) -> CompiledRNN:
    """``xf.compile(rnn, "xla")``: the graph compiled by XLA (``jit_compile=True``)."""
    return CompiledRNN(rnn, jit_compile=True)
