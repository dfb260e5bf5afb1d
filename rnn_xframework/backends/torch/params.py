"""The parameters a :class:`~rnn_xframework.backends.torch.TorchCell` holds: a native ``torch.nn``
cell (its row of :data:`~rnn_xframework.backends.torch.kinds.KINDS`) or :class:`SpecParameters` for a cell type without
one, lazy until the input size is known.

Until the input size is known, a cell's native ``nn.*Cell`` is a PyTorch lazy module
(:class:`torch.nn.modules.lazy.LazyModuleMixin`, as ``nn.LazyLinear``): its parameters are
:class:`torch.nn.UninitializedParameter`\\ s that an optimizer made before the first call already
holds, that ``.to()`` moves, and that ``load_state_dict``, ``build(input_shape)`` or the first call
fill in place (:func:`materialize`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from rnn_xframework.backends.torch import kinds


class SpecParameters(nn.Module):
    """The parameters of a cell type without a ``torch.nn`` cell, named and shaped like one:
    ``weight_ih (G*units, input_size)``, ``weight_hh (G*units, units)``, ``bias_ih``, ``bias_hh``
    ``(G*units,)`` (``None`` without bias)."""

    def __init__(self, input_size: int, hidden_size: int, gates: int, bias: bool, device: Any, dtype: Any) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size, **kw))
        for name in ("bias_ih", "bias_hh"):
            self.register_parameter(name, nn.Parameter(torch.zeros(gates * hidden_size, **kw)) if bias else None)


_LAZY: dict[type[nn.Module], type[nn.Module]] = {}


def _initialize_parameters(self: Any, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError("rnn_xframework builds its lazy cells itself; call the library cell, not .cell")


def lazy_class(native: type[nn.Module]) -> type[nn.Module]:
    """``Lazy<Name>``, the lazy form of the native cell class ``native`` (made once; pickle finds
    it in this module by name, :func:`__getattr__`)."""
    if native not in _LAZY:
        _LAZY[native] = type(
            f"Lazy{native.__name__}",
            (LazyModuleMixin, native),
            {"cls_to_become": native, "initialize_parameters": _initialize_parameters, "__module__": __name__},
        )
    return _LAZY[native]


def __getattr__(name: str) -> type[nn.Module]:
    """``LazyLSTMCell``, ``LazySpecParameters``, ...: the lazy classes by name, as pickle looks them up."""
    natives = {f"Lazy{row.cell.__name__}": row.cell for row in kinds.KINDS.values()}
    natives["LazySpecParameters"] = SpecParameters
    if name in natives:
        return lazy_class(natives[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lazy_kinds(module: nn.Module) -> dict[str, tuple[torch.device, torch.dtype]]:
    """The device and dtype of each :class:`~torch.nn.UninitializedParameter` of ``module``:
    PyTorch pickles one without them (it comes back float32 on the CPU), so a lazy cell keeps
    them in its pickled state (:func:`relazy`)."""
    return {n: (p.device, p.dtype) for n, p in module._parameters.items() if p is not None and is_lazy(p)}


def relazy(module: nn.Module, kinds: dict[str, tuple[torch.device, torch.dtype]]) -> None:
    """After unpickling: each uninitialized parameter of ``module`` on its device and dtype again."""
    for name, (device, dtype) in kinds.items():
        p = module._parameters[name]
        if p is not None and is_lazy(p):
            module._parameters[name] = nn.UninitializedParameter(
                requires_grad=p.requires_grad, device=device, dtype=dtype
            )


def make_lazy(module: nn.Module, device: Any, dtype: Any) -> nn.Module:
    """``module`` (a native cell made for 0 input features on the ``meta`` device) as a PyTorch
    lazy module, as ``nn.LazyLinear`` is made: every parameter an
    :class:`~torch.nn.UninitializedParameter` on ``device`` / ``dtype``, the class a
    ``Lazy<Name>`` (:class:`LazyModuleMixin` first) whose ``cls_to_become`` is the native class,
    and LazyModuleMixin's hooks (``load_state_dict`` fills the parameters from the checkpoint's
    shapes). :func:`materialize` / :func:`finish_lazy` make it the plain native module."""
    cls = lazy_class(type(module))
    for name, p in list(module._parameters.items()):
        if p is not None:
            module._parameters[name] = nn.UninitializedParameter(
                requires_grad=p.requires_grad, device=device, dtype=dtype
            )
    module.__class__ = cls
    # what LazyModuleMixin.__init__ registers
    module._load_hook = module._register_load_state_dict_pre_hook(module._lazy_load_hook)
    module._initialize_hook = module.register_forward_pre_hook(module._infer_parameters, with_kwargs=True)
    return module


def materialize(cell: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    """Fill a lazy native cell's parameters in place (same objects, on their device and dtype)."""
    with torch.no_grad():
        for name, p in cell._parameters.items():
            if p is not None and is_lazy(p):
                p.materialize(shapes[name])
    finish_lazy(cell)


def finish_lazy(cell: nn.Module) -> None:
    """A lazy native cell whose parameters are all filled becomes the plain native module."""
    if not isinstance(cell, LazyModuleMixin) or cell.has_uninitialized_params():
        return
    cell.input_size = cell.weight_ih.shape[1]
    cell._initialize_hook.remove()
    cell._load_hook.remove()
    del cell._initialize_hook, cell._load_hook
    cell.__class__ = cell.cls_to_become
