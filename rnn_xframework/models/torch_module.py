"""The live emitter: a :class:`~rnn_xframework.models.torch_code.Code` -> one ``torch.nn.Module``.

:class:`PortedModule` runs the very lines :mod:`~rnn_xframework.models.torch_source` writes to
``model.py``: its ``__init__`` executes the code's init lines (creating PyTorch's modules, or the
library's, as attributes), then loads the code's ``state_dict`` with PyTorch's strict checks;
its ``forward`` is the code's ``forward``, compiled once. It pickles (``torch.save(module)``,
``copy.deepcopy``) by its code text, and ``torch.export.export`` traces it like any module.
"""

from __future__ import annotations

import linecache
import types
from typing import Any

import torch
from torch import nn

from rnn_xframework.models import torch_ops
from rnn_xframework.models.torch_code import Code


def namespace(code: Code) -> dict[str, Any]:
    """What the code's lines refer to: torch, nn, F, typing names, the helpers, the library's layers."""
    import typing

    import torch.nn.functional as F

    ns: dict[str, Any] = {
        "torch": torch,
        "nn": nn,
        "F": F,
        **{n: getattr(typing, n) for n in ("List", "Optional", "Tuple")},
    }
    ns.update({f.__name__: f for f in torch_ops.HELPERS})
    if code.uses_library:
        from rnn_xframework import layers

        ns["layers"] = layers
    return ns


def _compile(text: str, name: str, ns: dict[str, Any]) -> Any:
    filename = f"<rnn_xframework port {name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)  # tracebacks show it
    local: dict[str, Any] = {}
    exec(compile(text, filename, "exec"), ns, local)
    return next(iter(local.values()))


class PortedModule(nn.Module):
    """A whole ported model as one ``torch.nn.Module``: ``module(*inputs)`` takes the model's
    inputs (positional, in the model's order, batch-major) and returns one tensor, or a list
    for several outputs. Its submodules are PyTorch's (or the library's) modules named after the
    Keras layers; ``state_dict()`` has their usual keys. ``reset_states()`` exists when a layer
    is stateful. Dropout and BatchNormalization follow ``module.train()`` / ``.eval()``."""

    def __init__(self, code: Code) -> None:
        super().__init__()
        self._port_name = code.name
        self._port_functions = code.functions()
        self._port_library = code.uses_library
        self._port_masks = code.masks
        self._bind(code)
        _compile(self._port_functions["init"], f"{code.name}.__init__", namespace(code))(self)
        state = {k: torch.from_numpy(v.copy()) for k, v in code.state.items()}
        self.load_state_dict(state, strict=True)

    def _bind(self, code: Code | None = None) -> None:
        ns = namespace(code or Code(self._port_name, [], uses_library=self._port_library))
        for name, text in self._port_functions.items():
            if name != "init":
                fn = _compile(text, f"{self._port_name}.{name}", ns)
                object.__setattr__(self, name, types.MethodType(fn, self))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._port_functions:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind()

    def extra_repr(self) -> str:
        return f"ported from Keras model {self._port_name!r}"

    def source(self) -> str:
        """``forward``'s code, as ``model.py`` has it."""
        return self._port_functions["forward"]


def build(code: Code) -> PortedModule:
    """The live module for ``code``."""
    return PortedModule(code)
