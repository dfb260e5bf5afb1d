"""``xf.compile(obj, method)``: a faster object with the same call and the same outputs.

Methods are registered by name with the backend they need and the module that implements
them; the module is imported only when the method is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from rnn_xframework import backends
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError

# method -> (backend it applies to, module, function in that module)
METHODS: dict[str, tuple[str, str, str]] = {
    "torchscript": ("torch", "rnn_xframework.backends.torchscript", "compile_rnn"),
}


def compile(obj: Any, method: str = "torchscript") -> Any:  # noqa: A001 - mirrors torch.compile
    """Compile an ``RNN`` made by :func:`rnn_xframework.layers.RNN`.

    Args:
        obj: the RNN to compile; it keeps its parameters, which the result shares.
        method: one of :data:`METHODS` (``"torchscript"``: the whole time loop in
            ``torch.jit.script``).

    Returns an object called like ``obj`` (``y = fast(x, initial_state=None)``) with the same
    outputs.
    """
    if method not in METHODS:
        raise UnsupportedConfigError(f"unknown compile method {method!r}; expected one of {sorted(METHODS)}")
    needs, module, func = METHODS[method]
    got = getattr(obj, "backend", None)
    if got != needs or not (hasattr(obj, "order") and hasattr(obj, "run")):
        raise FrameworkMismatchError(
            f"compile method {method!r} takes a {needs} RNN made by rnn_xframework.layers.RNN, got "
            f"{type(obj).__module__}.{type(obj).__name__} (backend {got!r}); "
            f"use xf.convert(obj, backend={needs!r}) first"
        )
    backends.get(needs)
    return getattr(importlib.import_module(module), func)(obj)
