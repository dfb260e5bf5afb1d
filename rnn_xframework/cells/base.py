""":class:`SpecCell`: what a backend's cell class reads from its spec, written once. The NumPy
and torch cells mix in all of it; Keras cells, which keep Keras's own attributes, mix in
:class:`SpecNamed` only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from rnn_xframework import layouts, protocol
from rnn_xframework.cells.spec import CellSpec
from rnn_xframework.errors import InputShapeError, UnsupportedConfigError


class SpecNamed:
    """``cell_kind``, ``gates`` and the layout of a cell, read from its spec and its
    ``portable_config()``."""

    spec: ClassVar[CellSpec]

    def portable_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def cell_kind(self) -> str:
        return self.spec.name

    @property
    def gates(self) -> int:
        return self.spec.n_gates

    @property
    def layout_name(self) -> str:
        return self.spec.layout(self.portable_config()).name

    @property
    def layout(self) -> layouts.Layout:
        return layouts.get(self.layout_name)


class SpecCell(SpecNamed):
    """The spec-driven attributes of a cell: its options as attributes (``units``,
    ``activation``, ...), ``config``, and its state sizes, besides :class:`SpecNamed`'s."""

    config: dict[str, Any]
    units: int
    input_dim: int | None

    def bind_config(self, units: Any, args: Sequence[Any], kwargs: dict[str, Any], ops: Any) -> None:
        """Bind a constructor call (see :meth:`CellSpec.bind`); leftover keywords are a ``TypeError``.
        :meth:`check_config` may refuse the configuration, then an activation the backend's step
        ops (``ops.activation``) do not know is refused, naming the argument."""
        config = self.spec.bind(units, args, kwargs)
        if kwargs:
            raise TypeError(f"{self.spec.name}() got unexpected keyword arguments {sorted(kwargs)}")
        self.check_config(config)
        for key in self.spec.activations:
            try:
                ops.activation(config[key])
            except UnsupportedConfigError as e:
                raise UnsupportedConfigError(f"{self.spec.name}({key}={config[key]!r}): {e}") from None
        self.config = config
        self.__dict__.update(config)
        self.state_sizes = [self.units] * self.spec.n_states

    def check_config(self, config: dict[str, Any]) -> None:
        """Raise :class:`UnsupportedConfigError` for a configuration this backend cannot compute
        (none by default)."""

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Make the weights for ``input_shape[-1]`` features, once (:meth:`make_weights`), under
        :data:`~rnn_xframework.protocol.BUILD_LOCK`: a lazy build that several threads start at
        once runs once. A cell built for other features raises :class:`InputShapeError`."""
        dim = input_shape[-1]
        with protocol.BUILD_LOCK:
            if self.input_dim is not None:  # built before, or meanwhile by another thread
                if dim != self.input_dim:
                    raise InputShapeError(
                        f"{protocol.cell_name(self)} is built for {self.input_dim} features, got {dim}"
                    )
                return
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
                raise InputShapeError(
                    f"{protocol.cell_name(self)}: expected a positive number of features, got {dim!r}"
                )
            self.make_weights(int(dim))

    def make_weights(self, dim: int) -> None:
        """Create the weights for ``dim`` input features, initialized as Keras does (afterwards
        ``input_dim == dim``); called once, by :meth:`build`."""
        raise NotImplementedError

    def portable_config(self) -> dict[str, Any]:
        """The arguments that rebuild this cell on any backend (``xf.convert``)."""
        return dict(self.config)

    def backend_config(self) -> dict[str, Any]:
        """The backend's own constructor arguments (torch: ``seed``, ``device``, ...) that a copy on
        the same backend keeps, besides :meth:`portable_config` and the dtype."""
        return {}

    @property
    def state_size(self) -> Any:
        """Keras's value: an int for single-state cells, a list otherwise."""
        return self.units if self.spec.n_states == 1 else list(self.state_sizes)
