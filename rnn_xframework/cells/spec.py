"""The cell-spec machinery: :class:`CellSpec`, the registry (:func:`register`, :func:`get`),
:func:`run_step` (a spec's step on any eager backend) and the helpers backends build on.
The package docstring (:mod:`rnn_xframework.cells`) describes the step contract."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from rnn_xframework import layouts, protocol
from rnn_xframework.dropout import check_rate
from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.layouts import Layout

COMMON_KEYS = ("units", "use_bias", "dropout", "recurrent_dropout")

COMMON_ARGS_DOC = """
        use_bias: whether the cell has ``bias``.
        dropout: fraction of the inputs to drop (Keras semantics: one inverted mask per
            sequence, only with ``training=True``; see :mod:`rnn_xframework.dropout`).
        recurrent_dropout: fraction of the recurrent state to drop, likewise.
        backend: ``"torch"``, ``"tensorflow"`` (``"tf"``) or ``"numpy"``; default
            :func:`rnn_xframework.get_backend`.
        dtype: ``"float32"`` (default) or ``"float64"``, or the framework's dtype object.
        device: torch device (``"cpu"``, ``"cuda"``, ...); for TensorFlow a device string.
        **kwargs: passed to the backend's class (Keras's initializers and ``name``; torch's
            ``train_recurrent_bias`` and ``seed``; NumPy's ``seed``)."""


class StepOps(Protocol):
    """The tensor operations a spec's ``step`` may use besides ``+``, ``-``, ``*``."""

    def split(self, x: Any, n: int) -> list[Any]:
        """``x [batch, n*k]`` -> ``n`` tensors ``[batch, k]`` (the last axis)."""
        ...

    def activation(self, name: Any) -> Callable[[Any], Any]:
        """The function a Keras activation name (``"tanh"``, ``"sigmoid"``, ...) stands for."""
        ...

    def matmul(self, a: Any, b: Any) -> Any: ...

    def concat(self, xs: Sequence[Any]) -> Any:
        """Concatenate along the last axis."""
        ...


@dataclass(frozen=True)
class CellSpec:
    """One cell type, framework-free.

    Attributes:
        name: the Keras class name (``"LSTMCell"``), also the layout's base name.
        gates: the gate blocks along the last canonical weight axis, in canonical order.
        states: names of the state tensors (``("h", "c")``); each is ``[batch, units]``.
        step: the formula (see the module docstring).
        layouts: the weight layouts this type can have; the first is the default.
        activations: activation arguments and their defaults, in Keras's positional order.
        options: keyword-only options of this type and their defaults (``reset_after``).
        layout_name: the layout a configuration uses (default: always the first).
        bias_init: Keras's initial bias, ``(config, zeros) -> bias`` (default: zeros).
        keras_class: the ``keras.layers`` class that computes the same cell, if any.
        doc: the user-facing docstring (formula, Args, Shape, Example).
        sums_recurrent: whether ``step`` adds ``recurrent(states[0], 0, G)`` to the whole input
            projection and calls ``recurrent`` nowhere else (SimpleRNN, LSTM; not GRU). A compiled
            loop may then compute both products as one, ``[x, h] @ [kernel; recurrent_kernel]``
            plus both biases, and give ``step`` that sum with a ``recurrent`` that adds nothing.
    """

    name: str
    gates: tuple[str, ...]
    states: tuple[str, ...]
    step: Callable[..., tuple[Any, list[Any]]]
    layouts: tuple[Layout, ...]
    activations: Mapping[str, str | None] = field(default_factory=lambda: {"activation": "tanh"})
    options: Mapping[str, Any] = field(default_factory=dict)
    layout_name: Callable[[Mapping[str, Any]], str] | None = None
    bias_init: Callable[[Mapping[str, Any], np.ndarray], np.ndarray] | None = None
    keras_class: str | None = None
    doc: str = ""
    sums_recurrent: bool = False

    @property
    def n_gates(self) -> int:
        return len(self.gates)

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def positional(self) -> tuple[str, ...]:
        """Arguments after ``units`` that may be given by position, as Keras orders them."""
        return (*self.activations, "use_bias")

    @property
    def config_keys(self) -> tuple[str, ...]:
        """The keys of :meth:`bind`'s result: what rebuilds the cell on any backend."""
        return (*COMMON_KEYS, *self.activations, *self.options)

    def defaults(self) -> dict[str, Any]:
        return {"use_bias": True, "dropout": 0.0, "recurrent_dropout": 0.0, **self.activations, **self.options}

    def bind(self, units: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The cell's config from a constructor call; removes the spec's keys from ``kwargs``
        (what is left belongs to the backend). Raises ``TypeError``/``ValueError`` as Python does."""
        if len(args) > len(self.positional):
            raise TypeError(f"{self.name}() takes at most {len(self.positional) + 1} positional arguments")
        config = self.defaults()
        for name, value in zip(self.positional, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{self.name}() got multiple values for argument {name!r}")
            config[name] = value
        for key in list(kwargs):
            if key in config:
                config[key] = kwargs.pop(key)
        config["units"] = protocol.check_units(units)  # the one check of units, for every backend
        config["use_bias"] = bool(config["use_bias"])
        for rate in ("dropout", "recurrent_dropout"):
            config[rate] = check_rate(rate, config[rate])
        return config

    def layout(self, config: Mapping[str, Any]) -> Layout:
        return layouts.get(self.layout_name(config) if self.layout_name else self.layouts[0].name)

    def initial_bias(self, config: Mapping[str, Any], dtype: str) -> np.ndarray:
        """Keras's initial canonical bias for this configuration (zeros unless the spec says)."""
        shape = self.layout(config).shapes(1, config["units"], True)[2][1]
        bias = np.zeros(shape, dtype)
        return bias if self.bias_init is None else self.bias_init(config, bias).astype(dtype)

    def signature(self) -> inspect.Signature:
        """The constructor's signature, for ``help()`` and ``inspect`` on ``layers.<name>``."""
        P = inspect.Parameter
        activation = str | Callable[..., Any] | None
        params = [P("units", P.POSITIONAL_OR_KEYWORD, annotation=int)]
        params += [P(a, P.POSITIONAL_OR_KEYWORD, default=d, annotation=activation) for a, d in self.activations.items()]
        params.append(P("use_bias", P.POSITIONAL_OR_KEYWORD, default=True, annotation=bool))
        params += [P(k, P.KEYWORD_ONLY, default=d, annotation=type(d)) for k, d in self.options.items()]
        params += [P(k, P.KEYWORD_ONLY, default=0.0, annotation=float) for k in ("dropout", "recurrent_dropout")]
        params.append(P("backend", P.KEYWORD_ONLY, default=None, annotation=str | None))
        params += [P(k, P.KEYWORD_ONLY, default=None, annotation=Any) for k in ("dtype", "device")]
        params.append(P("kwargs", P.VAR_KEYWORD, annotation=Any))
        return inspect.Signature(params, return_annotation=Any)

    def class_over(self, bases: tuple[type, ...], module: str) -> type:
        """A backend's class for this cell type: a subclass of ``bases`` named like the Keras
        class (``__module__`` ``module``), with this spec as its ``spec`` attribute; made once per
        spec and bases (a re-registered spec gets a new one)."""
        key = (self.name, bases)
        with _LOCK:
            cls = _CLASSES.get(key)
            if cls is None or cls.spec is not self:  # type: ignore[attr-defined]
                namespace = {"spec": self, "__doc__": self.doc, "__module__": module, "__qualname__": self.name}
                cls = _CLASSES[key] = type(self.name, bases, namespace)
        return cls


class StepWeights(NamedTuple):
    """A cell's weights as :func:`run_step` reads them, native tensors in the canonical layout.

    Attributes:
        kernel: ``(input_dim, G*units)``.
        recurrent_kernel: ``(units, G*units)``.
        input_bias: ``(G*units,)`` added to the input projection, or ``None``.
        recurrent_bias: ``(G*units,)`` added to the recurrent product, or ``None``.
    """

    kernel: Any
    recurrent_kernel: Any
    input_bias: Any
    recurrent_bias: Any


def run_step(
    spec: CellSpec,
    ops: StepOps,
    config: Mapping[str, Any],
    w: StepWeights,
    x: Any,
    states: list[Any],
    x_masks: Sequence[Any] | None = None,
    h_masks: Sequence[Any] | None = None,
) -> tuple[Any, list[Any]]:
    """One step of ``spec`` on any eager backend: the projections, then ``spec.step``.

    ``x_masks`` / ``h_masks``: the dropout masks in force (one, or one per gate, as
    :mod:`rnn_xframework.dropout` draws them), or ``None``.
    """
    units, g = config["units"], spec.n_gates
    if not x_masks:
        xp = ops.matmul(x, w.kernel)
    elif len(x_masks) == 1:
        xp = ops.matmul(x * x_masks[0], w.kernel)
    else:
        xp = ops.concat([ops.matmul(x * m, k) for m, k in zip(x_masks, ops.split(w.kernel, g), strict=True)])
    if w.input_bias is not None:
        xp = xp + w.input_bias
    return spec.step(ops, config, xp, dropped_recurrent(ops, w, units, g, h_masks), states)


def dropped_recurrent(
    ops: StepOps, w: StepWeights, units: int, gates: int, h_masks: Sequence[Any] | None = None
) -> Callable[[Any, int, int], Any]:
    """``recurrent(h, start, stop)`` for a spec's step with Keras's recurrent dropout masks in
    force (``[batch, units]`` each): none or one (:func:`recurrent_product`), or one per gate
    (gate block ``i``'s product on ``h * h_masks[i]``, as Keras's ``implementation=1``)."""
    if not h_masks or len(h_masks) == 1:
        return recurrent_product(w, units, gates, h_masks[0] if h_masks else None)
    blocks = ops.split(w.recurrent_kernel, gates)

    def recurrent(h: Any, start: int, stop: int) -> Any:
        r = ops.concat([ops.matmul(h * h_masks[i], blocks[i]) for i in range(start, stop)])
        return r if w.recurrent_bias is None else r + gate_slice(w.recurrent_bias, units, gates, start, stop)

    return recurrent


def gate_slice(a: Any, units: int, gates: int, start: int, stop: int) -> Any:
    """Gate blocks ``start:stop`` of ``a`` along its last axis (``a`` itself when that is all)."""
    if start == 0 and stop == gates:
        return a
    return a[..., start * units : stop * units]


def recurrent_product(w: StepWeights, units: int, gates: int, h_mask: Any = None) -> Callable[[Any, int, int], Any]:
    """``recurrent(h, start, stop)`` for a spec's step: ``(h * h_mask) @ recurrent_kernel`` over
    gate blocks ``start:stop``, plus the recurrent bias of those blocks; no slice when the step
    asks for every block (graph compilers see the plain product)."""

    def recurrent(h: Any, start: int, stop: int) -> Any:
        hm = h if h_mask is None else h * h_mask
        r = hm @ gate_slice(w.recurrent_kernel, units, gates, start, stop)
        return r if w.recurrent_bias is None else r + gate_slice(w.recurrent_bias, units, gates, start, stop)

    return recurrent


# --- the registry ---------------------------------------------------------------------------------
_SPECS: dict[str, CellSpec] = {}
_CLASSES: dict[tuple[str, tuple[type, ...]], type] = {}  # (name, bases) -> the class_over() result
_LOCK = threading.Lock()


def register(spec: CellSpec) -> CellSpec:
    """Make ``spec`` a cell type of every backend (and its layouts known to transfers and files).

    Registering the same name again replaces the spec. Returns ``spec``.
    """
    if not isinstance(spec, CellSpec):
        raise TypeError(f"register() takes a CellSpec, got {type(spec).__name__}")
    if not spec.layouts or spec.layouts[0].name != spec.name:
        raise ValueError(f"{spec.name}: the first layout must be named {spec.name!r}")
    for layout in spec.layouts:
        if layout.gates != spec.n_gates:
            raise ValueError(f"{spec.name}: layout {layout.name} has {layout.gates} gates, the spec {spec.n_gates}")
    with _LOCK:
        for layout in spec.layouts:
            layouts.register(layout)
        _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget cell type ``name`` and its layouts (objects already built keep working)."""
    with _LOCK:
        spec = _SPECS.pop(name, None)
        if spec is None:
            raise UnsupportedConfigError(f"unknown cell type {name!r}; registered: {sorted(_SPECS)}")
        for layout in spec.layouts:
            layouts.LAYOUTS.pop(layout.name, None)
        for key in [k for k in _CLASSES if k[0] == name]:
            del _CLASSES[key]


def get(name: str) -> CellSpec:
    """The spec registered as ``name`` (``"LSTMCell"``); :class:`UnsupportedConfigError` if none."""
    spec = _SPECS.get(name)
    if spec is None:
        raise UnsupportedConfigError(f"unknown cell type {name!r}; registered: {sorted(_SPECS)}")
    return spec


def names() -> list[str]:
    """Every registered cell type, in registration order."""
    return list(_SPECS)


def class_by_name(module: str, name: str, make: Callable[[CellSpec], type] | None) -> type:
    """What a backend module's ``__getattr__`` gives for ``name``: the class of the registered
    cell type ``name``, made by ``make`` (the backend's ``cell_class``).

    :meth:`CellSpec.class_over` names its classes ``<module>.<spec name>``; pickle (and
    ``torch.save``, ``copy``, multiprocessing) finds a class by exactly that lookup, so every
    registered type, built-in or not (``MGUCell``), pickles on every backend. In another process
    the type must be registered before unpickling (the module that calls :func:`register`
    imported), as for any class pickle must find: a name that looks like a cell type's
    (``...Cell``) and is not registered raises :class:`UnsupportedConfigError` saying so (pickle
    would replace an ``AttributeError``'s message with its own); other names ``AttributeError``.
    """
    spec = _SPECS.get(name)
    if spec is not None and make is not None:
        return make(spec)
    if make is not None and name.endswith("Cell") and not name.startswith("_"):
        raise UnsupportedConfigError(
            f"{module}.{name}: no cell type {name!r} is registered in this process (registered: "
            f"{sorted(_SPECS)}); a registered type's class is found here by name, so to unpickle or "
            "load an object of it, import the module that calls cells.register() for it first"
        )
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


def spec_of(cell: Any) -> CellSpec:
    """The spec of a cell made by this library."""
    return get(cell.cell_kind)
