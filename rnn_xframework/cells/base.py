""":class:`SpecCell`: what a backend's cell class reads from its spec, written once (the NumPy
and torch cells mix it in; Keras cells keep Keras's own attributes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rnn_xframework import layouts
from rnn_xframework.cells.spec import CellSpec


class SpecCell:
    """The spec-driven attributes of a cell: its options as attributes (``units``,
    ``activation``, ...), ``config``, ``cell_kind``, ``gates``, its layout and state sizes."""

    spec: ClassVar[CellSpec]
    config: dict[str, Any]
    units: int

    def bind_config(self, units: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Bind a constructor call (see :meth:`CellSpec.bind`); leftover keywords are a ``TypeError``."""
        config = self.spec.bind(units, args, kwargs)
        if kwargs:
            raise TypeError(f"{self.spec.name}() got unexpected keyword arguments {sorted(kwargs)}")
        self.config = config
        self.__dict__.update(config)
        self.state_sizes = [self.units] * self.spec.n_states

    @property
    def cell_kind(self) -> str:
        return self.spec.name

    @property
    def gates(self) -> int:
        return self.spec.n_gates

    @property
    def layout_name(self) -> str:
        return self.spec.layout(self.config).name

    @property
    def layout(self) -> layouts.Layout:
        return layouts.get(self.layout_name)

    def portable_config(self) -> dict[str, Any]:
        """The arguments that rebuild this cell on any backend (``xf.convert``)."""
        return dict(self.config)

    @property
    def state_size(self) -> Any:
        """Keras's value: an int for single-state cells, a list otherwise."""
        return self.units if self.spec.n_states == 1 else list(self.state_sizes)
