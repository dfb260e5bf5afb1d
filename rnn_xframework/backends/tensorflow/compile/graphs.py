"""The graphs behind ``xf.compile(rnn, "tf.function" | "xla")``: :class:`Graphs`, one set per
structure of stack (:func:`structure_of`: cell types, sizes, flags), shared by every compiled
object of that structure (:func:`graphs_for`) and released with the last; each input shape gets
its own ``tf.function`` in a bounded cache (:mod:`~rnn_xframework.backends.tensorflow.compile.cache`),
traced from the loops of :mod:`~rnn_xframework.backends.tensorflow.compile.graph_loops`. A
masked call and a training call with dropout each get their own function per shape, the mask and
the dropout masks among its inputs (one trace serves every mask and every draw).
:mod:`~rnn_xframework.backends.tensorflow.compile.function` builds the compiled object on them."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import tensorflow as tf

from rnn_xframework.backends.tensorflow.compile import cache
from rnn_xframework.backends.tensorflow.compile.cache import (
    CACHE_SIZE,
    LRU,
    GradientNames,
    per_shape,
    shape_key,
)
from rnn_xframework.backends.tensorflow.compile.graph_loops import (
    Dropped,
    Weights,
    layer_major,
    timestep_major,
    weights_of,
)

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

    def function(self, x: Any, states: Any, masked: bool = False, dropped: bool = False) -> Any:
        """The ``tf.function`` for this call's shapes: ``(x, states, flat_weights, *extra) -> (y,
        states)``, ``extra`` being ``mask [batch, time]`` (bool) when ``masked``, then the dropout
        masks (one :class:`~rnn_xframework.backends.tensorflow.compile.graph_loops.Dropped` per
        cell, a list) when ``dropped``. The masks are inputs: one trace serves every draw."""
        key = (*shape_key(x, states), masked, dropped)
        return self.cache.get(key, lambda: self._make(masked, dropped))

    def _make(self, masked: bool, dropped: bool) -> Any:
        def loop_args(extra: tuple[Any, ...]) -> tuple[Any, Any]:  # -> (mask, drops) for _loop
            return (extra[0] if masked else None), (extra[-1] if dropped else None)

        if not self.structure.jit_compile:  # one graph per call: the eager work is one function call
            if not (masked or dropped):
                return per_shape(self._run, jit_compile=False)

            def run_plain(x: tf.Tensor, states: Any, weights: list[Any], *extra: Any) -> Any:
                return self._loop(x, self._initial(x, states), self._pack_weights(weights), *loop_args(extra))

            return per_shape(run_plain, jit_compile=False)
        forward = per_shape(self._loop, jit_compile=True)
        backward = per_shape(self._loop_gradients, jit_compile=True)
        if not cache.CAN_RELEASE_GRADIENTS:  # eager: a traced custom gradient would pin evicted shapes
            return lambda x, states, weights, *extra: self._run_xla(
                x, states, weights, forward, backward, *loop_args(extra)
            )
        # One graph per call, as for "tf.function". The custom gradient traced into it registers
        # its gradient function in TensorFlow's process-wide registry; ``names`` takes it back
        # when this shape's function is evicted and collected (else it keeps the graphs alive).
        names = GradientNames()

        def run(x: tf.Tensor, states: Any, weights: list[Any], *extra: Any) -> tuple[tf.Tensor, list[Any]]:
            y, new = self._run_xla(x, states, weights, forward, backward, *loop_args(extra))
            names.add(y)
            return y, new

        return names.release_with(per_shape(run, jit_compile=False))

    def _loop(
        self,
        x: tf.Tensor,
        states: list[list[tf.Tensor]],
        weights: list[Weights],
        mask: Any = None,
        drops: list[Dropped] | None = None,
    ) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
        """``x [batch, time, in]`` -> ``(y, states)`` with these weights, one per cell; with
        ``mask [batch, time]`` (bool), Keras's masked loop: the padding's inputs are zeros before
        any arithmetic (so NaN there reaches neither outputs nor gradients), then each step holds
        the states and output where the mask is false (graph_loops.hold_step). ``drops``: each
        cell's dropout masks in a training call (graph_loops.Dropped), else ``None``."""
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
        seq, new_states = run(layers, seq, states, unroll, keep, s.zero_output_for_mask, drops)
        y = tf.transpose(seq, [1, 0, 2]) if s.return_sequences else seq[-1]
        return y, new_states

    def _pack_weights(self, flat: list[tf.Tensor]) -> list[Weights]:
        """``[kernel, recurrent_kernel, (bias), ...]`` -> one :class:`Weights` per cell."""
        values = iter(flat)
        return [Weights(*(None if v is None else next(values) for v in weights_of(c))) for c in self.cells]

    def _loop_gradients(
        self,
        x: tf.Tensor,
        flat: list[tf.Tensor],
        weights: list[tf.Tensor],
        upstream: list[Any],
        mask: Any = None,
        drops: list[Dropped] | None = None,
    ) -> Any:
        """Forward and backward of :meth:`_loop` in one XLA function: gradients of
        ``sum(y * dy) + sum(s * ds)`` (``upstream = [dy, *ds]``) w.r.t. ``x``, the flat states
        and the flat weights (the masks are constants of the call)."""
        structure = [list(c.state_sizes) for c in self.cells]
        sources = [x, *flat, *weights]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            packed = tf.nest.pack_sequence_as(structure, flat)
            y, new = self._loop(x, packed, self._pack_weights(weights), mask, drops)
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

    def _run_xla(
        self,
        x: tf.Tensor,
        states: Any,
        flat_weights: list[Any],
        forward: Any,
        backward: Any,
        mask: Any = None,
        drops: list[Dropped] | None = None,
    ) -> tuple[tf.Tensor, list[Any]]:
        """The XLA while loop ``forward``, its gradient a second XLA function ``backward`` (the
        forward recomputed).

        TensorFlow cannot differentiate an XLA-compiled ``tf.while_loop`` from outside the
        compiled function ("TensorList crossing the XLA/TF boundary"), so the gradient is a
        ``tf.custom_gradient`` that runs forward and backward in one XLA function, as Keras's
        XLA training step does. The weights enter as tensors read from the variables, so
        gradients reach the variables through those reads. A ``mask`` and dropout masks ``drops``
        go to both (no gradient).
        """
        extra = () if mask is None and drops is None else (mask, drops)
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
