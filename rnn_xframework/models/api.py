"""``xf.to_torch``, ``xf.to_torch_source``, ``xf.compare``: the public verbs of whole-model ports.
Nothing here imports a framework until it is called."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rnn_xframework import ports
from rnn_xframework.errors import UnsupportedConfigError


def _is_keras(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) or any(
        c.__module__.split(".")[0] in ("keras", "tf_keras") for c in type(obj).__mro__
    )


def _is_library(obj: Any) -> bool:
    return type(obj).__module__.startswith("rnn_xframework.") and isinstance(getattr(obj, "backend", None), str)


def describe(obj: Any) -> Any:
    """The framework-neutral description (:class:`~rnn_xframework.models.graph.Graph`) of a Keras
    model, ``.keras`` path or built layer."""
    from rnn_xframework import frameworks

    frameworks.load("torch")  # triton the safe way, before or after TensorFlow
    import torch  # noqa: F401

    from rnn_xframework.models import keras_reader

    return keras_reader.read(obj)


def _code(obj: Any, masks: str) -> Any:
    from rnn_xframework.models import torch_code

    return torch_code.emit(describe(obj), masks)


def to_torch(obj: Any, *, check: bool = False, masks: str = "right-padded", device: Any = None) -> Any:
    """A native ``torch.nn.Module`` computing what ``obj`` computes, with its weights.

    Args:
        obj: what to port, and what comes back:

            - a Keras ``Sequential`` or functional ``Model`` (nested models too), or the path of a
              ``.keras`` file (loaded in Keras's safe mode), or one built Keras layer of the
              vocabulary (docs/porting.md) -> a ``torch.nn.Module`` for the whole model, called
              with the Keras model's inputs as torch tensors (positional, in the model's input
              order, batch-major) and returning one tensor, or a list for several outputs. Its
              layers are PyTorch's own where one is exact (``nn.Embedding``, ``nn.Linear``,
              ``nn.LSTM``/``GRU``/``RNN``, ``nn.BatchNorm1d``, ``nn.LayerNorm``, ``nn.Conv1d``,
              ``nn.Dropout``), the library's torch ``layers.RNN`` otherwise;
            - the library's ``RNN`` or cell (any backend) -> ``torch.nn.RNN``/``LSTM``/``GRU`` or
              ``nn.*Cell``, as before (:func:`rnn_xframework.ports.to_torch`).
        check: run :func:`compare` on a probe batch (forward, one SGD step) and raise
            :class:`UnsupportedConfigError` on a mismatch.
        masks: ``"right-padded"`` (default): masked recurrent layers run as PyTorch's modules on
            packed sequences, and a mask with a gap raises at call time; ``"any"``: they run as the
            library's layers, which take any mask.
        device: where the module goes (default CPU).

    Raises:
        UnsupportedConfigError: a layer outside the vocabulary (a ``Lambda``, a custom layer, an
            operation that is not a layer), or a setting with no exact port; the message names the
            layer and its class. Nothing is returned half-ported.
    """
    if _is_library(obj) or not _is_keras(obj):
        return ports.to_torch(obj, device=device)
    from rnn_xframework.models import torch_module

    module = torch_module.build(_code(obj, masks))
    if device is not None:
        module.to(device)
    if check:
        report = compare(obj, module, None, steps=1, show=False)
        if not report.passed:
            from rnn_xframework.parity.report import format_plain

            raise UnsupportedConfigError(
                f"to_torch(check=True): the port does not match Keras:\n{format_plain(report)}"
            )
    return module


def to_torch_source(obj: Any, directory: str | os.PathLike[str], *, masks: str = "right-padded") -> tuple[str, str]:
    """Write ``directory/model.py`` (a readable PyTorch module: a class named after the model,
    ``__init__`` and ``forward`` written out, and ``load(path=None)``) and ``directory/model.pt``
    (its ``state_dict``) for a Keras model, ``.keras`` path or built layer; returns the two paths.
    The code is the one :func:`to_torch`'s module runs. Where every layer is PyTorch's own,
    ``model.py`` imports only torch."""
    from rnn_xframework.models import torch_source

    py, pt = torch_source.write(_code(obj, masks), directory)
    return str(py), str(pt)


def compare(
    keras_model: Any,
    torch_module: Any,
    inputs: Sequence[Any] | None = None,
    *,
    steps: int = 1,
    lr: float = 0.1,
    show: bool = True,
    masks: str | None = None,
) -> Any:
    """Forward and training parity of a Keras model and a torch module that ports it (from
    :func:`to_torch`, or ``model.py``'s ``load()``).

    Args:
        keras_model: a Keras model or ``.keras`` path.
        torch_module: the port: called with the inputs as torch tensors, positional.
        inputs: NumPy arrays (or tensors) in the model's input order; default a probe batch
            (3 samples, 5 steps for free sizes; tokens in range with right-padded zeros where an
            ``Embedding(mask_zero=True)`` reads them).
        steps: identical SGD steps (learning rate ``lr``) on both sides; 0 for forward only.
        show: print the table (the parity suite's style).
        masks: the ``masks=`` the module was ported with (default: what :func:`to_torch` recorded
            on it, else ``"right-padded"``); it names the expected ``state_dict`` keys.

    Returns:
        :class:`rnn_xframework.parity.report.Report`: rows ``forward`` (per output, max abs
        error against the float32 1e-5 / float64 1e-12 tolerance), ``loss`` and ``weights``
        (relative to the largest update; tolerance 1e-4 / 1e-10), ``params`` on a trainable
        count mismatch; ``report.passed``. See :mod:`rnn_xframework.models.parity_check`.
    """
    from rnn_xframework.models import parity_check

    return parity_check.compare(keras_model, torch_module, inputs, steps=steps, lr=lr, show=show, masks=masks)
