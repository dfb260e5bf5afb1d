"""Typed exceptions. Each one subclasses the built-in that a caller would expect
(``ValueError``, ``TypeError`` or ``ImportError``) so plain ``except ValueError`` keeps working,
and each message says what was expected, what was given, and how to fix it."""

from __future__ import annotations


class RNNXError(Exception):
    """Base class of every error this library raises on purpose."""


class UnknownBackendError(RNNXError, ValueError):
    """A backend name that is not registered (for example ``backend="jax"``)."""


class BackendUnavailableError(RNNXError, ImportError):
    """A registered backend whose framework cannot be used in this process: not installed, or
    (TensorFlow) Keras already loaded with another ``KERAS_BACKEND``."""


class InputShapeError(RNNXError, ValueError):
    """An input or state tensor of the wrong rank, batch size or feature size."""


class StateStructureError(RNNXError, ValueError):
    """States of the wrong structure: not a list, the wrong number of tensors or layers."""


class FrameworkMismatchError(RNNXError, TypeError):
    """A tensor or object of another framework than the one the cell runs on."""


class DTypeMismatchError(RNNXError, TypeError):
    """A tensor whose dtype differs from the cell's dtype, or an unsupported dtype name."""


class WeightsError(RNNXError, ValueError):
    """Weights of the wrong count or shape, structures that do not match in a transfer, or a
    weight file that does not fit the object it is loaded into."""


class NotBuiltError(WeightsError):
    """An object that has no weights yet (never built nor called) where weights are needed, for
    example ``xf.convert`` of an unbuilt RNN: build it first."""


class UnsupportedConfigError(RNNXError, ValueError):
    """A cell configuration that the chosen backend cannot express exactly."""


class FrameworkOrderError(BackendUnavailableError):
    """TensorFlow was loaded before triton in a process where triton is installed: loading
    PyTorch's triton now would abort the process (see :mod:`rnn_xframework.frameworks`)."""
