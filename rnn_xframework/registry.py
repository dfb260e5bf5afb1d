"""The backend registry: name -> module, imported on first use.

This is the only place that knows which backends exist, and the only ``name -> module`` table.
Adding a backend is a new module in :mod:`rnn_xframework.backends` whose class subclasses
:class:`Backend` (with ``name=``), plus one :func:`register` line below. Everything else about
a backend (its compile methods, the distributions that report its version, its role as a parity
reference) is an attribute of its class. Nothing here imports a framework.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from rnn_xframework import frameworks
from rnn_xframework.errors import (
    BackendUnavailableError,
    FrameworkMismatchError,
    UnknownBackendError,
    UnsupportedConfigError,
)


@dataclass(frozen=True)
class Entry:
    """One registered backend: the module to import and the framework package it needs."""

    module: str
    framework: str | None = None
    install: str = ""
    aliases: tuple[str, ...] = ()


_MODULES: dict[str, Entry] = {}
_ALIASES: dict[str, str] = {}
_REGISTRY: dict[str, Backend] = {}


def register(name: str, module: str, framework: str | None = None, install: str = "", aliases: tuple = ()) -> None:
    """Register a backend ``name`` implemented by ``module`` (imported on first use).

    ``module`` defines a :class:`Backend` subclass with ``name=<name>``; ``framework`` is the
    package it needs (``None``: NumPy only) and ``install`` the command that installs it;
    ``aliases`` are other names for it (``"tf"``). :func:`unregister` removes it again.
    """
    _MODULES[name] = Entry(module, framework, install, tuple(aliases))
    for alias in aliases:
        _ALIASES[alias] = name


def unregister(name: str) -> None:
    """Forget backend ``name`` (or an alias of it) and its aliases: :func:`names`, :func:`get`,
    :func:`canonical_name` and :func:`installed` no longer know it, as before its
    :func:`register` line, and registering it again starts afresh. Objects built on it are left
    as they are; whatever looks their backend up by name (an ``RNN`` call) raises
    :class:`UnknownBackendError`. Raises :class:`UnknownBackendError` for a name not registered."""
    key = canonical_name(name)
    del _MODULES[key]
    for alias in [a for a, target in _ALIASES.items() if target == key]:
        del _ALIASES[alias]
    _REGISTRY.pop(key, None)


class Backend:
    """What the core needs from a framework. One subclass per backend module, named by the class
    keyword ``name=`` as in its :func:`register` line; every method works on that framework's
    native tensors.

    Class attributes (read by the core; a new backend sets its own):
        compile_methods: ``{method: "module:function"}`` for :func:`rnn_xframework.compile`.
        slow_to_compile: methods that take many seconds per shape (the parity matrix skips them).
        cuda_only: methods that run on CUDA tensors only (the parity matrix runs them on ``cuda``).
        distributions: the pip distributions whose versions a report prints.
        forward_reference, gradient_reference: the parity suite's preference for this backend
            as the reference of outputs / of gradients (lower first; ``None``: never).
        trainer: the module with this backend's training half of the parity suite, or ``None``.
        stack_class, rnn_class: the stack and sequence containers.
        cell_bases: the classes every cell of this backend derives from (see :meth:`cell_class`).
    """

    name: ClassVar[str]
    compile_methods: ClassVar[dict[str, str]] = {}
    compiled_class: ClassVar[str | None] = None
    """``"module:Class"`` of the object its compile methods return (a ``compiled.CompiledRNN``
    subclass): what ``xf.compile`` makes for an RNN that is not built yet (built on first call)."""
    slow_to_compile: ClassVar[frozenset[str]] = frozenset()
    cuda_only: ClassVar[frozenset[str]] = frozenset()
    masked_methods: ClassVar[frozenset[str]] = frozenset()
    """The compile methods whose loops take ``mask=`` (the others' refusal names these)."""
    distributions: ClassVar[tuple[str, ...]] = ()
    forward_reference: ClassVar[int | None] = None
    gradient_reference: ClassVar[int | None] = None
    trainer: ClassVar[str | None] = None
    stack_class: ClassVar[type]
    rnn_class: ClassVar[type]
    bidirectional_class: ClassVar[type | None] = None
    fused_bidirectional: ClassVar[str | None] = None
    """``"module:Class"`` of a mixin put before ``bidirectional_class`` in the class of a compiled
    ``Bidirectional`` (:func:`rnn_xframework.compiled.recompile_bidirectional`): its ``run`` may run
    both directions in one call of the backend's own where a method allows, else defers to the
    two compiled RNNs (``super().run``)."""
    cell_bases: ClassVar[tuple[type, ...]] = ()

    def __init_subclass__(cls, *, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        if name in _MODULES:  # else get() finds the class once the name is registered
            _REGISTRY[name] = cls()

    # --- cells ---------------------------------------------------------------------------------
    def cell_class(self, spec: Any) -> type:
        """The class that builds cells of ``spec``'s type (a registered
        :class:`~rnn_xframework.cells.CellSpec`) on this backend: by default
        ``spec.class_over(cell_bases, <the backend's module>)``. A backend whose base class
        depends on the spec overrides this; :class:`UnsupportedConfigError` where it has none."""
        if not self.cell_bases:
            raise NotImplementedError(f"backend {self.name!r}: set cell_bases or override cell_class")
        return spec.class_over(self.cell_bases, type(self).__module__)

    def supports(self, spec: Any) -> bool:
        """Whether this backend builds cells of ``spec``'s type."""
        try:
            self.cell_class(spec)
        except UnsupportedConfigError:
            return False
        return True

    def auto_method(self, rnn: Any) -> str:
        """The compile method ``xf.compile(rnn, "auto")`` picks for this backend."""
        raise UnsupportedConfigError(f"backend {self.name!r} has no compile methods")

    # --- tensors -------------------------------------------------------------------------------
    def is_native(self, x: Any) -> bool:
        """Whether ``x`` is a tensor this backend computes on."""
        raise NotImplementedError

    def shape(self, x: Any) -> tuple[int | None, ...]:
        """Static shape, ``None`` for dimensions unknown while tracing."""
        return tuple(x.shape)

    def dtype_name(self, x: Any) -> str:
        """``"float32"``-style name of a tensor's dtype."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> Any:
        raise NotImplementedError

    def from_numpy(self, a: Any, device: Any = None) -> Any:
        """A native tensor with the values and dtype of a NumPy array (on ``device``)."""
        raise NotImplementedError

    def batch_size(self, x: Any) -> Any:
        """Batch size of ``[batch, ...]``; a scalar tensor where it is unknown while tracing."""
        return self.shape(x)[0]

    def unstack(self, x: Any) -> list[Any]:
        """``[batch, time, ...]`` -> list of ``time`` tensors ``[batch, ...]``."""
        raise NotImplementedError

    def stack(self, xs: list[Any]) -> Any:
        """Inverse of :meth:`unstack`: list of ``[batch, ...]`` -> ``[batch, time, ...]``."""
        raise NotImplementedError

    def reverse_time(self, x: Any) -> Any:
        """``[batch, time, ...]`` with its time axis reversed (``Bidirectional``'s backward output back
        in time order). The default restacks :meth:`unstack`'s steps; a backend with a native
        reversal overrides it (one op instead of one per step)."""
        return self.stack(self.unstack(x)[::-1])

    def where(self, cond: Any, a: Any, b: Any | None) -> Any:
        """``a`` where the boolean ``cond`` (broadcast, e.g. ``[batch, 1]``) is true, else ``b``
        (zeros like ``a`` when ``None``): a selection, so NaN or inf in the other branch stays out."""
        raise NotImplementedError

    def swap_batch_time(self, x: Any) -> Any:
        """``[time, batch, features]`` <-> ``[batch, time, features]`` (for ``time_major`` RNNs)."""
        raise NotImplementedError

    def concat(self, xs: list[Any]) -> Any:
        """Tensors joined along their last axis (``Bidirectional``'s ``merge_mode="concat"``)."""
        raise NotImplementedError

    # --- devices and numerics --------------------------------------------------------------------
    def devices(self) -> list[str]:
        """Devices this backend can run on here, in torch's spelling (``"cpu"``, ``"cuda"``)."""
        return ["cpu"]

    @contextmanager
    def strict_numerics(self) -> Iterator[list[str]]:
        """Turn off reduced-precision shortcuts (TF32) for a parity run and restore them after.

        Yields a list of ``"setting: old -> new"`` lines saying what was changed (empty here).
        """
        yield []

    @contextmanager
    def inference(self) -> Iterator[None]:
        """A scope in which calls record nothing for a backward (torch: ``torch.no_grad()``; nothing to
        do here): the parity's ``masked:wide`` rows run in it, as inference does."""
        yield


def canonical_name(name: str) -> str:
    """Resolve aliases (``"tf"`` -> ``"tensorflow"``); raise :class:`UnknownBackendError`."""
    if not isinstance(name, str):
        raise UnknownBackendError(f"backend must be a string such as 'torch', got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _MODULES:
        known = ", ".join(sorted(_MODULES) + sorted(_ALIASES))
        raise UnknownBackendError(f"unknown backend {name!r}; expected one of: {known}")
    return key


def get(name: str) -> Backend:
    """The :class:`Backend` for ``name``, importing its module (and framework) on first use.

    No lock is held while importing: Python's import lock already makes the first import
    thread-safe, and a backend module may ask for another backend while it loads.
    """
    key = canonical_name(name)
    backend = _REGISTRY.get(key)
    if backend is not None:
        return backend
    entry = _MODULES[key]
    if entry.framework is not None and importlib.util.find_spec(entry.framework) is None:
        raise BackendUnavailableError(
            f"backend {key!r} needs the {entry.framework!r} package, which is not installed; "
            f"install it with: {entry.install}"
        )
    if entry.framework is not None:
        frameworks.load(entry.framework)  # triton before TensorFlow (rnn_xframework.frameworks)
    module = importlib.import_module(entry.module)
    if key not in _REGISTRY:  # its module was imported before this registration (or an unregister)
        classes = (c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Backend))
        found = [c for c in classes if getattr(c, "name", None) == key]
        if not found:
            raise BackendUnavailableError(
                f"backend {key!r} is registered as module {entry.module!r}, which defines no registry.Backend "
                f"subclass with name={key!r}; fix the module or its register() line"
            )
        _REGISTRY.setdefault(key, found[0]())
    return _REGISTRY[key]


def names() -> list[str]:
    """Every registered backend name, installed or not."""
    return list(_MODULES)


def framework(name: str) -> str | None:
    """The top-level package backend ``name`` needs (``"torch"``), or ``None`` (NumPy)."""
    return _MODULES[canonical_name(name)].framework


def installed() -> list[str]:
    """Backends whose framework is importable here (checked without importing it)."""
    return [
        key
        for key, entry in _MODULES.items()
        if entry.framework is None or importlib.util.find_spec(entry.framework) is not None
    ]


def backend_for(x: Any) -> str | None:
    """The registered backend whose native tensor ``x`` is, or ``None``; imports nothing: a loaded
    backend whose ``is_native(x)`` holds, else the backend named, aliased or needing the top-level
    package of ``x``'s type (a ``torch.Tensor`` before the torch backend is loaded, a ``keras``
    tensor). For error messages: "build the cell with backend=..."."""
    for key, backend in list(_REGISTRY.items()):
        if key in _MODULES and backend.is_native(x):
            return key
    package = type(x).__module__.split(".", 1)[0]
    return next((key for key, e in _MODULES.items() if package in (key, e.framework, *e.aliases)), None)


def of(obj: Any) -> Backend:
    """The backend an object of this library (cell, stack, RNN) runs on."""
    name = getattr(obj, "backend", None)
    if not isinstance(name, str) or name not in _MODULES:
        raise FrameworkMismatchError(
            f"expected a cell, stack or RNN made by rnn_xframework.layers, got {type(obj).__name__}; "
            "build it with rnn_xframework.layers "
        )
    return get(name)


# --- the backends: one line each --------------------------------------------------------------------
register("numpy", "rnn_xframework.backends.numpy", aliases=("np",))
register(
    "torch",
    "rnn_xframework.backends.torch",
    "torch",
    'pip install "rnn_xframework[torch]"  (or: pip install torch)',
    aliases=("pytorch",),
)
register(
    "tensorflow",
    "rnn_xframework.backends.tensorflow",
    "tensorflow",
    'pip install "rnn_xframework[tensorflow]"  (or: pip install tensorflow)',
    aliases=("tf", "keras"),
)
