"""rnn_xframework: one recurrent-network program on TensorFlow/Keras or PyTorch.

Importing this package imports neither framework; each backend loads its framework the first
time it is asked for. The one exception: with TensorFlow already loaded and triton installed but
not loaded, it loads triton in the way that cannot abort the process
(:func:`rnn_xframework.frameworks.guard`), so any import order works.
"""

from __future__ import annotations

from rnn_xframework import backends, cells, frameworks, layers
from rnn_xframework.compile import compile
from rnn_xframework.config import get_backend, set_backend, use_backend
from rnn_xframework.errors import (
    BackendUnavailableError,
    DTypeMismatchError,
    FrameworkMismatchError,
    FrameworkOrderError,
    InputShapeError,
    NotBuiltError,
    RNNXError,
    StateStructureError,
    UnknownBackendError,
    UnsupportedConfigError,
    WeightsError,
)
from rnn_xframework.models import compare, to_torch, to_torch_source
from rnn_xframework.ports import from_keras, from_torch, to_keras
from rnn_xframework.protocol import Cell
from rnn_xframework.transfer import (
    convert,
    from_torch_fused,
    load_weights,
    save_weights,
    to_torch_fused,
    transfer_weights,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Cell",
    "DTypeMismatchError",
    "FrameworkMismatchError",
    "FrameworkOrderError",
    "InputShapeError",
    "NotBuiltError",
    "RNNXError",
    "StateStructureError",
    "UnknownBackendError",
    "UnsupportedConfigError",
    "WeightsError",
    "backends",
    "cells",
    "compare",
    "compile",
    "convert",
    "from_keras",
    "from_torch",
    "from_torch_fused",
    "get_backend",
    "layers",
    "load_weights",
    "save_weights",
    "set_backend",
    "to_keras",
    "to_torch",
    "to_torch_fused",
    "to_torch_source",
    "transfer_weights",
    "use_backend",
]

frameworks.guard()  # TensorFlow loaded first: triton now, with RTLD_DEEPBIND (any order works)
