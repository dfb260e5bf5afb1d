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

from rnn_xframework.backends.tensorflow.compile.cache import CACHE_SIZE, LRU, per_shape, shape_key
from rnn_xframework.backends.tensorflow.compile.graph_loops import (
    Dropped,
    Weights,
    layer_major,
    timestep_major,
    weights_of,
)
from rnn_xframework.backends.tensorflow.compile.xla_gradient import XlaGradient

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
        n_states = sum(len(c.state_sizes) for c in self.cells)
        structure = [list(c.state_sizes) for c in self.cells]

        def flat_loop(sources: list[tf.Tensor], *extra: Any) -> list[tf.Tensor]:
            """:meth:`_loop` on ``[x, *flat states, *flat weights]`` -> ``[y, *flat states]``."""
            states = tf.nest.pack_sequence_as(structure, sources[1 : 1 + n_states])
            y, new = self._loop(sources[0], states, self._pack_weights(sources[1 + n_states :]), *extra)
            return [y, *tf.nest.flatten(new)]

        xla = XlaGradient(flat_loop)

        def run(x: tf.Tensor, states: Any, weights: list[Any], *extra: Any) -> tuple[tf.Tensor, list[Any]]:
            initial = self._initial(x, states)
            # the mask and dropout masks go to both XLA functions (no gradient); none: no argument
            constants = loop_args(extra) if extra else ()
            sources = [x, *tf.nest.flatten(initial), *(tf.convert_to_tensor(w) for w in weights)]
            y, *flat_new = xla(sources, *constants)
            return y, tf.nest.pack_sequence_as(initial, flat_new)

        return xla.traced(run)

    def _loop(
        self,
        x: tf.Tensor,
        states: list[list[tf.Tensor]],
        weights: list[Weights],
        mask: Any = None,
        drops: list[Dropped] | None = None,
        inference: bool = False,
    ) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
        """``x [batch, time, in]`` -> ``(y, states)`` with these weights, one per cell; with
        ``mask [batch, time]`` (bool), Keras's masked loop: the padding's inputs are zeros before
        any arithmetic (so NaN there reaches neither outputs nor gradients), then each step holds
        the states and output where the mask is false (graph_loops.hold_step). ``drops``: each
        cell's dropout masks in a training call (graph_loops.Dropped), else ``None``.

        ``inference``: the XLA loop without a gradient (the call's inference shortcut): layer by
        layer, each step's input projected as it is read, the two products of a cell whose spec
        sums them in one (graph_loops.layer_major ``per_step``). Measured at W1 (docs/performance.md):
        faster than the precomputed projection and than the timestep-major loop for LSTM and GRU."""
        s = self.structure
        keep = None
        if mask is not None:
            x = tf.where(mask[:, :, None], x, tf.zeros_like(x))
            keep = tf.reverse(mask, [1]) if s.go_backwards else mask  # [batch, time], read by column
        if s.go_backwards:
            x = tf.reverse(x, [1])
        seq = tf.transpose(x, [1, 0, 2])
        layers = list(zip(self.cells, weights, strict=True))
        if inference:
            seq, new_states = layer_major(layers, seq, states, False, keep, s.zero_output_for_mask, per_step=True)
        else:
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

    def _initial(self, x: tf.Tensor, states: Any) -> list[list[tf.Tensor]]:
        """``states``, or zeros ``[batch, units]`` for each state of each cell when ``None``."""
        if states is not None:
            return [list(s) for s in states]
        batch = tf.shape(x)[0]
        return [[tf.zeros([batch, n], x.dtype) for n in c.state_sizes] for c in self.cells]

    def _run(self, x: tf.Tensor, states: Any, flat_weights: list[Any]) -> tuple[tf.Tensor, list[Any]]:
        """The plain ``tf.function`` graph."""
        return self._loop(x, self._initial(x, states), self._pack_weights(flat_weights))


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
