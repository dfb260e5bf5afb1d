"""The default backend for calls that name none.

Resolution order: the ``backend=`` argument, then :func:`use_backend` (a context manager,
scoped to the code running inside its block: this thread, this task), then :func:`set_backend`
(process-wide), then the environment variable ``RNN_XFRAMEWORK_BACKEND``, then ``"torch"``.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import sys
import threading
from types import FrameType, TracebackType

from rnn_xframework import registry
from rnn_xframework.errors import UnknownBackendError

ENV_VAR = "RNN_XFRAMEWORK_BACKEND"
FALLBACK = "torch"

_lock = threading.Lock()
_process_default: str | None = None
# ``with use_backend(...)`` blocks outside generators: (name, id of the frame that entered the block)
_scoped: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("rnn_xframework_backend", default=None)
# ``with use_backend(...)`` blocks inside generators: id(generator frame) -> names, innermost last
_generator_scopes: dict[int, list[str]] = {}
_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend (``None`` clears it). Thread-safe."""
    global _process_default
    key = None if name is None else registry.canonical_name(name)
    with _lock:
        _process_default = key


def _generator_scope(frame: FrameType | None, stop: int | None) -> str | None:
    """The innermost ``use_backend`` of a generator frame running on this call stack, searched
    outwards from ``frame`` up to the frame whose id is ``stop`` (the frame of the innermost
    block outside generators: from there out, that block is the inner one)."""
    while frame is not None and id(frame) != stop:
        names = _generator_scopes.get(id(frame))
        if names:
            return names[-1]
        frame = frame.f_back
    return None


def get_backend() -> str:
    """The backend a call without ``backend=`` uses now (canonical name)."""
    scoped = _scoped.get()
    if _generator_scopes:
        with _lock:
            in_generator = _generator_scope(sys._getframe(1), None if scoped is None else scoped[1])
        if in_generator is not None:
            return in_generator
    if scoped is not None:
        return scoped[0]
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


class use_backend:
    """``with xf.use_backend("tf"): ...`` sets the default for the code inside the block only.

    Outside generators the setting is a ``ContextVar`` token (this thread or asyncio task; tasks
    started inside the block inherit it). Inside a generator it belongs to the generator's frame:
    it applies while the generator runs, wherever it is resumed, and never to its caller while it
    is suspended; finishing the generator in another thread restores everything. Of nested
    blocks the innermost applies, in or out of generators.

    >>> import rnn_xframework as xf
    >>> with xf.use_backend("np"):
    ...     cell = xf.layers.SimpleRNNCell(3)
    >>> cell.backend
    'numpy'
    """

    def __init__(self, name: str) -> None:
        self.name = registry.canonical_name(name)
        self._exits: list[tuple[int | None, contextvars.Token[str | None] | None]] = []

    def __enter__(self) -> str:
        frame = sys._getframe(1)
        if frame.f_code.co_flags & _GENERATOR_FLAGS:
            with _lock:
                _generator_scopes.setdefault(id(frame), []).append(self.name)
            self._exits.append((id(frame), None))
        else:
            self._exits.append((None, _scoped.set((self.name, id(frame)))))
        return self.name

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        frame_id, token = self._exits.pop()
        if token is not None:
            _scoped.reset(token)
            return
        with _lock:
            names = _generator_scopes[frame_id]
            names.pop()
            if not names:
                del _generator_scopes[frame_id]


def resolve(name: str | None) -> str:
    """The argument if given, else the current default; always a canonical name."""
    return get_backend() if name is None else registry.canonical_name(name)
