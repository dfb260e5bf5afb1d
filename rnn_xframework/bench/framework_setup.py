"""Framework-specific helpers used by the workers; every import is lazy.

Nothing here may be called from the orchestrating process: each function
imports its framework, and TF and torch must never share a timing process.
"""

from __future__ import annotations

import os
import platform

from rnn_xframework.bench.methods import DeviceUnavailableError, Framework
from rnn_xframework.bench.timing import SyncFn, _no_sync


def quiet_tensorflow() -> None:
    """Silence TF's C++ info/warning log; the only thing this suite silences."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def check_device(framework: Framework, device: str) -> None:
    """Raise :class:`DeviceUnavailableError` with a clear message if unusable."""
    if device == "cpu":
        return
    if device != "cuda":
        raise DeviceUnavailableError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    if framework == "torch":
        import torch

        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "--device cuda was requested but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                "run on a machine with an NVIDIA GPU and a CUDA build of torch"
            )
    elif framework == "tensorflow":
        quiet_tensorflow()
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            raise DeviceUnavailableError(
                "--device cuda was requested but TensorFlow sees no GPU "
                f"(tensorflow {tf.__version__}; tensorflow-cpu has no GPU support)"
            )
    else:
        raise DeviceUnavailableError(f"{framework} methods run on the CPU only")


def sync_fn(framework: Framework, device: str) -> SyncFn:
    """The call that waits for queued device work, used around each timing."""
    if device == "cuda" and framework == "torch":
        import torch

        return torch.cuda.synchronize
    if device == "cuda" and framework == "tensorflow":
        import tensorflow as tf

        return tf.test.experimental.sync_devices
    return _no_sync


def versions(framework: Framework) -> dict[str, object]:
    """Versions and thread settings of ``framework`` for the JSON metadata."""
    info: dict[str, object] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if framework == "torch":
        import torch

        info.update(
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            mkldnn=torch.backends.mkldnn.is_available(),
            mkl=torch.backends.mkl.is_available(),
        )
    elif framework == "tensorflow":
        quiet_tensorflow()
        import keras
        import tensorflow as tf

        info.update(tensorflow=tf.__version__, keras=keras.__version__)
    import numpy as np

    info["numpy"] = np.__version__
    return info
