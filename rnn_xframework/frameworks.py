"""Loading TensorFlow and PyTorch into one process, in any order.

TensorFlow and triton (the GPU compiler that PyTorch imports by itself, for example when a
``torch.optim`` optimizer is built or ``torch.compile`` runs) both bundle LLVM. Where triton is
installed, a process that loads TensorFlow first and then triton the ordinary way aborts with
``LLVM ERROR: inconsistency in registered CommandLine options`` (no Python exception: the process
dies), because triton's LLVM registers its options in TensorFlow's already-loaded registry.
Triton loaded with ``RTLD_DEEPBIND`` binds to its own LLVM and loads fine after TensorFlow; triton
first, then TensorFlow, works either way.

So the rule is: **triton must not be loaded the ordinary way after TensorFlow**, and this library
makes sure it never is, whoever imports what first:

* ``import rnn_xframework`` with TensorFlow already loaded and triton installed but not loaded
  imports triton with ``RTLD_DEEPBIND`` (:func:`guard`; the one framework import the package does
  at import time, and only in that case), so the user's own ``torch.optim`` or ``torch.compile``
  later in the process is safe too;
* :func:`load` (called before this library imports a framework) imports triton first where
  TensorFlow is not loaded yet, and with ``RTLD_DEEPBIND`` where it is;
* where that cannot work (a platform without ``RTLD_DEEPBIND``, a triton that fails to load that
  way) :func:`load` raises :class:`~rnn_xframework.errors.FrameworkOrderError`, saying how to fix
  the program, instead of letting torch abort the process later.

A program that imports TensorFlow, then torch, then uses torch's optimizers *without* importing
this package still needs triton first (``import triton`` above ``import tensorflow``): nothing of
ours runs in that process. docs/cuda.md describes this for users.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading

from rnn_xframework.errors import FrameworkOrderError

FIX = (
    "import triton before TensorFlow: put `import triton` (or `import torch, triton`) above the first "
    "`import tensorflow` / `import keras` of the program; if this process never needs triton, set "
    "`sys.modules['triton'] = None` before importing torch (torch then runs without it)"
)

_LOCK = threading.Lock()  # dlopen flags are process-wide: one flagged import at a time
_FAILED: list[str] = []  # why triton could not be loaded after TensorFlow (the first failure)


def triton_installed() -> bool:
    """Whether ``import triton`` could succeed here (checked without importing it)."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _loaded(name: str) -> bool:
    return sys.modules.get(name) is not None  # None: blocked on purpose, not loaded


def bad_order() -> bool:
    """TensorFlow is loaded, triton is installed and not loaded: an ordinary triton load would abort."""
    return _loaded("tensorflow") and "triton" not in sys.modules and triton_installed()


def _import_triton() -> None:
    importlib.import_module("triton")  # one name, so tests can simulate its failures


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "triton" or m.startswith("triton.")]:
        del sys.modules[name]


def import_triton_deepbind() -> None:
    """Import triton with ``RTLD_DEEPBIND`` added to the dlopen flags (restored after), so its
    LLVM binds to itself and not to an LLVM already loaded (TensorFlow's).

    Raises :class:`FrameworkOrderError` where the platform has no ``RTLD_DEEPBIND`` or the
    import fails; a failed import leaves no part of triton in ``sys.modules``."""
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None or not hasattr(sys, "setdlopenflags"):
        raise FrameworkOrderError(
            "TensorFlow is already loaded in this process and triton (installed here, and imported by "
            "PyTorch on its own, e.g. by torch.optim) is not; loading it now would abort the process "
            "('LLVM ERROR: inconsistency in registered CommandLine options'), and this platform has no "
            f"RTLD_DEEPBIND to load it safely. Fix: {FIX}"
        )
    with _LOCK:
        if "triton" in sys.modules:
            return
        old = sys.getdlopenflags()
        sys.setdlopenflags(old | deepbind)
        try:
            _import_triton()
        except Exception as e:  # an ImportError, or anything its package __init__ raises
            _forget_partial_import()
            raise FrameworkOrderError(
                "TensorFlow is already loaded in this process and triton (installed here, and imported "
                "by PyTorch on its own, e.g. by torch.optim) is not; loading it with RTLD_DEEPBIND (the "
                f"safe way after TensorFlow) failed: {type(e).__name__}: {e}. Fix: {FIX}"
            ) from e
        finally:
            sys.setdlopenflags(old)


def load_triton() -> bool:
    """Load triton (if installed and not loaded) in the way that works now: the ordinary way
    before TensorFlow, with ``RTLD_DEEPBIND`` after it. Returns whether triton is loaded.

    Before TensorFlow, a triton that fails to import is left alone (torch then runs without it,
    as it would anyway). After TensorFlow it raises :class:`FrameworkOrderError`
    (:func:`import_triton_deepbind`), since torch would try the ordinary, aborting load next."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    if not triton_installed():
        return False
    if _loaded("tensorflow"):
        if _FAILED:
            raise FrameworkOrderError(_FAILED[0])
        try:
            import_triton_deepbind()
        except FrameworkOrderError as e:
            _FAILED.append(str(e))
            raise
        return True
    try:
        _import_triton()
    except ImportError:
        _forget_partial_import()
        return False
    return True


def guard() -> None:
    """At ``import rnn_xframework``: where TensorFlow is loaded and triton is installed but not
    loaded, load triton now with ``RTLD_DEEPBIND`` (so a later ``torch.optim`` of the user's own
    cannot abort the process). Otherwise it does nothing and imports nothing. A failure is not
    raised here (importing the package must work); it is kept, and :func:`load` raises it as a
    :class:`FrameworkOrderError` when torch is asked for."""
    if bad_order():
        try:
            load_triton()
        except FrameworkOrderError:
            pass  # kept in _FAILED; load("torch") raises it


def check_torch_order(what: str = "torch") -> None:
    """Make loading torch/triton safe now (:func:`load_triton`), or raise
    :class:`FrameworkOrderError` naming ``what`` where it cannot be."""
    try:
        load_triton()
    except FrameworkOrderError as e:
        raise FrameworkOrderError(f"{what}: {e}") from e


def load(framework: str) -> None:
    """Get the process ready for this library to import ``framework`` (``"torch"`` or
    ``"tensorflow"``; others are left alone): triton first where it is installed and TensorFlow
    is not loaded, with ``RTLD_DEEPBIND`` where it is, and a :class:`FrameworkOrderError` where
    torch is asked for and that cannot work."""
    if framework == "tensorflow":
        if _loaded("tensorflow"):
            guard()  # TensorFlow needs no triton: a failure waits for load("torch")
        else:
            load_triton()
    elif framework == "torch":
        check_torch_order()
