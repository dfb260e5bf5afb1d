"""A loop compiled by XLA and differentiable from outside it: :class:`XlaGradient`, behind the
``"xla"`` graphs of a stack (:mod:`~rnn_xframework.backends.tensorflow.compile.graphs`) and of a
fused ``Bidirectional`` (:mod:`~rnn_xframework.backends.tensorflow.compile.graph_bidirectional`).

TensorFlow cannot differentiate an XLA-compiled ``tf.while_loop`` from outside the compiled
function ("TensorList crossing the XLA/TF boundary"), so the gradient is a ``tf.custom_gradient``
whose gradient function is a second XLA function running the loop forward and backward together,
as Keras's XLA training step does (the forward recomputed). The weights enter as tensors read from
the variables outside XLA, so gradients reach the variables through those reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from rnn_xframework.backends.tensorflow.compile import cache
from rnn_xframework.backends.tensorflow.compile.cache import GradientNames, per_shape

Loop = Callable[..., list[tf.Tensor]]
"""``loop(sources, *constants) -> outputs``: ``sources`` the differentiable tensors (a list),
``constants`` anything else the loop reads (masks; no gradient), ``outputs`` a list of tensors."""


class XlaGradient:
    """``loop`` for one input shape: ``self(sources, *constants) -> outputs`` runs it as one XLA
    function, its gradient (w.r.t. every source; zeros where none flows) a second one.

    Made per cache entry: its two ``tf.function`` objects trace once each for that shape.
    """

    def __init__(self, loop: Loop) -> None:
        self.forward = per_shape(loop, jit_compile=True)

        def gradients(sources: list[tf.Tensor], upstream: list[tf.Tensor], *constants: Any) -> list[tf.Tensor]:
            """Gradients of ``sum(outputs * upstream)`` w.r.t. ``sources``."""
            with tf.GradientTape() as tape:
                tape.watch(sources)
                outputs = loop(sources, *constants)
            grads = tape.gradient(outputs, sources, output_gradients=upstream)
            return [tf.zeros_like(s) if g is None else g for g, s in zip(grads, sources, strict=True)]

        self.backward = per_shape(gradients, jit_compile=True)
        self.names = GradientNames()

    def __call__(self, sources: list[tf.Tensor], *constants: Any) -> list[tf.Tensor]:
        forward, backward = self.forward, self.backward  # the gradient closure holds these, not self

        @tf.custom_gradient
        def run(*sources: tf.Tensor) -> Any:
            frozen = [tf.stop_gradient(s) for s in sources]  # the forward records nothing
            outputs = forward(frozen, *constants)

            def grad(*upstream: Any) -> list[tf.Tensor]:
                upstream_ = [tf.zeros_like(o) if d is None else d for d, o in zip(upstream, outputs, strict=True)]
                return backward(list(sources), upstream_, *constants)

            return tuple(outputs), grad

        outputs = list(run(*sources))
        self.names.add(outputs[0])
        return outputs

    def traced(self, call: Callable[..., Any]) -> Any:
        """``call`` (a function that calls this object) as one ``tf.function`` (one graph per
        call: the eager work is one function call). The custom gradient traced into it registers
        its gradient function in TensorFlow's process-wide registry; :attr:`names` takes it back
        when the returned function is collected (an evicted cache entry), else it would keep the
        graphs alive. Where this TensorFlow's registry cannot be cleaned
        (:data:`~rnn_xframework.backends.tensorflow.compile.cache.CAN_RELEASE_GRADIENTS` false),
        ``call`` itself: eager, nothing registered."""
        if not cache.CAN_RELEASE_GRADIENTS:
            return call
        return self.names.release_with(per_shape(call, jit_compile=False))
