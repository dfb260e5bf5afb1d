"""The backends, translating the cell specs of :mod:`rnn_xframework.cells` to a framework:
:mod:`.numpy` (the reference), one package per framework (:mod:`.torch`, :mod:`.tensorflow`, each
with its ``compile`` subpackage) and the Keras port :mod:`.keras_port`.

The registry itself (names, aliases, lazy import, the :class:`Backend` base class) lives in
:mod:`rnn_xframework.registry`, below the core modules that need it; its names are re-exported
here, so ``rnn_xframework.backends.get("torch")`` works as before. Nothing here imports a
framework.
"""

from __future__ import annotations

from rnn_xframework.registry import (
    Backend,
    backend_for,
    canonical_name,
    get,
    installed,
    names,
    of,
    register,
    unregister,
)

__all__ = [
    "Backend",
    "backend_for",
    "canonical_name",
    "get",
    "installed",
    "names",
    "of",
    "register",
    "unregister",
]
