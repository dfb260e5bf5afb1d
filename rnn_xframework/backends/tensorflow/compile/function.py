"""``xf.compile(rnn, "tf.function")`` and ``xf.compile(rnn, "xla")``: a TensorFlow stack as one
graph, layer by layer with precomputed input projections.

The only module that calls ``tf.function`` for ``xf.compile``. Each layer projects its whole
input sequence in one product, ``xp = x[time*batch, in] @ kernel + bias``, then the traced loop
(unrolled over the static number of steps) runs only the recurrent product per step and the
cell's gates with the cell's own activations. ``"xla"`` adds ``jit_compile=True``; an XLA
call that no ``tf.GradientTape`` records (any cell type, masked or not; not a training call with
dropout) runs the loop's inference form instead, through a cached concrete function: no gradient
wrapper, layer by layer, each step's input projected as it is read (a SimpleRNN or LSTM layer's
two products summed in one: :func:`~rnn_xframework.backends.tensorflow.compile.graph_loops.summed_step`).

A training call (``training=True``) of a stack with ``dropout`` / ``recurrent_dropout`` draws each
cell's masks as the uncompiled RNN does (:func:`dropout_masks`: the cells' own generators, or the
masks set by ``set_dropout_masks``) and passes them to the graph as inputs, so one trace per shape
serves every draw; the graph multiplies the inputs before the projection and the state before the
recurrent product, per gate where Keras has a mask per gate (with or without ``mask=``).

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
from typing import Any

import numpy as np
import tensorflow as tf

try:
    from tensorflow.python.eager import context as _tf_context
    from tensorflow.python.eager.record import could_possibly_record as _could_possibly_record
except ImportError:  # pragma: no cover - other TensorFlow layouts: the differentiable path, no cache
    _tf_context = _could_possibly_record = None

from rnn_xframework import compiled, dropout
from rnn_xframework.backends.tensorflow.compile.cache import (
    LRU,
    check_max_compiles,
    per_shape,
    shape_key,
)
from rnn_xframework.backends.tensorflow.compile.graph_loops import Dropped, weights_of
from rnn_xframework.backends.tensorflow.compile.graphs import graphs_for
from rnn_xframework.errors import UnsupportedConfigError


class CompiledRNN(compiled.CompiledRNN):
    """A TensorFlow ``RNN`` run as one ``tf.function`` graph; called and answering like the
    source: ``y = fast(x, initial_state=None, training=None)``.

    ``mask=`` runs Keras's masked loop in the graph (its own trace per shape). A training call
    with dropout runs the graph with the cells' dropout masks for the call (its own trace per
    shape; the masks drawn as the uncompiled RNN draws them, then reset), with or without ``mask=``.
    """

    backend = "tensorflow"
    takes_dropout = True

    def __init__(self, rnn: Any, jit_compile: bool) -> None:
        self._init_compiled(rnn, "xla" if jit_compile else "tf.function")
        self.jit_compile = jit_compile
        self._graphs = graphs_for(rnn, jit_compile)
        # XLA calls no tape records (every cell type, masked or not) run _run_inference. Plain
        # functions, not bound methods, and no ``None`` argument: each of those costs tf.function
        # about 0.07 ms per call, 15% of W1 (measured).
        self._inference_shortcut = jit_compile
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

    def traced_loop(
        self, x: tf.Tensor, states: Any, flat_weights: Any = None, keep: Any = None, inference: bool = False
    ) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
        """This RNN's graph loop, for a function being traced (this object's own, or a fused
        ``Bidirectional``'s): ``x [batch, time, in]`` (batch-first), ``states`` (``None``: zeros)
        -> ``(y, states)``, ``y`` ``[batch, time, units]`` or ``[batch, units]``.

        ``flat_weights``: tensors listed as :meth:`_flat_weights` lists them, or ``None`` to read
        the variables themselves; ``keep [batch, time]`` (bool): Keras's masked loop;
        ``inference``: the loop's XLA inference form (``Graphs._loop``)."""
        graphs = self._graphs
        if flat_weights is None:
            weights = [weights_of(c) for c in self.source.cells]
        else:
            weights = graphs._pack_weights(flat_weights)
        return graphs._loop(x, graphs._initial(x, states), weights, keep, inference=inference)

    def _run_inference(self, x: tf.Tensor, states: Any, keep: Any = None) -> Any:
        """XLA without a gradient (no tape records): :meth:`traced_loop`'s inference form on the
        variables (projections per step, a SimpleRNN or LSTM layer's two products in one); ``keep
        [batch, time]`` (bool): Keras's masked loop.

        Returns ``(y, states)`` with ``return_state``, else ``y`` alone (each output of an XLA
        function costs time at W1's sizes)."""
        y, new_states = self.traced_loop(x, states, keep=keep, inference=True)
        return (y, new_states) if self.source.return_state else y

    def _inference(self, x: tf.Tensor, states: Any, keep: Any = None) -> Any:
        """Call the inference function; in eager mode through its concrete function for this
        signature, traced once and kept: ``tf.function``'s own per-call lookup (canonicalizing
        the arguments, the cache key) costs ~0.1 ms, 20% of W1 (measured). The key holds what
        ``tf.function``'s does for these arguments: shapes, dtypes and the device scope.
        Concrete functions read the variables at each call, so ``set_weights`` and optimizer
        steps show."""
        args = (x,) if states is None else (x, states)
        args += () if keep is None else (keep,)
        eager = eager_key(args)
        masked = None if keep is None else shape_key(keep, None)
        key = (masked, *(eager if eager is not None else ("graph", shape_key(x, states))))

        def make() -> tuple[Any, Any]:
            def run(x: tf.Tensor, *given: Any) -> Any:  # the states and mask that were given: no None argument
                rest = list(given)
                return self._run_inference(
                    x, rest.pop(0) if states is not None else None, rest.pop(0) if keep is not None else None
                )

            fn = per_shape(run, jit_compile=True)
            return fn, (fn.get_concrete_function(*args) if eager is not None else None)

        fn, concrete = self._inference_cache.get(key, make)
        return (concrete or fn)(*args)

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        source = self.source
        inputs = native(inputs)
        self._ready(inputs)
        if isinstance(initial_state, (list, tuple)):  # NumPy states, as Keras layers accept them
            initial_state = [
                [native(s) for s in x] if isinstance(x, (list, tuple)) else native(x) for x in initial_state
            ]
        states = self.check_call(inputs, initial_state, training, mask)
        if source.time_major:  # the graphs run batch-first
            inputs = tf.transpose(inputs, [1, 0, 2])
        if inputs.shape[1] is None:
            raise UnsupportedConfigError(f"compile: the {self.method} graph needs a static number of time steps")
        device = source.cell.cells[0].device
        dropping = bool(training) and compiled.has_dropout(source)
        with tf.device(device) if device is not None else contextlib.nullcontext():
            keep = None if mask is None else as_keep(mask)
            if dropping:
                extra: list[Any] = [] if keep is None else [keep]
                extra.append(dropout_masks(source, inputs))
                fn = self._graphs.function(inputs, states, masked=keep is not None, dropped=True)
                y, new_states = fn(inputs, states, self._flat_weights(), *extra)
            elif self._inference_shortcut and not recording():
                result = self._inference(inputs, states, keep)
                y, new_states = (result, None) if not source.return_state else result
            elif keep is not None:
                fn = self._graphs.function(inputs, states, masked=True)
                y, new_states = fn(inputs, states, self._flat_weights(), keep)
            else:
                y, new_states = self._graphs.function(inputs, states)(inputs, states, self._flat_weights())
        if source.time_major and source.return_sequences:
            y = tf.transpose(y, [1, 0, 2])
        return (y, [list(s) for s in new_states]) if source.return_state else y


def dropout_masks(rnn: Any, x: tf.Tensor) -> list[Dropped]:
    """Each cell's dropout masks for one training call on ``x [batch, time, in]``, as the
    uncompiled RNN draws them: its cells' own ``get_dropout_mask`` / ``get_recurrent_dropout_mask``,
    cell by cell, inputs first (the same draws from the same generators; masks set by
    ``set_dropout_masks`` used), in a :func:`rnn_xframework.dropout.call_scope`; every cell's
    masks are reset after, as the uncompiled RNN resets them after a call."""
    batch = tf.shape(x)[0]

    def listed(masks: Any) -> list[tf.Tensor]:  # Keras's one tensor, or one per gate
        masks = [] if masks is None else masks if isinstance(masks, (list, tuple)) else [masks]
        return [tf.convert_to_tensor(m) for m in masks]

    drops = []
    try:
        with dropout.call_scope():
            for cell in rnn.cells:  # a step's input and state: shapes and dtype are what a draw reads
                inputs = listed(cell.get_dropout_mask(tf.zeros([batch, cell.input_dim], x.dtype)))
                recurrent = listed(cell.get_recurrent_dropout_mask(tf.zeros([batch, cell.units], x.dtype)))
                drops.append(Dropped(inputs, recurrent))
    finally:
        for cell in rnn.cells:
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()
    return drops


def as_keep(mask: Any) -> tf.Tensor:
    """A call's ``mask [batch, time]`` (a tensor or array; nonzero = real step) as the graphs
    read it: a bool tensor."""
    return tf.cast(mask, tf.bool) if isinstance(mask, tf.Tensor) else tf.constant(np.asarray(mask) != 0)


def recording() -> bool:
    """Whether a ``tf.GradientTape`` may record this call (then the differentiable path runs).

    TensorFlow has no public query; its own ``record.could_possibly_record`` (tf 2.12 and
    newer) answers it. Where that is missing, assume a tape: the differentiable path is always
    correct, only slower."""
    return _could_possibly_record is None or bool(_could_possibly_record())


def eager_key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A cache key for an eager call with these arguments, or ``None`` (graph mode, an argument
    that is not a tensor, or a TensorFlow without the private context module)."""
    if _tf_context is None or not tf.executing_eagerly():
        return None
    flat = tf.nest.flatten(args)
    if not all(isinstance(t, tf.Tensor) for t in flat):
        return None
    # the structure is fixed by the call's checks (each layer's states): shapes suffice
    return (_tf_context.context().device_name, *((tuple(t.shape), t.dtype) for t in flat))


def native(x: Any) -> Any:
    return tf.convert_to_tensor(x) if isinstance(x, np.ndarray) else x


def compile_function(rnn: Any) -> CompiledRNN:
    """``xf.compile(rnn, "tf.function")``: the graph without XLA."""
    return CompiledRNN(rnn, jit_compile=False)


def compile_xla(rnn: Any) -> CompiledRNN:
    """``xf.compile(rnn, "xla")``: the graph compiled by XLA (``jit_compile=True``)."""
    return CompiledRNN(rnn, jit_compile=True)
