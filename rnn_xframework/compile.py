"""``xf.compile(obj, method)``: a faster object with the same call and the same outputs.

Methods are registered by name with the backend they need and the module that implements
them; the module is imported only when the method is used. ``method="auto"`` asks the
backend's rule in :data:`AUTO` which registered method is fastest for this RNN (the rules and
the measurements behind them: docs/performance.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from rnn_xframework import backends
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError

# method -> (backend it applies to, module, function in that module)
METHODS: dict[str, tuple[str, str, str]] = {
    "torchscript": ("torch", "rnn_xframework.backends.torchscript", "compile_rnn"),
    "inductor": ("torch", "rnn_xframework.backends.torch_inductor", "compile_rnn"),
    "triton": ("torch", "rnn_xframework.backends.triton_rnn", "compile_rnn"),
    "cudagraph": ("torch", "rnn_xframework.backends.torch_cudagraph", "compile_rnn"),
    "tf.function": ("tensorflow", "rnn_xframework.backends.tf_function", "compile_function"),
    "xla": ("tensorflow", "rnn_xframework.backends.tf_function", "compile_xla"),
}

# backend -> (module, function ``(rnn) -> method name``) for ``method="auto"``
AUTO: dict[str, tuple[str, str]] = {
    "torch": ("rnn_xframework.backends.torch_fast", "auto_method"),
    "tensorflow": ("rnn_xframework.backends.tf_function", "auto_method"),
}

SLOW_TO_COMPILE = frozenset({"inductor", "xla"})
"""Methods whose compilation takes many seconds per shape; the parity matrix leaves them to
their own tests (tests/test_compile_inductor.py)."""

CUDA_ONLY = frozenset({"triton", "cudagraph"})
"""Methods that run on CUDA tensors only (Triton's kernels also run on the CPU in its
interpreter, for tests); the parity matrix runs them on ``cuda`` only."""


def _check_source(obj: Any, method: str, needs: str) -> None:
    got = getattr(obj, "backend", None)
    if got != needs or not (hasattr(obj, "order") and hasattr(obj, "run")):
        raise FrameworkMismatchError(
            f"compile method {method!r} takes a {needs} RNN made by rnn_xframework.layers.RNN, got "
            f"{type(obj).__module__}.{type(obj).__name__} (backend {got!r}); "
            f"use xf.convert(obj, backend={needs!r}) first"
        )


def auto_method(obj: Any) -> str:
    """The method ``compile(obj, "auto")`` uses: the backend's measured choice for this RNN."""
    got = getattr(obj, "backend", None)
    if got not in AUTO or not (hasattr(obj, "order") and hasattr(obj, "run")):
        raise FrameworkMismatchError(
            f"compile method 'auto' takes an RNN made by rnn_xframework.layers.RNN on one of {sorted(AUTO)}, got "
            f"{type(obj).__module__}.{type(obj).__name__} (backend {got!r})"
        )
    backends.get(got)
    module, func = AUTO[got]
    return getattr(importlib.import_module(module), func)(obj)


def compile(obj: Any, method: str = "auto") -> Any:  # noqa: A001 - mirrors torch.compile
    """Compile an ``RNN`` made by :func:`rnn_xframework.layers.RNN`.

    Args:
        obj: the RNN to compile (built); it keeps its parameters, which the result shares.
        method: one of :data:`METHODS` or ``"auto"``. torch: ``"torchscript"`` (the fast
            loop in ``torch.jit.script``), ``"inductor"`` (``torch.compile``); TensorFlow:
            ``"tf.function"``, ``"xla"`` (``jit_compile=True``); ``"auto"``: the fastest
            measured method for the backend, device and sizes (:func:`auto_method`).

    Returns an object called like ``obj`` (``y = fast(x, initial_state=None, training=None)``)
    with the same outputs (within float rounding: input projections are precomputed). It raises
    :class:`UnsupportedConfigError` for ``mask=`` and for dropout with ``training=True``.
    """
    if method == "auto":
        method = auto_method(obj)
    if method not in METHODS:
        known = sorted([*METHODS, "auto"])
        raise UnsupportedConfigError(f"unknown compile method {method!r}; expected one of {known}")
    needs, module, func = METHODS[method]
    _check_source(obj, method, needs)
    backends.get(needs)
    return getattr(importlib.import_module(module), func)(obj)
