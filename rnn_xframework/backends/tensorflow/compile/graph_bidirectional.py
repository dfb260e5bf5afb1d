"""``xf.compile(Bidirectional, "tf.function" | "xla")`` on TensorFlow: both directions and the merge
in one graph.

A compiled ``Bidirectional`` is its backend's ``Bidirectional`` over two compiled RNNs
(:func:`rnn_xframework.compiled.recompile_bidirectional`); :class:`FusedBidirectional` is the
TensorFlow mixin of its class (``TensorFlowBackend.fused_bidirectional``). A call runs each RNN's
checks, then one ``tf.function`` per input shape (``jit_compile=True`` for ``"xla"``): the forward
RNN's graph loop and the backward one's (each its compiled object's
:meth:`~rnn_xframework.backends.tensorflow.compile.function.CompiledRNN.traced_loop`), the backward
output flipped back to time order, and the merge. Without it a call is two compiled calls, an
eager flip and an eager merge, each with its own dispatch; at W1 that overhead is most of the time.

It computes what the two compiled RNNs and ``Bidirectional.run`` compute (Keras's
``keras.layers.Bidirectional``): the backward RNN has ``go_backwards``, so with a mask it reverses
the inputs and the mask together and holds its state where the reversed mask is false (a
right-padded row: the padding first, the real steps last to first), as Keras's ``rnn`` does; its
output is flipped back whole (``ops.flip``, as Keras's ``Bidirectional``); both RNNs have
``zero_output_for_mask = return_sequences``. Masked inputs are zeros before any arithmetic, so NaN
in the padding reaches nothing.

The graphs read the two RNNs' variables, so ``set_weights`` and optimizer steps show. Under a
recording ``tf.GradientTape`` the ``"tf.function"`` graph is differentiated by TensorFlow; the
``"xla"`` one through an :class:`~rnn_xframework.backends.tensorflow.compile.xla_gradient.XlaGradient`
(forward and backward each one XLA function). An ``"xla"`` call no tape records runs the loops'
inference form (per-step projections, no gradient wrapper) through a cached concrete function, as a
compiled RNN's own call does. The functions live in a bounded LRU of input shapes (``cache_size``,
``max_compiles``, as on a compiled RNN).

A training call with dropout, a call before both RNNs are built, and inputs with no static number of
steps defer to the two compiled RNNs (``super().run``): the same results, or the same errors.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import tensorflow as tf

from rnn_xframework import bidirectional, compiled
from rnn_xframework.backends.tensorflow.compile.cache import CACHE_SIZE, LRU, check_max_compiles, per_shape, shape_key
from rnn_xframework.backends.tensorflow.compile.function import CompiledRNN, as_keep, eager_key, native, recording
from rnn_xframework.backends.tensorflow.compile.xla_gradient import XlaGradient

_CACHE_LOCK = threading.Lock()


def _fusable(layer: Any) -> bool:
    """A built TensorFlow compiled RNN (a pending one builds on its own first call)."""
    return isinstance(layer, CompiledRNN) and layer.built


def _arguments(x: Any, states_f: Any, states_b: Any, keep: Any) -> tuple[tuple[bool, ...], tuple[Any, ...]]:
    """``(layout, args)``: the call's tensors without its ``None`` ones (each ``None`` argument
    costs ``tf.function`` about 0.07 ms a call), and which were given."""
    given = (states_f, states_b, keep)
    return tuple(a is not None for a in given), (x, *(a for a in given if a is not None))


def _unpack(layout: tuple[bool, ...], args: Any) -> tuple[Any, ...]:
    """Inverse of :func:`_arguments`: ``(x, states_f, states_b, keep)``, ``None`` where not given."""
    rest = iter(args[1:])
    return (args[0], *(next(rest) if given else None for given in layout))


class FusedBidirectional:
    """The TensorFlow mixin of a compiled ``Bidirectional``'s class: :meth:`run` as the module
    docstring says. Shapes as ``Bidirectional``'s: ``inputs [batch, time, features]`` (``[time,
    batch, features]`` with ``time_major``), ``mask [batch, time]``."""

    forward_layer: Any
    backward_layer: Any

    def run(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        """Both directions and the merge in one graph; returns what ``Bidirectional.run`` returns."""
        f, b = self.forward_layer, self.backward_layer
        fusable = _fusable(f) and _fusable(b)
        if not fusable or (training and any(compiled.has_dropout(r.source) for r in (f, b))):
            # the two compiled RNNs: a pending one builds, a training call draws their dropout masks
            return super().run(inputs, initial_state, training, mask)  # type: ignore[misc]
        inputs = native(inputs)
        forward_state, backward_state = bidirectional.split_state(initial_state)
        states_f = f.check_call(inputs, forward_state, training, mask)  # the RNNs' own checks and errors
        states_b = b.check_call(inputs, backward_state, training, mask)
        if inputs.shape[0 if self.time_major else 1] is None:  # the compiled RNNs refuse it, typed
            return super().run(inputs, initial_state, training, mask)  # type: ignore[misc]
        keep = None if mask is None else as_keep(mask)
        layout, args = _arguments(inputs, states_f, states_b, keep)
        device = f.source.cell.cells[0].device
        with tf.device(device) if device is not None else contextlib.nullcontext():
            if f.jit_compile and not recording():
                outputs = self._inference(layout, args)
            else:
                outputs = self._function(layout, args)(*args, f._flat_weights(), b._flat_weights())
        return self._unflatten(outputs)

    # --- the cache -------------------------------------------------------------------------------
    def _cache(self) -> LRU:
        """This object's LRU of per-shape functions (made on first use; a plain attribute: a
        Keras layer would track it)."""
        cache = self.__dict__.get("_fused_cache")
        if cache is None:
            with _CACHE_LOCK:
                cache = self.__dict__.setdefault("_fused_cache", LRU(CACHE_SIZE))
        return cache

    @property
    def cache_size(self) -> int:
        """Input shapes kept traced for the fused call (LRU; default
        :data:`~rnn_xframework.backends.tensorflow.compile.cache.CACHE_SIZE`). Setting it sets
        both compiled RNNs' too."""
        return self._cache().size

    @cache_size.setter
    def cache_size(self, size: int) -> None:
        self._cache().resize(size)
        for layer in (self.forward_layer, self.backward_layer):
            layer.cache_size = size

    @property
    def max_compiles(self) -> int | None:
        """The most per-shape traces (XLA: compiles) the fused call may make, as a compiled RNN's
        ``max_compiles``; ``None`` (default) for no bound. Setting it sets both RNNs' too."""
        return self._cache().max_made

    @max_compiles.setter
    def max_compiles(self, value: int | None) -> None:
        value = check_max_compiles(value)
        self._cache().max_made = value
        for layer in (self.forward_layer, self.backward_layer):
            layer.max_compiles = value

    def cache_info(self) -> dict[str, int]:
        """``{"fused": shapes traced for the fused call, "size": its bound, "compiles": per-shape
        traces / XLA compiles it made so far}``."""
        cache = self._cache()
        return {"fused": len(cache), "size": cache.size, "compiles": cache.made}

    # --- the functions ---------------------------------------------------------------------------
    def _config(self) -> tuple[Any, ...]:
        return (self.merge_mode, bool(self.return_sequences), bool(self.return_state), bool(self.time_major))

    def _function(self, layout: tuple[bool, ...], args: tuple[Any, ...]) -> Any:
        """The differentiable function for this call's shapes: ``(*args, weights_f, weights_b) ->
        outputs`` (:meth:`_unflatten`'s list)."""
        f = self.forward_layer
        config = self._config()
        key = ("graph", layout, config, *shape_key(args[0], args[1:]))

        def make() -> Any:
            if not f.jit_compile:

                def run(*call: Any) -> list[tf.Tensor]:
                    *rest, weights_f, weights_b = call
                    return self._both(config, _unpack(layout, rest), weights_f, weights_b)

                return per_shape(run, jit_compile=False)
            return self._xla_function(layout, config)

        return self._cache().get(key, make)

    def _xla_function(self, layout: tuple[bool, ...], config: tuple[Any, ...]) -> Any:
        """``"xla"`` under a tape: the fused loop as an :class:`XlaGradient` over ``[x, every
        initial state, every weight]`` (the mask a constant), in one traced function."""
        f, b = self.forward_layer, self.backward_layer
        counts = [sum(len(c.state_sizes) for c in layer.source.cells) for layer in (f, b)]
        n_weights = len(f._flat_weights())
        structures = [[list(c.state_sizes) for c in layer.source.cells] for layer in (f, b)]

        def loop(sources: list[tf.Tensor], *keep: Any) -> list[tf.Tensor]:
            x, rest = sources[0], sources[1:]
            states_f = tf.nest.pack_sequence_as(structures[0], rest[: counts[0]])
            states_b = tf.nest.pack_sequence_as(structures[1], rest[counts[0] : sum(counts)])
            weights = rest[sum(counts) :]
            call = (x, states_f, states_b, keep[0] if keep else None)
            return self._both(config, call, weights[:n_weights], weights[n_weights:])

        xla = XlaGradient(loop)

        def run(*call: Any) -> list[tf.Tensor]:
            *rest, weights_f, weights_b = call
            x, states_f, states_b, keep = _unpack(layout, rest)
            x_batch = tf.transpose(x, [1, 0, 2]) if config[3] else x  # the zeros' batch
            initial = [tf.nest.flatten(layer._initial(x_batch, s)) for layer, s in ((f, states_f), (b, states_b))]
            weights = [tf.convert_to_tensor(w) for w in (*weights_f, *weights_b)]
            return xla([x, *initial[0], *initial[1], *weights], *(() if keep is None else (keep,)))

        return xla.traced(run)

    def _inference(self, layout: tuple[bool, ...], args: tuple[Any, ...]) -> list[tf.Tensor]:
        """``"xla"`` with no tape recording: the loops' inference form on the variables, in eager
        mode through the concrete function traced for this signature (as
        :meth:`~rnn_xframework.backends.tensorflow.compile.function.CompiledRNN._inference`)."""
        config = self._config()
        eager = eager_key(args)
        key = ("inference", layout, config, *(eager or ("graph", *shape_key(args[0], args[1:]))))

        def make() -> tuple[Any, Any]:
            def run(*call: Any) -> list[tf.Tensor]:
                return self._both(config, _unpack(layout, call), None, None, inference=True)

            fn = per_shape(run, jit_compile=True)
            return fn, (fn.get_concrete_function(*args) if eager is not None else None)

        fn, concrete = self._cache().get(key, make)
        return (concrete or fn)(*args)

    def _both(
        self, config: tuple[Any, ...], call: tuple[Any, ...], weights_f: Any, weights_b: Any, inference: bool = False
    ) -> list[tf.Tensor]:
        """Traced: both loops on ``call = (inputs, states_f, states_b, keep)``, the backward output
        flipped to time order, merged; ``[output]`` (``[y, y_rev]`` for ``merge_mode=None``), then
        with ``return_state`` every final state of the forward RNN, then the backward one's."""
        merge_mode, sequences, with_state, time_major = config
        x, states_f, states_b, keep = call
        if time_major:
            x = tf.transpose(x, [1, 0, 2])
        y, final_f = self.forward_layer.traced_loop(x, states_f, weights_f, keep, inference)
        y_rev, final_b = self.backward_layer.traced_loop(x, states_b, weights_b, keep, inference)
        if sequences:
            y_rev = tf.reverse(y_rev, [1])
        merged = self._merge(y, y_rev)  # type: ignore[attr-defined]
        outputs = list(merged) if merge_mode is None else [merged]
        if time_major and sequences:
            outputs = [tf.transpose(o, [1, 0, 2]) for o in outputs]
        return outputs + (tf.nest.flatten([final_f, final_b]) if with_state else [])

    def _unflatten(self, outputs: list[tf.Tensor]) -> Any:
        """What ``Bidirectional.run`` returns, from :meth:`_both`'s list."""
        n = 2 if self.merge_mode is None else 1
        output = list(outputs[:n]) if n == 2 else outputs[0]
        if not self.return_state:
            return output
        structure = [[list(c.state_sizes) for c in layer.source.cells] for layer in self.layers]  # type: ignore[attr-defined]
        states_f, states_b = tf.nest.pack_sequence_as(structure, list(outputs[n:]))
        return output, [*states_f, *states_b]
