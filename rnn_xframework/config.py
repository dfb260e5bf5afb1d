"""The default backend for calls that name none.

Resolution order: the ``backend=`` argument, then :func:`use_backend` (a context manager,
scoped to the current thread or task), then :func:`set_backend` (process-wide), then the
environment variable ``RNN_XFRAMEWORK_BACKEND``, then ``"torch"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator

from rnn_xframework import registry
from rnn_xframework.errors import UnknownBackendError

ENV_VAR = "RNN_XFRAMEWORK_BACKEND"
FALLBACK = "torch"

_lock = threading.Lock()
_process_default: str | None = None
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar("rnn_xframework_backend", default=None)


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend (``None`` clears it). Thread-safe."""
    global _process_default
    key = None if name is None else registry.canonical_name(name)
    with _lock:
        _process_default = key


def get_backend() -> str:
    """The backend a call without ``backend=`` uses now (canonical name)."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    with _lock:
        if _process_default is not None:
            return _process_default
    env = os.environ.get(ENV_VAR)
    if not env:
        return FALLBACK
    try:
        return registry.canonical_name(env)
    except UnknownBackendError as e:
        raise UnknownBackendError(
            f"the environment variable {ENV_VAR}={env!r} names no backend ({e}); "
            f"set it to one of those names, or unset it to use {FALLBACK!r}"
        ) from None


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """``with xf.use_backend("tf"): ...`` sets the default for this thread/task only.

    >>> import rnn_xframework as xf
    >>> with xf.use_backend("np"):
    ...     cell = xf.layers.SimpleRNNCell(3)
    >>> cell.backend
    'numpy'
    """
    token = _scoped.set(registry.canonical_name(name))
    try:
        yield _scoped.get() or name
    finally:
        _scoped.reset(token)


def resolve(name: str | None) -> str:
    """The argument if given, else the current default; always a canonical name."""
    return get_backend() if name is None else registry.canonical_name(name)
