"""``xf.compile(obj, method)``: a faster object with the same call and the same outputs.

Each backend class names its methods (:attr:`~rnn_xframework.registry.Backend.compile_methods`,
``{method: "module:function"}``) and its ``"auto"`` rule
(:meth:`~rnn_xframework.registry.Backend.auto_method`); the module is imported only when the
method is used. A new method is one entry in its backend's ``compile_methods`` (the rules and the
measurements behind them: docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from rnn_xframework import compiled, protocol, registry
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError


def methods() -> dict[str, str]:
    """Every compile method of the installed backends: ``{method: backend}`` (imports them)."""
    found: dict[str, str] = {}
    for name in registry.installed():
        try:
            backend = registry.get(name)
        except ImportError:
            continue
        found.update(dict.fromkeys(backend.compile_methods, name))
    return found


def _source_backend(obj: Any, method: str, needs: str | None = None) -> registry.Backend:
    """The backend of ``obj``, an uncompiled RNN made by this library (on ``needs`` if given)."""
    got = getattr(obj, "backend", None)
    ok = protocol.is_structure(obj, "rnn") and not hasattr(obj, "method") and (needs is None or got == needs)
    if not ok:
        wanted = f"a {needs} RNN" if needs else "an RNN"
        raise FrameworkMismatchError(
            f"compile method {method!r} takes {wanted} made by rnn_xframework.layers.RNN, got "
            f"{type(obj).__module__}.{type(obj).__name__} (backend {got!r})"
            + (f"; use xf.convert(obj, backend={needs!r}) first" if needs else "")
        )
    return registry.get(got)


def auto_method(obj: Any) -> str:
    """The method ``compile(obj, "auto")`` uses: the backend's measured choice for this RNN."""
    backend = _source_backend(obj, "auto")
    if not backend.compile_methods:
        have = list(dict.fromkeys(methods().values()))  # the registry's backends, not a list of names here
        fix = f"xf.convert(obj, backend=...) it first, to one of: {', '.join(have)}" if have else "none is installed"
        raise FrameworkMismatchError(
            f"compile method 'auto' takes an RNN on a backend with compile methods, got one on {backend.name!r}; " + fix
        )
    return backend.auto_method(obj)


def compile(obj: Any, method: str = "auto") -> Any:  # noqa: A001 - mirrors torch.compile
    """Compile an ``RNN`` made by :func:`rnn_xframework.layers.RNN`, or a ``Bidirectional``.

    Args:
        obj: the RNN to compile; it keeps its parameters, which the result shares. An unbuilt
            RNN compiles too, as ``torch.compile`` of a lazy module: the first call builds it
            for the inputs' features, then compiles (``fast.built`` says whether it has).
        method: a method of the RNN's backend, or ``"auto"``. torch: ``"torchscript"`` (the fast
            loop in ``torch.jit.script``), ``"cpu"`` (each LSTM / GRU layer's recurrence in one C
            call, CPU), ``"inductor"`` (``torch.compile``); TensorFlow:
            ``"tf.function"``, ``"xla"`` (``jit_compile=True``); ``"auto"``: the fastest
            measured method for the backend, device and sizes (:func:`auto_method`).

    Returns an object called like ``obj`` (``y = fast(x, initial_state=None, training=None,
    mask=None)``) with the same outputs (within float rounding: input projections are
    precomputed), ``mask=`` included (Keras's semantics, as the uncompiled RNN; ``"triton"`` has
    no masked kernel and refuses it), and dropout with ``training=True`` on every method but
    ``"triton"`` (the cells' own masks, drawn as for the uncompiled RNN); ``"triton"`` raises
    :class:`UnsupportedConfigError` for it.
    A ``Bidirectional`` compiles as its backend's ``Bidirectional`` of its two RNNs, each compiled
    with ``method`` (``fast.method``; ``fast.source`` is ``obj``).
    """
    if protocol.is_structure(obj, "bidirectional") and not hasattr(obj, "method"):
        if method == "auto":
            method = auto_method(obj.forward_layer)
        for layer in obj.layers:  # the checks of compiling each alone
            _source_backend(layer, method, _method_owner(layer, method).name)
        return compiled.recompile_bidirectional(obj, method)
    if method == "auto":
        method = auto_method(obj)
    _source_backend(obj, method, _method_owner(obj, method).name)
    return compiled.recompile(obj, method)


def _method_owner(obj: Any, method: str) -> registry.Backend:
    """The backend whose ``method`` compiles ``obj``: its own, or the one that has the method
    (:class:`FrameworkMismatchError` from :func:`_source_backend` if that is another)."""
    own = getattr(obj, "backend", None)
    backend = registry.get(own) if isinstance(own, str) and own in registry.names() else None
    if backend is None or method not in backend.compile_methods:
        owners = methods()
        if method not in owners:
            known = sorted([*owners, "auto"])
            raise UnsupportedConfigError(f"unknown compile method {method!r}; expected one of {known}")
        backend = _source_backend(obj, method, owners[method])
    return backend
