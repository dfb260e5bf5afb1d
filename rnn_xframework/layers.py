"""Keras-named entry points: ``SimpleRNNCell``, ``LSTMCell``, ``GRUCell``, ``StackedRNNCells``,
``RNN``, and the one-layer sequence layers ``SimpleRNN``, ``LSTM``, ``GRU``.

Each name is called like the Keras class and returns the chosen backend's native object: a
``torch.nn.Module`` for ``backend="torch"``, a Keras layer for ``backend="tensorflow"`` (alias
``"tf"``), a plain Python object for ``backend="numpy"``. ``isinstance(obj, layers.SimpleRNNCell)``
holds for all three.

Example::

    from rnn_xframework import layers
    cell = layers.SimpleRNNCell(64, backend="torch")
    h0 = cell.get_initial_state(batch_size=4)      # [zeros(4, 64)]
    out, h1 = cell(xt, h0)                         # h1 is a list
"""

from __future__ import annotations

import inspect
from typing import Any

from rnn_xframework import backends, config, loops
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError


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


def make_cell(
    kind: str, *, backend: str | None = None, input_size: int | None = None, input_shape: Any = None, **kwargs: Any
) -> Any:
    """Build a cell of type ``kind`` (a Keras cell name) on ``backend`` (default: current);
    built at once for ``input_size`` features (or ``input_shape[-1]``) when given."""
    dim = input_features(input_size, input_shape)
    be = backends.get(config.resolve(backend))
    try:
        cls = be.cells[kind]
    except KeyError:
        raise UnsupportedConfigError(f"backend {be.name!r} has no {kind}; it has {sorted(be.cells)}") from None
    cell = cls(**kwargs)
    if dim is not None:
        cell.build((None, dim))
    return cell


class _Factory(type):
    """Calling the class builds the backend's native object; ``isinstance`` checks its kind."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._make(*args, **kwargs)  # type: ignore[attr-defined]

    def __instancecheck__(cls, obj: Any) -> bool:
        return cls._is(obj)  # type: ignore[attr-defined]


def _cell_factory(kind: str, doc: str, positional: tuple[str, ...] = ("activation", "use_bias")) -> type:
    def _make(cls: type, units: int, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
        if args:
            names = list(positional)
            if len(args) > len(names):
                raise TypeError(f"{kind}() takes at most {len(names) + 1} positional arguments")
            kwargs.update(zip(names, args, strict=False))
        return make_cell(kind, backend=backend, units=units, **kwargs)

    def _is(cls: type, obj: Any) -> bool:
        return getattr(obj, "cell_kind", None) == kind and isinstance(getattr(obj, "backend", None), str)

    def signature(
        units: int,
        activation: str | None = "tanh",
        use_bias: bool = True,
        *,
        backend: str | None = None,
        dtype: Any = None,
        device: Any = None,
        **kwargs: Any,
    ) -> Any: ...

    def gated_signature(
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        *,
        backend: str | None = None,
        dtype: Any = None,
        device: Any = None,
        **kwargs: Any,
    ) -> Any: ...

    return _Factory(
        kind,
        (),
        {
            "__doc__": doc,
            "__module__": __name__,
            "__signature__": inspect.signature(signature if len(positional) == 2 else gated_signature),
            "_make": classmethod(_make),
            "_is": classmethod(_is),
        },
    )


SimpleRNNCell = _cell_factory(
    "SimpleRNNCell",
    """A fully-connected recurrent cell (Keras ``SimpleRNNCell``, PyTorch ``nn.RNNCell``).

    .. math:: h_t = \\mathrm{activation}(x_t W + b + h_{t-1} U)

    with ``W = kernel`` ``(input_dim, units)``, ``U = recurrent_kernel`` ``(units, units)``,
    ``b = bias`` ``(units,)``.

    Args:
        units: size of the output and of the state.
        activation: ``"tanh"`` (default) or ``"relu"`` on every backend; others on TF/NumPy.
        use_bias: whether the cell has ``bias``.
        backend: ``"torch"``, ``"tensorflow"`` (``"tf"``) or ``"numpy"``; default
            :func:`rnn_xframework.get_backend`.
        dtype: ``"float32"`` (default) or ``"float64"``, or the framework's dtype object.
        device: torch device (``"cpu"``, ``"cuda"``, ...); for TensorFlow a device string
            such as ``"/CPU:0"``.
        input_size: number of input features (PyTorch's name), or ``input_shape`` (Keras's,
            the last entry counts): the cell is built at once. Without them it is built by
            ``build()``, the first call or, on torch, ``load_state_dict``; until then a torch
            cell holds lazy parameters (``torch.nn.UninitializedParameter``) that an optimizer
            made beforehand still trains.
        **kwargs: passed to the backend's class (e.g. Keras's ``name``, initializers; torch's
            ``train_recurrent_bias``).

    Shape:
        inputs ``[batch, input_dim]``, states ``[h]`` with ``h`` ``[batch, units]``;
        returns ``(output [batch, units], [h_new])``.

    Example::

        cell = SimpleRNNCell(64, backend="torch")
        out, state = cell(torch.randn(4, 100), cell.get_initial_state(4))
    """,
)


_COMMON_ARGS = """
        use_bias: whether the cell has ``bias``.
        dropout: fraction of the inputs to drop (Keras semantics: one inverted mask per
            sequence, only with ``training=True``; see :mod:`rnn_xframework.dropout`).
        recurrent_dropout: fraction of the recurrent state to drop, likewise.
        backend: ``"torch"``, ``"tensorflow"`` (``"tf"``) or ``"numpy"``; default
            :func:`rnn_xframework.get_backend`.
        dtype: ``"float32"`` (default) or ``"float64"``, or the framework's dtype object.
        device: torch device (``"cpu"``, ``"cuda"``, ...); for TensorFlow a device string.
        input_size, input_shape: the input features up front (see ``SimpleRNNCell``).
        **kwargs: passed to the backend's class (Keras's initializers and ``name``; torch's
            ``train_recurrent_bias`` and ``seed``; NumPy's ``seed``)."""

LSTMCell = _cell_factory(
    "LSTMCell",
    """A long short-term memory cell (Keras ``LSTMCell``, PyTorch ``nn.LSTMCell``).

    .. math::

        i &= \\sigma(x W_i + h U_i + b_i), \\quad f = \\sigma(x W_f + h U_f + b_f),
        \\quad o = \\sigma(x W_o + h U_o + b_o) \\\\
        c' &= f \\odot c + i \\odot \\tanh(x W_c + h U_c + b_c), \\quad h' = o \\odot \\tanh(c')

    with ``W = kernel`` ``(input_dim, 4*units)``, ``U = recurrent_kernel`` ``(units, 4*units)``,
    ``b = bias`` ``(4*units,)``, gate blocks in the order ``i, f, c, o`` (PyTorch's too).

    Args:
        units: size of the output and of each state.
        activation: ``"tanh"`` (default; the only one on torch); others on TF/NumPy.
        recurrent_activation: ``"sigmoid"`` (default; the only one on torch).
        unit_forget_bias: start the forget-gate bias at one (default ``True``, as Keras).
"""
    + _COMMON_ARGS
    + """

    Shape:
        inputs ``[batch, input_dim]``, states ``[h, c]``, each ``[batch, units]`` (a bare tensor
        is an error); returns ``(h_new [batch, units], [h_new, c_new])``.

    Example::

        cell = LSTMCell(64, backend="torch")
        out, (h, c) = cell(torch.randn(4, 100), cell.get_initial_state(4))
    """,
    ("activation", "recurrent_activation", "use_bias"),
)

GRUCell = _cell_factory(
    "GRUCell",
    """A gated recurrent unit (Keras ``GRUCell``, PyTorch ``nn.GRUCell``).

    .. math::

        z &= \\sigma(x W_z + b_z + h U_z + b'_z), \\quad r = \\sigma(x W_r + b_r + h U_r + b'_r) \\\\
        \\tilde h &= \\tanh(x W_h + b_h + r \\odot (h U_h + b'_h)), \\quad h' = z \\odot h + (1 - z) \\odot \\tilde h

    with ``W = kernel`` ``(input_dim, 3*units)``, ``U = recurrent_kernel`` ``(units, 3*units)``,
    gate blocks ``z, r, h`` (PyTorch stores ``r, z, n``; conversions reorder them), and
    ``bias`` ``(2, 3*units)``: input row ``b``, recurrent row ``b'``.

    Args:
        units: size of the output and of the state.
        activation, recurrent_activation: ``"tanh"`` and ``"sigmoid"`` (the only ones on torch).
        reset_after: ``True`` (default, PyTorch's form). ``False`` applies the reset gate before
            the recurrent matmul, ``(r * h) U_h``, with a ``(3*units,)`` bias: TF/NumPy only.
"""
    + _COMMON_ARGS
    + """

    Shape:
        inputs ``[batch, input_dim]``, states ``[h]``; returns ``(h_new, [h_new])``.

    Example::

        cell = GRUCell(64, backend="tensorflow")
        out, (h,) = cell(x, cell.get_initial_state(4))
    """,
    ("activation", "recurrent_activation", "use_bias"),
)


def _backend_of_cells(cells: Any, backend: str | None) -> str:
    first = cells[0] if isinstance(cells, (list, tuple)) and cells else cells
    found = getattr(first, "backend", None)
    if not isinstance(found, str):
        raise FrameworkMismatchError(
            f"expected cells made by rnn_xframework.layers, got {type(first).__module__}.{type(first).__name__}"
        )
    if backend is not None and backends.canonical_name(backend) != found:
        raise FrameworkMismatchError(
            f"backend={backend!r} was asked for but the cells run on {found!r}; "
            f"use xf.convert(cell, backend={backend!r}) first"
        )
    return found


class StackedRNNCells(metaclass=_Factory):
    """Several cells run as one: each time step goes through every layer in order.

    ``StackedRNNCells([cell0, cell1])`` returns the cells' backend's native stack, itself a
    :class:`~rnn_xframework.Cell`. Its state is a list of per-layer lists (``[[h0], [h1]]``),
    never unwrapped, even for one layer; ``get_weights()`` concatenates the cells' lists.

    When the first cell is built (``input_size=``), the stack builds the others at once.

    Shape: inputs ``[batch, input_dim]``; returns ``(output [batch, units of last cell],
    [[h0_new], [h1_new], ...])``.
    """

    @classmethod
    def _make(cls, cells: Any, *, backend: str | None = None) -> Any:
        name = _backend_of_cells(cells, backend)
        cells = loops.check_cells(cells, name)
        stack = backends.get(name).stack_class(cells)
        if stack.input_dim is not None:  # the first cell knows its input: build the layers above it too
            stack.build_cells((None, stack.input_dim))
        return stack

    @classmethod
    def _is(cls, obj: Any) -> bool:
        return hasattr(obj, "cells") and hasattr(obj, "step") and isinstance(getattr(obj, "backend", None), str)


class RNN(metaclass=_Factory):
    """Run a cell, a list of cells or a stack over a whole sequence (Keras ``RNN``).

    Args:
        cell: one cell, a list of cells (stacked), or a ``StackedRNNCells``.
        return_sequences: return every step's output ``[batch, time, units]`` instead of the
            last one ``[batch, units]``.
        return_state: also return the final states, one list per layer: ``(y, [[h0], [h1]])``.
        go_backwards: process the sequence in reverse (outputs come in processing order, as in
            Keras).
        order: ``"timestep"`` (each step through every layer) or ``"layer"`` (each layer over
            all steps, then the next). Same numbers either way.
        time_major: inputs ``[time, batch, features]`` and sequence outputs ``[time, batch,
            units]`` (PyTorch's ``batch_first=False``); ``mask`` stays ``[batch, time]``.
        input_size: number of input features (PyTorch's name): builds the RNN at once, so its
            parameters exist before the first call. Without it (and without ``input_shape``)
            the RNN is built by ``build()``, the first call or, on torch, ``load_state_dict``;
            until then a torch RNN holds lazy parameters (``torch.nn.UninitializedParameter``)
            that an optimizer made beforehand still trains.
        input_shape: Keras's form of the same, e.g. ``(time, features)``; the last entry counts.

    Call: ``rnn(x, initial_state=None, training=None)`` with ``x`` ``[batch, time, features]``
    (``[time, batch, features]`` with ``time_major``)
    and ``initial_state`` one list per layer (zeros by default).
    """

    @classmethod
    def _make(
        cls,
        cell: Any,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        order: str = "timestep",
        *,
        time_major: bool = False,
        backend: str | None = None,
        input_size: int | None = None,
        input_shape: Any = None,
    ) -> Any:
        loops.check_order(order)
        dim = input_features(input_size, input_shape)
        stack = cell if StackedRNNCells._is(cell) else StackedRNNCells(cell, backend=backend)
        _backend_of_cells(stack, backend)
        rnn = backends.get(stack.backend).rnn_class(
            stack,
            return_sequences=bool(return_sequences),
            return_state=bool(return_state),
            go_backwards=bool(go_backwards),
            order=order,
            time_major=bool(time_major),
        )
        if dim is not None or stack.input_dim is not None:
            rnn.build((None, None, dim if dim is not None else stack.input_dim))
        return rnn

    @classmethod
    def _is(cls, obj: Any) -> bool:
        return hasattr(obj, "order") and hasattr(obj, "run") and isinstance(getattr(obj, "backend", None), str)


def _layer_factory(name: str, cell: type) -> type:
    """A one-layer sequence layer: ``RNN(<cell>(units, ...), ...)`` under Keras's name."""

    def _make(
        cls: type,
        units: int,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        *,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        backend: str | None = None,
        dtype: Any = None,
        device: Any = None,
        input_size: int | None = None,
        input_shape: Any = None,
        **cell_kwargs: Any,
    ) -> Any:
        dim = input_features(input_size, input_shape)
        c = cell(
            units,
            backend=backend,
            dtype=dtype,
            device=device,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            **cell_kwargs,
        )
        return RNN(
            c, return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards, input_size=dim
        )

    def _is(cls: type, obj: Any) -> bool:
        cells = getattr(obj, "cells", None) if RNN._is(obj) else None
        return bool(cells) and len(cells) == 1 and isinstance(cells[0], cell)

    doc = f"""A whole-sequence ``{name}`` layer (Keras ``keras.layers.{name}``): ``RNN`` over one
    ``{cell.__name__}``.

    Args:
        units: size of the output and state.
        return_sequences: return ``[batch, time, units]`` instead of the last output.
        return_state: also return the final state, as every ``RNN`` does: one list per layer,
            here ``[[h]]`` (``[[h, c]]`` for LSTM), not Keras's flat ``output, h, c``.
        go_backwards: process the sequence in reverse.
        dropout, recurrent_dropout: Keras dropout (see ``{cell.__name__}``).
        backend, dtype, device: as for the cell.
        input_size, input_shape: the input features up front (PyTorch's and Keras's forms), for
            parameters that exist before the first call (see ``RNN``).
        **cell_kwargs: any other argument of ``{cell.__name__}`` (``activation``, ...).

    Call: ``layer(x, initial_state=None, training=None, mask=None)``; ``x`` ``[batch, time,
    features]``; ``mask`` ``[batch, time]`` (true for real steps): a masked step keeps the
    state and repeats the previous output (zeros before the first real step), as in Keras.
    Layers stack like ``keras.Sequential``: ``y = l2(l1(x))`` with ``return_sequences=True`` on
    ``l1``.
    """
    return _Factory(
        name, (), {"__doc__": doc, "__module__": __name__, "_make": classmethod(_make), "_is": classmethod(_is)}
    )


SimpleRNN = _layer_factory("SimpleRNN", SimpleRNNCell)
LSTM = _layer_factory("LSTM", LSTMCell)
GRU = _layer_factory("GRU", GRUCell)
