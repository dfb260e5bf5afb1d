"""How a Keras-named constructor of :mod:`rnn_xframework.layers` is made: a class whose metaclass
(:class:`Factory`) makes calling it return the chosen backend's native object and
``isinstance`` check the object's kind on every backend, with the real signature for
``help()`` and ``inspect``; and the ``input_size`` / ``input_shape`` arguments every one takes."""

from __future__ import annotations

import inspect
from typing import Any


def input_features(input_size: int | None, input_shape: Any) -> int | None:
    """The number of input features given up front: PyTorch's ``input_size`` or the last entry
    of Keras's ``input_shape`` (``(features,)``, ``(time, features)`` or with a batch entry)."""
    if input_size is not None and input_shape is not None:
        raise ValueError(
            f"give input_size (PyTorch's name) or input_shape (Keras's), not both; got input_size={input_size!r}, "
            f"input_shape={input_shape!r}"
        )
    dim = input_size if input_shape is None else tuple(input_shape)[-1]
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
        raise ValueError(f"input_size / input_shape[-1] must be a positive integer, got {dim!r}")
    return dim


INPUT_SIZE_DOC = """
    Input size up front: ``input_size=`` (PyTorch's name) or ``input_shape=`` (Keras's, the last
    entry counts) builds the cell at once. Without them it is built by ``build()``, the first
    call or, on torch, ``load_state_dict``; until then a torch cell holds lazy parameters
    (``torch.nn.UninitializedParameter``) that an optimizer made beforehand still trains.
"""


def with_input_size(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` with the keyword-only ``input_size`` and ``input_shape`` before ``**kwargs``."""
    P = inspect.Parameter
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is P.VAR_KEYWORD), len(params))
    extra = [
        P("input_size", P.KEYWORD_ONLY, default=None, annotation="int | None"),
        P("input_shape", P.KEYWORD_ONLY, default=None, annotation="tuple | None"),
    ]
    return signature.replace(parameters=[*params[:at], *extra, *params[at:]])


class Factory(type):
    """Metaclass of the Keras-named constructors. Calling ``layers.LSTMCell(...)`` runs the class's
    ``__new__``, which returns the chosen backend's native object (a ``torch.nn.Module``, a Keras
    layer, ...; not an instance of the class, so no ``__init__`` follows). ``isinstance(obj,
    layers.LSTMCell)`` checks the object's kind on every backend. The real signature of ``__new__``
    is what ``help()``, ``inspect.signature`` and the API reference show."""

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        if "__signature__" not in namespace and "__new__" in namespace:
            new = inspect.signature(namespace["__new__"], eval_str=True)
            cls.__signature__ = new.replace(parameters=list(new.parameters.values())[1:])

    def __instancecheck__(cls, obj: Any) -> bool:
        return cls._is(obj)  # type: ignore[attr-defined]


def with_cls(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` with a leading ``cls``: the signature of a ``__new__`` taking those arguments."""
    cls = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_ONLY)
    return signature.replace(parameters=[cls, *signature.parameters.values()])
