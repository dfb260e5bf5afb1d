"""Keras-named entry points: ``SimpleRNNCell``, ``LSTMCell``, ``GRUCell``, ``StackedRNNCells``,
``RNN``, the one-layer sequence layers ``SimpleRNN``, ``LSTM``, ``GRU``, and ``Bidirectional``.

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
from collections.abc import Sequence
from typing import Any

from rnn_xframework import bidirectional, cells, config, orderings, protocol, registry
from rnn_xframework.constructors import INPUT_SIZE_DOC, Factory, input_features, with_cls, with_input_size
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError
from rnn_xframework.protocol import Cell


def _built(cell: Any, dim: int | None) -> Any:
    if dim is not None:
        cell.build((None, dim))
    return cell


def make_cell(
    kind: str, *, backend: str | None = None, input_size: int | None = None, input_shape: Any = None, **kwargs: Any
) -> Any:
    """Build a cell of type ``kind`` (a registered cell type's Keras name, see
    :mod:`rnn_xframework.cells`) on ``backend`` (default: current); built at once for
    ``input_size`` features (or ``input_shape[-1]``) when given."""
    dim = input_features(input_size, input_shape)
    cls = registry.get(config.resolve(backend)).cell_class(cells.get(kind))
    return _built(cls(**kwargs), dim)


def cell_factory(kind: str) -> type:
    """The Keras-named constructor of a registered cell type: ``layers.LSTMCell(units, ...)``.

    Its signature is the spec's (:meth:`rnn_xframework.cells.CellSpec.signature`): ``units``, the
    activations, ``use_bias``, the type's options, ``dropout``, ``recurrent_dropout``, ``backend``,
    ``dtype``, ``device``, and ``**kwargs`` for a backend's own arguments (Keras's initializers and
    ``name``; torch's ``train_recurrent_bias``)."""
    spec = cells.get(kind)
    signature = with_input_size(spec.signature())

    def __new__(
        cls: type,
        units: int,
        *args: Any,
        backend: str | None = None,
        input_size: int | None = None,
        input_shape: Any = None,
        **kwargs: Any,
    ) -> Any:
        dim = input_features(input_size, input_shape)
        cls_ = registry.get(config.resolve(backend)).cell_class(cells.get(kind))
        return _built(cls_(units, *args, **kwargs), dim)

    __new__.__signature__ = with_cls(signature)  # type: ignore[attr-defined]

    def _is(cls: type, obj: Any) -> bool:
        return getattr(obj, "cell_kind", None) == kind and protocol.is_structure(obj, "cell")

    namespace = {
        "__doc__": (spec.doc or "") + INPUT_SIZE_DOC,
        "__module__": __name__,
        "__signature__": signature,
        "__new__": __new__,
        "_is": classmethod(_is),
    }
    return Factory(kind, (), namespace)


SimpleRNNCell = cell_factory("SimpleRNNCell")
LSTMCell = cell_factory("LSTMCell")
GRUCell = cell_factory("GRUCell")


_MADE: dict[str, tuple[Any, type]] = {}  # name -> (the spec it was made for, the constructor)


def __getattr__(name: str) -> Any:
    """``layers.<name>`` for a cell type registered after import (:func:`rnn_xframework.cells.register`):
    ``layers.MGUCell`` the cell, ``layers.MGU`` its one-layer sequence layer (Keras's naming,
    ``LSTMCell`` / ``LSTM``); made once per registered spec."""
    kind = name if name in cells.names() else f"{name}Cell"
    if kind not in cells.names() or name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    spec = cells.get(kind)
    made = _MADE.get(name)
    if made is None or made[0] is not spec:
        cell = cell_factory(kind)
        made = _MADE[name] = (spec, cell if name == kind else _layer_factory(name, cell))
    return made[1]


def _backend_of_cells(cells: Any, backend: str | None) -> str:
    first = cells[0] if isinstance(cells, (list, tuple)) and cells else cells
    found = getattr(first, "backend", None)
    if not isinstance(found, str):
        raise FrameworkMismatchError(
            f"expected cells made by rnn_xframework.layers, got {type(first).__module__}.{type(first).__name__}"
        )
    if backend is not None and registry.canonical_name(backend) != found:
        raise FrameworkMismatchError(
            f"backend={backend!r} was asked for but the cells run on {found!r}; "
            f"use xf.convert(cell, backend={backend!r}) first"
        )
    return found


class StackedRNNCells(metaclass=Factory):
    """Several cells run as one: each time step goes through every layer in order.

    ``StackedRNNCells([cell0, cell1])`` returns the cells' backend's native stack, itself a
    :class:`~rnn_xframework.Cell`. Its state is a list of per-layer lists (``[[h0], [h1]]``),
    never unwrapped, even for one layer; ``get_weights()`` concatenates the cells' lists.

    When the first cell is built (``input_size=``), the stack builds the others at once.

    Shape: inputs ``[batch, input_dim]``; returns ``(output [batch, units of last cell],
    [[h0_new], [h1_new], ...])``.
    """

    def __new__(cls, cells: Sequence[Cell], *, backend: str | None = None) -> Any:
        """``cells``: the layers in order, made on one backend; ``backend``: if given, must be theirs."""
        name = _backend_of_cells(cells, backend)
        cells = orderings.check_cells(cells, name)
        stack = registry.get(name).stack_class(cells)
        if stack.input_dim is not None:  # the first cell knows its input: build the layers above it too
            stack.build_cells((None, stack.input_dim))
        return stack

    @classmethod
    def _is(cls, obj: Any) -> bool:
        return protocol.is_structure(obj, "stack")


class RNN(metaclass=Factory):
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
        zero_output_for_mask: with a ``mask``, a masked step outputs zeros instead of repeating
            the previous output (Keras's option of the same name; the state is kept either way).

    Call: ``rnn(x, initial_state=None, training=None, mask=None)`` with ``x`` ``[batch, time, features]``
    (``[time, batch, features]`` with ``time_major``) and ``initial_state`` one list per layer
    (zeros by default).
    """

    def __new__(
        cls,
        cell: Cell | Sequence[Cell],
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        order: str = "timestep",
        *,
        time_major: bool = False,
        backend: str | None = None,
        input_size: int | None = None,
        input_shape: tuple[int | None, ...] | None = None,
        zero_output_for_mask: bool = False,
    ) -> Any:
        orderings.check_order(order)
        dim = input_features(input_size, input_shape)
        stack = cell if StackedRNNCells._is(cell) else StackedRNNCells(cell, backend=backend)
        _backend_of_cells(stack, backend)
        rnn = registry.get(stack.backend).rnn_class(
            stack,
            return_sequences=bool(return_sequences),
            return_state=bool(return_state),
            go_backwards=bool(go_backwards),
            order=order,
            time_major=bool(time_major),
            zero_output_for_mask=bool(zero_output_for_mask),
        )
        if dim is not None or stack.input_dim is not None:
            rnn.build((None, None, dim if dim is not None else stack.input_dim))
        return rnn

    @classmethod
    def _is(cls, obj: Any) -> bool:
        return protocol.is_structure(obj, "rnn")


def _layer_factory(name: str, cell: type) -> type:
    """A one-layer sequence layer: ``RNN(<cell>(units, ...), ...)`` under Keras's name."""

    def __new__(
        cls: type,
        units: int,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        *,
        zero_output_for_mask: bool = False,
        **cell_kwargs: Any,
    ) -> Any:
        c = cell(units, **cell_kwargs)
        return RNN(
            c,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            zero_output_for_mask=zero_output_for_mask,
        )

    # The signature shown: the layer's own arguments, then every argument of the cell after ``units``.
    own = list(inspect.signature(__new__, eval_str=True).parameters.values())[:-1]
    from_cell = list(inspect.signature(cell).parameters.values())[1:]
    shown = inspect.Signature(
        [
            *own[1:],
            *(
                p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is p.POSITIONAL_OR_KEYWORD else p
                for p in from_cell
            ),
        ],
        return_annotation=Any,
    )
    __new__.__signature__ = with_cls(shown)  # type: ignore[attr-defined]

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
        zero_output_for_mask: a masked step outputs zeros instead of repeating the previous
            output (Keras's option).
        **kwargs: the keyword arguments after these (``activation``, ``use_bias``,
            ``dropout``, ``recurrent_dropout``, ``backend``, ``dtype``, ``device``, ...) are
            ``{cell.__name__}``'s and mean what they mean there.

    Call: ``layer(x, initial_state=None, training=None, mask=None)`` (``training=None``: on torch
    the module's mode, ``.train()`` / ``.eval()``; elsewhere inference); ``x`` ``[batch, time,
    features]``; ``mask`` ``[batch, time]`` (true for real steps): a masked step keeps the
    state and repeats the previous output (zeros before the first real step), as in Keras.
    Layers stack like ``keras.Sequential``: ``y = l2(l1(x))`` with ``return_sequences=True`` on
    ``l1``.
    """
    namespace = {"__doc__": doc, "__module__": __name__, "__signature__": shown, "__new__": __new__}
    return Factory(name, (), {**namespace, "_is": classmethod(_is)})


SimpleRNN = _layer_factory("SimpleRNN", SimpleRNNCell)
LSTM = _layer_factory("LSTM", LSTMCell)
GRU = _layer_factory("GRU", GRUCell)


def wrap_bidirectional(forward_layer: Any, backward_layer: Any, merge_mode: Any = "concat") -> Any:
    """The backend's ``Bidirectional`` over these two RNNs taken as they are (no copy, weights
    kept): what ports and ``xf.convert`` build. :class:`Bidirectional` is the Keras-named
    constructor, which copies its layer as Keras does."""
    cls = registry.get(forward_layer.backend).bidirectional_class
    if cls is None:
        raise UnsupportedConfigError(f"backend {forward_layer.backend!r} has no Bidirectional")
    return cls(forward_layer, backward_layer, merge_mode=merge_mode)


class Bidirectional(metaclass=Factory):
    """Keras's ``Bidirectional`` wrapper: an RNN over the sequence and another over it backwards,
    their outputs merged (:mod:`rnn_xframework.bidirectional` has the exact rules).

    Args:
        layer: an ``RNN`` of this library (``layers.LSTM(...)``, ``layers.RNN(cells)``, any
            backend). As in Keras, the wrapper does not use it as it is: ``forward_layer`` is a
            new RNN of its configuration, and without ``backward_layer`` ``backward_layer`` is
            another with ``go_backwards=True``, both with new weights (built at once when
            ``layer`` is built or ``input_size`` is given).
        merge_mode: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"``, or ``None`` (a list
            ``[y, y_rev]``, both in time order).
        backward_layer: an RNN to use as the backward layer, as it is (Keras's rule); its
            ``go_backwards`` must differ from ``layer``'s and its ``return_sequences`` /
            ``return_state`` must be the same.
        weights: initial weights, the forward layer's then the backward layer's (canonical
            layout, as ``get_weights()`` returns them).
        input_size: the number of input features up front (PyTorch's name): builds both
            layers at once, so a torch Bidirectional has its parameters before the first call.
        input_shape: Keras's form of the same, e.g. ``(time, features)``; the last entry counts.

    Call: ``bi(x, initial_state=None, training=None, mask=None)``; ``x`` ``[batch, time,
    features]``; ``initial_state`` the forward layer's states then the backward layer's
    (``[[h_f, c_f], [h_b, c_b]]``, or Keras's flat ``[h_f, c_f, h_b, c_b]``); ``mask``
    ``[batch, time]``. Returns the merged output (``[batch, time, 2*units]`` for ``"concat"``
    with ``return_sequences``), and with ``return_state`` ``(output, states)``, the forward
    layer's states then the backward layer's, one list per layer (Keras returns the same
    tensors flat: ``[output, h_f, c_f, h_b, c_b]``). With ``return_sequences`` both layers get
    ``zero_output_for_mask=True`` (Keras forces it): masked steps output zeros.

    On torch it is an ``nn.Module`` (``training=None`` follows ``.train()`` / ``.eval()``,
    ``torch.jit.script`` works when built), on TensorFlow a serializable Keras layer, on NumPy
    the reference. ``xf.from_keras(keras.layers.Bidirectional(...))`` and ``xf.to_keras`` port
    it with its weights.

    Example::

        bi = layers.Bidirectional(layers.LSTM(16, return_sequences=True, backend="torch"), input_size=8)
        y = bi(torch.randn(4, 10, 8))   # [4, 10, 32]
    """

    def __new__(
        cls,
        layer: Any,
        merge_mode: str | None = "concat",
        backward_layer: Any = None,
        weights: Sequence[Any] | None = None,
        *,
        input_size: int | None = None,
        input_shape: tuple[int | None, ...] | None = None,
    ) -> Any:
        bidirectional.check_merge_mode(merge_mode)
        dim = input_features(input_size, input_shape)
        for name, given in (("layer", layer), ("backward_layer", backward_layer)):
            if given is None and name == "backward_layer":
                continue
            if not RNN._is(given) or hasattr(given, "method"):
                raise FrameworkMismatchError(
                    f"Bidirectional: {name} must be an (uncompiled) RNN made by rnn_xframework.layers "
                    f"(layers.LSTM(...), layers.RNN(cells), ...), got {type(given).__module__}.{type(given).__name__}"
                )
        forward = layer.fresh_copy(go_backwards=layer.go_backwards, prefix="forward_")
        if backward_layer is None:
            backward_layer = layer.fresh_copy(go_backwards=True, prefix="backward_")
        bi = wrap_bidirectional(forward, backward_layer, merge_mode)
        if dim is not None:
            bi.build((None, None, dim))
        elif backward_layer.cells[0].input_dim is not None and forward.cells[0].input_dim is None:
            bi.build((None, None, backward_layer.cells[0].input_dim))
        if weights is not None:
            bi.set_weights(weights)
        return bi

    @classmethod
    def _is(cls, obj: Any) -> bool:
        return protocol.is_structure(obj, "bidirectional")
