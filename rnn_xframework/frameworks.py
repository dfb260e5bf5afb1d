"""Loading TensorFlow and PyTorch into one process in an order that works.

TensorFlow and triton (the GPU compiler that PyTorch imports by itself, for example when a
``torch.optim`` optimizer is built or ``torch.compile`` runs) both bundle LLVM. Where triton is
installed, a process that loads TensorFlow first and triton afterwards aborts with ``LLVM ERROR:
inconsistency in registered CommandLine options`` (no Python exception: the process dies).
Triton first, then TensorFlow, works.

So whenever this library is the one loading a framework it goes through :func:`load`:

* ``load("tensorflow")`` imports triton first (if it is installed and not yet loaded);
* ``load("torch")`` imports triton too when TensorFlow is not loaded yet, so a TensorFlow
  loaded later, by anyone, comes second; and when TensorFlow *is* already loaded and triton is
  installed but not loaded, it raises :class:`~rnn_xframework.errors.FrameworkOrderError`
  instead of letting torch abort the process later.

Nothing here imports a framework at import time. docs/cuda.md describes the pitfall for users.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from rnn_xframework.errors import FrameworkOrderError

FIX = (
    "import triton before TensorFlow: put `import triton` (or `import torch, triton`) above the first "
    "`import tensorflow` / `import keras` of the program, or let rnn_xframework load TensorFlow "
    "(layers.*(backend='tensorflow') imports triton first); if this process never needs triton, "
    "set `sys.modules['triton'] = None` before importing torch (torch then runs without it)"
)


def triton_installed() -> bool:
    """Whether ``import triton`` could succeed here (checked without importing it)."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def bad_order() -> bool:
    """TensorFlow is loaded, triton is installed and not loaded: loading triton now would abort."""
    return "tensorflow" in sys.modules and "triton" not in sys.modules and triton_installed()


def import_triton_first() -> bool:
    """Import triton if it is installed and not yet loaded (before TensorFlow); returns whether
    triton is loaded afterwards. A triton that fails to import is left alone (torch then runs
    without it, as it would anyway)."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    if not triton_installed():
        return False
    if "tensorflow" in sys.modules:
        return False  # too late: importing it now would abort; see check_torch_order()
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def check_torch_order(what: str = "torch") -> None:
    """Raise :class:`FrameworkOrderError` where loading torch/triton now could abort the process."""
    if bad_order():
        raise FrameworkOrderError(
            f"{what}: TensorFlow is already loaded in this process and triton (installed here, and "
            "imported by PyTorch on its own, e.g. by torch.optim) is not; loading triton after "
            "TensorFlow aborts the whole process ('LLVM ERROR: inconsistency in registered "
            f"CommandLine options'). Fix: {FIX}"
        )


def load(framework: str) -> None:
    """Get the process ready for this library to import ``framework`` (``"torch"`` or
    ``"tensorflow"``; others are left alone): triton first where it is installed, and a
    :class:`FrameworkOrderError` where the order is already wrong and torch is asked for."""
    if framework == "tensorflow":
        import_triton_first()
    elif framework == "torch":
        check_torch_order()
        import_triton_first()
