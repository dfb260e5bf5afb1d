"""Bounded caches of per-shape ``tf.function`` objects for the compiled TensorFlow graphs.

Each input shape gets its own ``tf.function`` (:func:`per_shape`), kept in an :class:`LRU` of a
few shapes: evicting a shape drops its traced graphs and XLA executables with it.

One thing outlives a ``tf.function`` on its own: a ``tf.custom_gradient`` traced into a graph
registers its gradient function in TensorFlow's process-wide gradient registry under a fresh
name, and the registry never removes it; the function holds the traced graph, which holds every
function it calls. :class:`GradientNames` takes those registrations back when its owner (a cache
entry) is collected, so an evicted shape is freed too. Where this TensorFlow has no registry
to clean (a private module moved), :data:`CAN_RELEASE_GRADIENTS` is false and callers keep the
custom gradient out of graphs.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from rnn_xframework.errors import UnsupportedConfigError

try:
    from tensorflow.python.framework import ops as _tf_ops

    _GRADIENTS: dict[str, Any] | None = _tf_ops._gradient_registry._registry
except (ImportError, AttributeError):  # pragma: no cover - another TensorFlow layout
    _GRADIENTS = None

CAN_RELEASE_GRADIENTS = isinstance(_GRADIENTS, dict)
"""Whether gradient functions registered by traced ``tf.custom_gradient`` calls can be released."""

CACHE_SIZE = 16
"""Input shapes whose traced graphs a compiled TF RNN keeps (least recently used evicted first);
the default of ``fast.cache_size``. Issue 11 measured about 3 MB per traced shape."""


class LRU:
    """A thread-safe least-recently-used map of at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        self.size = check_cache_size(size)
        self.entries: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The entry for ``key``, made by ``make()`` (outside the lock) when missing."""
        with self._lock:
            value = self.entries.get(key)
            if value is not None:
                self.entries.move_to_end(key)
                return value
        value = make()
        with self._lock:
            value = self.entries.setdefault(key, value)  # another thread may have made it first
            self.entries.move_to_end(key)
            self._trim()
        return value

    def resize(self, size: int) -> None:
        size = check_cache_size(size)
        with self._lock:
            self.size = size
            self._trim()

    def _trim(self) -> None:
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


def check_cache_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise UnsupportedConfigError(
            f"cache_size: expected an integer >= 1 (input shapes kept traced), got {size!r}; e.g. fast.cache_size = 8"
        )
    return int(size)


def per_shape(fn: Callable[..., Any], jit_compile: bool) -> Any:
    """``tf.function(fn)`` for one input shape. It traces once per shape by design (the LRU
    bounds them), so TensorFlow's frequent-retracing warning, which counts traces per Python
    function across these objects, is turned off for it (a private attribute of tf.function)."""
    function = tf.function(fn, jit_compile=jit_compile, autograph=False)
    function._omit_frequent_tracing_warning = True
    return function


def shape_key(x: Any, states: Any) -> tuple[Any, ...]:
    """What a trace depends on in the call's tensors: shapes and dtypes of ``x`` and the states."""
    flat = [] if states is None else tf.nest.flatten(states)
    return (_spec(x), None if states is None else tuple(_spec(t) for t in flat))


def _spec(t: Any) -> tuple[Any, ...]:
    shape = getattr(t, "shape", None)
    return (tuple(shape), getattr(t, "dtype", None)) if shape is not None else (type(t).__name__,)


class GradientNames:
    """The gradient-registry names of the custom gradients traced for one cache entry, unregistered
    when the entry (see :meth:`release_with`) is garbage-collected."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def release_with(self, owner: Any) -> Any:
        """Unregister these names when ``owner`` is collected; returns ``owner``. ``owner`` must
        not be reachable from the traced graphs (the registry holds those)."""
        weakref.finalize(owner, _unregister, self.names)
        return owner

    def add(self, tensor: tf.Tensor) -> None:
        """Record the custom gradient that produced the graph tensor ``tensor`` (an output of
        ``tf.custom_gradient``); does nothing for an eager tensor (nothing was registered)."""
        if not tf.executing_eagerly() and hasattr(tensor, "op"):
            name = tensor.op.get_attr("_gradient_op_type")
            self.names.append(name.decode() if isinstance(name, bytes) else name)


def _unregister(names: list[str]) -> None:
    if _GRADIENTS is not None:
        for name in names:
            _GRADIENTS.pop(name, None)
