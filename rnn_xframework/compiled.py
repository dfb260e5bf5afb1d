r"""What every compiled RNN shares, framework-free: the source it wraps, the checks of a call,
and the attributes it answers like its source.

``xf.compile`` returns an object of a backend's subclass of :class:`CompiledRNN` (torch's is a
``torch.nn.Module``; TensorFlow's a plain object around ``tf.function`` graphs). Parameters live
in ``source`` only, so training or ``set_weights`` on either object shows in the other.

An unbuilt RNN compiles too (:func:`pending`), as ``torch.compile`` of a lazy module does: the
first call builds it for its inputs' features and compiles then. A compiled RNN pickles,
deep-copies and ``torch.save``\ s as its recipe, the source RNN and the method
(:meth:`CompiledRNN.__reduce__`): loading compiles the loaded source again.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from rnn_xframework import protocol, registry
from rnn_xframework.errors import InputShapeError, UnsupportedConfigError

_PENDING_LOCK = threading.Lock()  # one first call compiles a pending object


FORWARDED = (
    "order",
    "return_sequences",
    "return_state",
    "go_backwards",
    "time_major",
    "zero_output_for_mask",
    "cells",
    "cell",
    "units",
)


def is_built(rnn: Any) -> bool:
    """Whether every cell of ``rnn`` has weights."""
    return all(c.input_dim is not None for c in rnn.cells)


def compile_method(rnn: Any, method: str) -> Callable[[Any], Any]:
    """The function of ``rnn``'s backend that compiles a built RNN with ``method``
    (``compile_methods[method]``, imported on first use)."""
    module, func = registry.get(rnn.backend).compile_methods[method].split(":")
    return getattr(importlib.import_module(module), func)


def recompile(rnn: Any, method: str) -> Any:
    """``method``'s compiled object of ``rnn`` (pending where ``rnn`` is unbuilt): what
    unpickling a compiled RNN calls."""
    make = compile_method(rnn, method)
    return make(rnn) if is_built(rnn) else pending(rnn, method, make)


_BIDIRECTIONAL: dict[type, type] = {}  # a backend's Bidirectional class -> its compiled subclass
_BIDIRECTIONAL_LOCK = threading.Lock()


def recompile_bidirectional(source: Any, method: str) -> Any:
    """A compiled ``Bidirectional``: its backend's ``Bidirectional`` class (a subclass of it that
    pickles as its recipe) over ``source``'s two RNNs, each compiled with ``method``
    (:func:`recompile`), merging as ``source`` does (both directions in one call of the backend's
    own where its ``fused_bidirectional`` mixin can, :class:`~rnn_xframework.registry.Backend`). It
    holds ``method`` and ``source``; pickling it (``copy.deepcopy``, ``torch.save``) stores
    ``source`` and ``method``, as a compiled RNN does."""
    backend = registry.get(source.backend)
    base = backend.bidirectional_class
    with _BIDIRECTIONAL_LOCK:
        cls = _BIDIRECTIONAL.get(base)
        if cls is None:
            doc = f"``xf.compile`` of a ``Bidirectional``: {base.__name__} over two compiled RNNs."
            namespace = {"__reduce__": _reduce_bidirectional, "__doc__": doc, "__module__": base.__module__}
            bases = (base,)
            if backend.fused_bidirectional is not None:  # runs both directions in one call where it can
                module, name = backend.fused_bidirectional.split(":")
                bases = (getattr(importlib.import_module(module), name), base)
            cls = _BIDIRECTIONAL[base] = type("CompiledBidirectional", bases, namespace)
    out = cls(*(recompile(layer, method) for layer in source.layers), merge_mode=source.merge_mode)
    # plain attributes: a module or Keras layer would track ``source`` as a second owner of its parameters
    out.__dict__.update(method=method, source=source)
    return out


def _reduce_bidirectional(self: Any) -> tuple[Any, ...]:
    return (recompile_bidirectional, (self.source, self.method))


def pending(rnn: Any, method: str, make: Callable[[Any], Any]) -> Any:
    """A compiled RNN of the unbuilt ``rnn``: an object of its backend's compiled class
    (``registry.Backend.compiled_class``) that, on its first call, builds ``rnn`` for the
    inputs' features and compiles it with ``make`` (``make(rnn)``), then runs as that."""
    spec = registry.get(rnn.backend).compiled_class
    if spec is None:
        raise UnsupportedConfigError(
            f"compile: backend {rnn.backend!r} names no compiled_class, so an unbuilt RNN cannot be compiled "
            "there; call rnn.build((None, None, features)) first"
        )
    module, name = spec.split(":")
    cls = getattr(importlib.import_module(module), name)
    obj = cls.__new__(cls)
    obj._init_pending(rnn, method, make)
    return obj


def check_built(rnn: Any) -> None:
    """Raise unless every cell of ``rnn`` has weights (compiling needs their sizes)."""
    if any(c.input_dim is None for c in rnn.cells):
        raise UnsupportedConfigError(
            "compile: the RNN is not built yet; call rnn.build((None, None, features)) or call it once first"
        )


def has_dropout(rnn: Any) -> bool:
    """Whether any cell of ``rnn`` has a dropout rate (in training its masks apply)."""
    return any(c.dropout > 0 or c.recurrent_dropout > 0 for c in rnn.cells)


def check_compiled_call(
    rnn: Any,
    method: str,
    inputs: Any,
    initial_state: Any,
    training: bool | None,
    mask: Any,
    takes_mask: bool = True,
    takes_dropout: bool = False,
) -> list[list[Any]] | None:
    """The uncompiled ``rnn``'s checks, for an object compiled from it: refuses what the compiled
    loop does not have (dropout in training unless ``takes_dropout``; ``mask`` unless
    ``takes_mask``) rather than silently running another path, checks a mask's shape (``[batch,
    time]``, as the uncompiled RNN's), and returns the checked initial states (one list per
    layer), or ``None`` when none are given."""
    if mask is not None and not takes_mask:
        backend = registry.get(rnn.backend)
        others = ", ".join(repr(m) for m in backend.compile_methods if m in backend.masked_methods)
        raise UnsupportedConfigError(
            f"compile: the {method} loop takes no mask; compile with a method that does ({others}), "
            "or call the uncompiled RNN (same weights)"
        )
    if training and not takes_dropout and has_dropout(rnn):
        raise UnsupportedConfigError(
            f"compile: the {method} loop has no dropout; train with the uncompiled RNN (same weights)"
            + ("" if rnn.backend != "torch" else ", or compile with 'torchscript' or 'inductor'")
        )
    ops, stack = rnn._ops, rnn.cell
    protocol.check_tensor(ops, inputs, "RNN inputs", (None, None, stack.input_dim), stack.dtype_name)
    time_axis, batch_axis = (0, 1) if rnn.time_major else (1, 0)
    if ops.shape(inputs)[time_axis] == 0:
        raise InputShapeError("RNN inputs: expected at least one time step, got a sequence of length 0")
    if mask is not None:
        want = (ops.shape(inputs)[batch_axis], ops.shape(inputs)[time_axis])
        got = tuple(np.shape(mask))
        if got != want:
            raise InputShapeError(f"RNN mask: expected shape {want} (batch, time), got {got}")
    if initial_state is None:
        return None
    batch = ops.shape(inputs)[batch_axis]
    layers = protocol.as_rnn_states(stack, ops, initial_state)
    return [protocol.check_states(cell, ops, state, batch) for cell, state in zip(stack.cells, layers, strict=True)]


class CompiledRNN:
    """Base of every backend's compiled RNN: ``source`` (the ``RNN`` compiled) and ``method``.

    Reads ``order``, ``cells``, ``return_state``, ... from the source; ``get_weights`` /
    ``set_weights`` / ``get_initial_state`` are the source's. Subclasses call
    :meth:`_init_compiled` and :meth:`check_call`.
    """

    backend: ClassVar[str]
    source: Any
    method: str

    def _init_compiled(self, rnn: Any, method: str) -> None:
        check_built(rnn)
        self.source = rnn
        self.method = method

    def _init_pending(self, rnn: Any, method: str, make: Callable[[Any], Any]) -> None:
        """The state of a :func:`pending` object (a subclass with more to set up extends it)."""
        self.source = rnn
        self.method = method
        self.__dict__["_make"] = make

    @property
    def built(self) -> bool:
        """Whether the loop is compiled (an RNN compiled unbuilt compiles on its first call)."""
        return "_make" not in self.__dict__

    def _ready(self, inputs: Any) -> None:
        """Before a call: a :func:`pending` object builds its source for ``inputs``' features
        and takes on the state of the compiled object (once; thread-safe)."""
        if "_make" not in self.__dict__:
            return
        with _PENDING_LOCK:
            make = self.__dict__.get("_make")
            if make is None:
                return
            self.source.build((None, None, inputs.shape[-1]))
            real = make(self.source)
            for key, value in vars(real).items():
                self.__dict__.setdefault(key, value)  # this object's own (hooks, source) kept
            del self.__dict__["_make"]

    def __reduce__(self) -> tuple[Any, ...]:
        """``pickle`` / ``copy.deepcopy`` / ``torch.save``: the recipe, the source RNN and the
        method; loading compiles the loaded source again (:func:`recompile`). A compiled loop
        (a TorchScript module, a ``torch.compile`` graph, ``tf.function`` graphs) holds nothing
        of its own beyond what compiling its source makes, and most of them cannot be pickled."""
        return (recompile, (self.source, self.method))

    def __getattr__(self, name: str) -> Any:
        if name in FORWARDED:
            return getattr(self.source, name)
        parent = getattr(super(), "__getattr__", None)  # torch.nn.Module's finds submodules
        if parent is not None:
            return parent(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_initial_state(self, batch_size: Any) -> list[list[Any]]:
        return self.source.get_initial_state(batch_size)

    def get_weights(self) -> list[np.ndarray]:
        return self.source.get_weights()

    def set_weights(self, weights: Any) -> None:
        self.source.set_weights(weights)

    takes_mask: ClassVar[bool] = True
    """Whether this method's loop runs ``mask=`` (a subclass or an instance without one says no)."""
    takes_dropout: ClassVar[bool] = False
    """Whether this method's loop applies dropout in training (else such a call is refused)."""

    def check_call(self, inputs: Any, initial_state: Any, training: bool | None, mask: Any) -> list[list[Any]] | None:
        return check_compiled_call(
            self.source, self.method, inputs, initial_state, training, mask, self.takes_mask, self.takes_dropout
        )
