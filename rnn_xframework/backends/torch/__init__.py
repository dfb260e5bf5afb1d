"""PyTorch backend: cells are ``torch.nn.Module``\\ s wrapping ``torch.nn.RNNCell`` / ``LSTMCell`` /
``GRUCell`` (a cell type without a PyTorch cell holds the same four parameters itself).

Every object here is a real module, so ``.to(device)``, ``.parameters()``, ``state_dict()``
and optimizers work as usual. Until the input size is known, a cell's parameters are lazy, as
``nn.LazyLinear``'s (:mod:`~rnn_xframework.backends.torch.params`; ``input_size=`` at
construction builds at once). They are initialized like Keras's (glorot-uniform kernel,
orthogonal recurrent kernel, zero bias; LSTM's forget-gate bias at one, ``unit_forget_bias``).

``nn.RNNCell`` and ``nn.LSTMCell`` have two biases; Keras has one. By default ``bias_hh`` stays at
zero and is frozen (``requires_grad=False``), so the cell trains exactly like the Keras cell with
the same weights; ``train_recurrent_bias=True`` trains it as PyTorch does (canonical ``bias`` is
then the sum). ``nn.GRUCell``'s two biases are Keras's two bias rows (``reset_after=True``): both
are set and both train.

Dropout masks follow Keras (see :mod:`rnn_xframework.dropout`): one mask per sequence. Whether
dropout applies follows PyTorch: ``training=None`` (the default) reads the module's mode,
``module.train()`` / ``module.eval()`` (a new module is in training mode, as every
``nn.Module``); an explicit ``training=True`` / ``False`` wins over the mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import is_lazy

from rnn_xframework import bidirectional, cells, orderings, registry
from rnn_xframework.backends.torch.cell import (
    TorchCell,
    _finish_loaded,  # noqa: F401 - pickles of cells made before it moved name it here
    available_devices,  # noqa: F401
    refuse_meta,
    resolve_device,  # noqa: F401
)


class StackedRNNCells(orderings.StackMixin, nn.Module):
    backend = "torch"
    cell_list = nn.ModuleList

    def forward(self, inputs: torch.Tensor, states: Any, training: bool | None = None) -> tuple[Any, list[Any]]:
        return self.step(inputs, states, self.training if training is None else training)


class RNN(orderings.RNNMixin, nn.Module):
    backend = "torch"

    def forward(
        self, inputs: torch.Tensor, initial_state: Any = None, training: bool | None = None, mask: Any = None
    ) -> Any:
        for cell in self.cells:
            if not is_lazy(cell.cell.weight_ih) and cell.cell.weight_ih.is_meta:
                refuse_meta(cell.cell.weight_ih, "a call")
        return self.run(inputs, initial_state, self.training if training is None else training, mask)

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles in this RNN's place, alone or inside a user's
        model: the same call, outputs and parameters in TorchScript
        (:class:`~rnn_xframework.backends.torch.compile.torchscript.ScriptedRNN`)."""
        from rnn_xframework.backends.torch.compile import torchscript

        return torchscript.scriptable(self)


class Bidirectional(bidirectional.BidirectionalMixin, nn.Module):
    """``Bidirectional`` as an ``nn.Module``: ``forward_layer`` and ``backward_layer`` are its
    submodules (``state_dict`` keys ``forward_layer.cell.cells.0.cell.weight_ih``, ...)."""

    backend = "torch"

    def forward(
        self, inputs: torch.Tensor, initial_state: Any = None, training: bool | None = None, mask: Any = None
    ) -> Any:
        return self.run(inputs, initial_state, self.training if training is None else training, mask)

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles in its place: both RNNs' scripted loops, flipped and
        merged in TorchScript (:class:`~rnn_xframework.backends.torch.compile.torchscript.ScriptedBidirectional`)."""
        from rnn_xframework.backends.torch.compile import torchscript

        return torchscript.scriptable_bidirectional(self)


class TorchBackend(registry.Backend, name="torch"):
    stack_class = StackedRNNCells
    rnn_class = RNN
    bidirectional_class = Bidirectional
    fused_bidirectional = "rnn_xframework.backends.torch.compile.cpu_bidirectional:FusedBidirectional"
    compile_methods = {
        "torchscript": "rnn_xframework.backends.torch.compile.torchscript:compile_rnn",
        "cpu": "rnn_xframework.backends.torch.compile.cpu:compile_rnn",
        "inductor": "rnn_xframework.backends.torch.compile.inductor:compile_rnn",
        "triton": "rnn_xframework.backends.torch.compile.triton:compile_rnn",
        "cudagraph": "rnn_xframework.backends.torch.compile.cudagraph:compile_rnn",
    }
    compiled_class = "rnn_xframework.backends.torch.compile.compiled_module:CompiledRNN"
    slow_to_compile = frozenset({"inductor"})
    cuda_only = frozenset({"triton", "cudagraph"})  # triton also runs on the CPU with TRITON_INTERPRET=1
    masked_methods = frozenset({"torchscript", "inductor", "cudagraph", "cpu", "triton"})
    distributions = ("torch",)
    forward_reference = 2
    gradient_reference = 1
    trainer = "rnn_xframework.parity.train_torch"
    cell_bases = (TorchCell,)

    def auto_method(self, rnn: Any) -> str:
        """``xf.compile(rnn, "auto")`` on torch: ``"cpu"`` for a CPU stack of LSTM / GRU cells
        where its kernel builds, else ``"torchscript"`` (CPU and CUDA).

        ``"auto"`` picks only measured, proven paths. The rule for ``"cpu"``: every cell is one
        the kernel computes exactly (:func:`~rnn_xframework.backends.torch.compile.cpu.supports_cell`:
        a cell type on ``nn.LSTMCell`` / ``nn.GRUCell``, either GRU form;
        :func:`~rnn_xframework.backends.torch.compile.cpu.auto_picks`), the cells are on the CPU,
        and the C kernel builds here (a compiler and PyTorch's BLAS; built once per machine). It
        accepts everything ``"torchscript"`` accepts for those stacks (float32 and float64, any
        sizes, autograd), so ``"auto"`` refuses nothing new; measured against ``nn.LSTM`` /
        ``nn.GRU`` in docs/performance.md. A SimpleRNN stack (or a mix) keeps ``"torchscript"``:
        the kernel computes SimpleRNN layers too (``xf.compile(rnn, "cpu")`` by name), faster at
        W1, at parity at W2 (measured there).

        On CUDA the Triton kernels (``"triton"``) and graph replay (``"cudagraph"``) have never
        run on a GPU in this project (nothing under ``benchmarks/results/`` measures them): they
        stay reachable by name, and ``auto`` changes to them only with GPU results committed there
        (docs/cuda.md).

        CPU, measured on a 2-core AVX-512 CPU (docs/performance.md): for SimpleRNN stacks the
        scripted fast loop is the fastest torch path at every measured size, forward (without
        autograd a SimpleRNN stack runs ``wavefront`` or ``time_major``, chosen per call by size)
        and forward+backward (:mod:`~rnn_xframework.backends.torch.compile.bptt`). It compiles in
        well under a second for any shape, where inductor takes tens of seconds per shape.
        """
        from rnn_xframework.backends.torch.compile import cpu, cpu_build

        on_cpu = all(p.device.type == "cpu" for p in rnn.parameters())
        if on_cpu and rnn.cells and all(cpu.auto_picks(c) for c in rnn.cells) and cpu_build.available():
            return "cpu"
        return "torchscript"

    def is_native(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).rsplit(".", 1)[-1]

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def from_numpy(self, a: Any, device: Any = None) -> torch.Tensor:
        return torch.from_numpy(np.array(a)).to(device or "cpu")

    def unstack(self, x: Any) -> list[Any]:
        return list(x.unbind(1))

    def stack(self, xs: list[Any]) -> Any:
        return torch.stack(xs, 1)

    def reverse_time(self, x: Any) -> Any:
        return x.flip(1)

    def where(self, cond: Any, a: Any, b: Any | None) -> Any:
        return torch.where(cond, a, torch.zeros_like(a) if b is None else b)

    def swap_batch_time(self, x: Any) -> Any:
        return x.transpose(0, 1)

    def concat(self, xs: list[Any]) -> Any:
        return torch.cat(xs, -1)

    def devices(self) -> list[str]:
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    @contextmanager
    def inference(self) -> Iterator[None]:
        """``torch.no_grad()``: the calls autograd does not record (where ``"cpu"`` packs a masked batch)."""
        with torch.no_grad():
            yield

    @contextmanager
    def strict_numerics(self) -> Iterator[list[str]]:
        """TF32 off for CUDA matmuls and cuDNN (true float32), restored on exit."""
        flags = [
            ("torch.backends.cuda.matmul.allow_tf32", torch.backends.cuda.matmul),
            ("torch.backends.cudnn.allow_tf32", torch.backends.cudnn),
        ]
        old = [owner.allow_tf32 for _, owner in flags]
        for _, owner in flags:
            owner.allow_tf32 = False
        try:
            yield [f"{name}: {was} -> False (restored after)" for (name, _), was in zip(flags, old, strict=True)]
        finally:
            for (_, owner), was in zip(flags, old, strict=True):
                owner.allow_tf32 = was


OPS = registry.get(TorchBackend.name)
SimpleRNNCell, LSTMCell, GRUCell = (OPS.cell_class(cells.get(k)) for k in ("SimpleRNNCell", "LSTMCell", "GRUCell"))


def __getattr__(name: str) -> type:
    """Any registered cell type's class by name (``MGUCell``), as pickle looks it up."""
    ops = globals().get("OPS")
    return cells.class_by_name(__name__, name, None if ops is None else ops.cell_class)
