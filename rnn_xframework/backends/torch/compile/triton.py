"""``xf.compile(rnn, "triton")``: a torch RNN stack run by the Triton kernels of
:mod:`~rnn_xframework.kernels.triton.persistent`, forward and backward through time.

Per layer: the input projection ``xp = x W_ih^T + b`` for the whole sequence is one GEMM (torch,
differentiable); the recurrence is one persistent kernel launch (:class:`LayerFunction`, a
``torch.autograd.Function``), whose backward is one more launch followed by ``dW_hh`` and
``db_hh`` as whole-sequence GEMMs. Masked calls: :mod:`.triton_masked`.

Supported: SimpleRNN (tanh, relu), LSTM and GRU (``reset_after=True``) cells in any mix, float32
and float64 (exact products, no TF32), any ``units``: a layer whose recurrent weights fit one
program's registers (:data:`MAX_WEIGHT_ELEMENTS`) runs persistent, a wider one runs the
column-split step kernels of :mod:`~rnn_xframework.kernels.triton.split`. Anything else raises
:class:`~rnn_xframework.errors.UnsupportedConfigError` naming what is unsupported (``auto``
picks another method there: :func:`supports`). Tensors must be on CUDA, or on the CPU with
``TRITON_INTERPRET=1`` set (Triton's interpreter: slow, for tests).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnn_xframework import frameworks
from rnn_xframework.backends.torch import kinds
from rnn_xframework.backends.torch.compile import script_loops
from rnn_xframework.backends.torch.compile.compiled_module import CompiledRNN
from rnn_xframework.compiled import check_built
from rnn_xframework.errors import BackendUnavailableError, UnsupportedConfigError

DTYPES = (torch.float32, torch.float64)
MAX_WEIGHT_ELEMENTS = 16384
"""Largest ``G * UP * UP`` (recurrent weight tile elements, ``UP`` = units padded to a power of
two, at least 16; float64 counts twice) one program keeps in registers: 64 KiB (a float32
SimpleRNN of 128 units, an LSTM or GRU of 64). Not tuned on a GPU yet (docs/cuda.md)."""
WIDE_WARPS = 8
"""``num_warps`` of a persistent program holding more than half of :data:`MAX_WEIGHT_ELEMENTS`
(fewer registers per thread); 4 otherwise. Untuned."""
BLOCK_B = 16
"""Batch rows per program (``tl.dot`` needs at least 16)."""
SPLIT_BLOCK_N = 32
"""Units per program in the column-split kernels (:mod:`~rnn_xframework.kernels.triton.split`)."""
SPLIT_BLOCK_K = 32
"""Width of the ``h_{t-1}`` / ``W_hh`` slices the column-split forward multiplies at a time."""


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def kernel_function(name: str) -> Any:
    """The plain Python function of kernel ``name`` (``"forward"``, ``"forward_step"``, ...),
    before :func:`_kernel` wraps it for a device."""
    from rnn_xframework.kernels.triton import persistent, split, two_layer

    return {**persistent.KERNELS, **split.KERNELS, **two_layer.KERNELS}[name]


@functools.cache
def _kernel(name: str, interpret: bool) -> Any:
    fn = kernel_function(name)
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(fn)
    import triton

    return triton.jit(fn)


def _warps(meta: dict[str, Any], element_size: int) -> int:
    from rnn_xframework.kernels.triton.common import GATES

    if "UP" in meta:
        squares = meta["UP"] ** 2
    elif "UP0" in meta:
        squares = meta["UP0"] ** 2 + meta["UP0"] * meta["UP1"] + meta["UP1"] ** 2
    else:
        return 4
    held = GATES[meta["CELL"]] * squares * element_size // 4
    return WIDE_WARPS if 2 * held > MAX_WEIGHT_ELEMENTS else 4


def launch_options(meta: dict[str, Any], like: Tensor) -> dict[str, Any]:
    """The compile options of a CUDA launch of a kernel with constexprs ``meta`` on tensors like
    ``like`` (``num_warps``); :mod:`~rnn_xframework.bench.kernel_resources` compiles with them."""
    return {"num_warps": _warps(meta, like.element_size())}


def _launch(name: str, like: Tensor, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    if like.device.type == "cuda":
        with torch.cuda.device(like.device):
            _kernel(name, False)[grid](*args, **meta, **launch_options(meta, like))
    else:
        _kernel(name, True)[grid](*args, **meta)


def check_tensor(x: Tensor) -> None:
    """Raise :class:`UnsupportedConfigError` where the kernels cannot run on ``x``."""
    if x.dtype not in DTYPES:
        raise UnsupportedConfigError(
            f"compile 'triton': the kernels compute in float32 or float64 exactly, got {x.dtype}; "
            "use a float32/float64 RNN, or xf.compile(rnn, 'cudagraph')"
        )
    if x.device.type != "cuda" and not (x.device.type == "cpu" and _interpreting()):
        raise UnsupportedConfigError(
            f"compile 'triton': the kernels run on CUDA tensors, got a tensor on {x.device}; "
            "move the RNN and inputs to 'cuda', or set TRITON_INTERPRET=1 to run them on the CPU "
            "in Triton's interpreter (slow: for tests)"
        )


class LayerFunction(torch.autograd.Function):
    """``apply(xp, h0, c0, w_hh, b_hh, cell, relu, save, split, lengths) -> (out, h_last, c_last)``.

    ``xp [T, B, G*U]`` (time-major view, unit stride last), ``h0, c0 [B, U]`` (``c0`` LSTM only,
    else ``None``), ``w_hh [G*U, U]``, ``b_hh [G*U]`` (GRU only, else ``None``); ``cell`` a
    kernel code (the type's ``triton`` in :data:`~rnn_xframework.backends.torch.kinds.KINDS`).
    ``out [T, B, U]`` contiguous; ``c_last`` is an empty tensor except for LSTM. ``save``: keep what
    the backward needs; ``split``: run the column-split step kernels instead of the persistent one;
    ``lengths``: ``None``, or ``int32 [B]`` on ``xp``'s device, a right-padded batch (row ``b`` real
    for ``t < lengths[b]``, its state held after; persistent kernels only)."""

    @staticmethod
    def forward(
        ctx: Any,
        xp: Tensor,
        h0: Tensor,
        c0: Tensor | None,
        w_hh: Tensor,
        b_hh: Tensor | None,
        cell: int,
        relu: bool,
        save: bool,
        split: bool,
        lengths: Tensor | None = None,
    ) -> Any:
        from rnn_xframework.kernels.triton.common import GATES, SAVED

        steps, batch, units = xp.shape[0], xp.shape[1], w_hh.shape[1]
        lstm = cell == 1
        w = w_hh.contiguous()
        h0 = h0.contiguous()
        c0 = c0.contiguous() if c0 is not None else h0
        out = xp.new_empty(steps, batch, units)
        h_last = xp.new_empty(batch, units)
        c_last = xp.new_empty(batch, units) if lstm else xp.new_empty(0)
        cs = xp.new_empty(steps, batch, units) if (save or split) and lstm else out
        gs = xp.new_empty(steps, batch, SAVED[cell] * units) if save and SAVED[cell] else out
        bh = b_hh.contiguous() if b_hh is not None else w
        if split:
            grid = (triton_cdiv(batch, BLOCK_B), triton_cdiv(units, SPLIT_BLOCK_N))
            for t in range(steps):
                h_prev, c_prev = (h0, c0) if t == 0 else (out[t - 1], cs[t - 1])
                _launch(
                    "forward_step", xp, grid, xp[t], xp.stride(1), w, bh, h_prev, c_prev, out[t], cs[t], gs[t],
                    batch, units, CELL=cell, RELU=relu, SAVE=save, BLOCK_B=BLOCK_B, BLOCK_N=SPLIT_BLOCK_N,
                    BLOCK_K=SPLIT_BLOCK_K,
                )  # fmt: skip
            h_last.copy_(out[-1])
            if lstm:
                c_last.copy_(cs[-1])
        else:
            grid = (triton_cdiv(batch, BLOCK_B),)
            _launch(
                "forward", xp, grid, xp, xp.stride(0), xp.stride(1), w, bh, h0, c0, out, cs, gs, h_last,
                c_last if lstm else h_last, lengths if lengths is not None else h0, steps, batch, units,
                CELL=cell, RELU=relu, SAVE=save, BLOCK_B=BLOCK_B, UP=_pow2(units), MASKED=lengths is not None,
            )  # fmt: skip
        if save:
            ctx.cell, ctx.relu, ctx.gates, ctx.split = cell, relu, GATES[cell], split
            ctx.has_b_hh, ctx.lengths = b_hh is not None, lengths
            ctx.save_for_backward(w, h0, c0, out, cs, gs)
        return out, h_last, c_last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor | None, d_h: Tensor | None, d_c: Tensor | None) -> Any:
        w, h0, c0, out, cs, gs = ctx.saved_tensors
        steps, batch, units = out.shape
        g = ctx.gates
        lstm, gru = ctx.cell == 1, ctx.cell == 2
        d_out = torch.zeros_like(out) if d_out is None else d_out.contiguous()
        d_h = torch.zeros_like(h0) if d_h is None else d_h.contiguous()
        d_c = (torch.zeros_like(h0) if d_c is None or d_c.numel() == 0 else d_c.contiguous()) if lstm else d_h
        dxp = out.new_empty(steps, batch, g * units)
        dhx = out.new_empty(steps, batch, g * units) if gru else dxp
        dh0 = torch.empty_like(h0)
        dc0 = torch.empty_like(h0) if lstm else dh0
        if ctx.split:
            dh0, dc0 = _split_backward(ctx, d_out, d_h, d_c, w, h0, c0, out, cs, gs, dxp, dhx)
        else:
            grid = (triton_cdiv(batch, BLOCK_B),)
            _launch(
                "backward", out, grid, d_out, d_h, d_c, w, out, h0, c0, cs, gs, dxp, dhx, dh0, dc0,
                ctx.lengths if ctx.lengths is not None else h0, steps, batch, units,
                CELL=ctx.cell, G=g, RELU=ctx.relu, BLOCK_B=BLOCK_B, UP=_pow2(units), MASKED=ctx.lengths is not None,
            )  # fmt: skip
        needs = ctx.needs_input_grad  # xp, h0, c0, w_hh, b_hh, ...
        d_w = None
        if needs[3]:  # sum_t dhx_t^T h_{t-1}, h_{-1} = h0: two GEMMs over the whole sequence
            d_w = dhx[0].t().mm(h0)
            if steps > 1:
                d_w.addmm_(dhx[1:].reshape(-1, g * units).t(), out[:-1].reshape(-1, units))
        d_b = dhx.sum((0, 1)) if ctx.has_b_hh and needs[4] else None
        return dxp, dh0, (dc0 if lstm else None), d_w, d_b, None, None, None, None, None


def _split_backward(
    ctx: Any,
    d_out: Tensor,
    d_h: Tensor,
    d_c: Tensor,
    w: Tensor,
    h0: Tensor,
    c0: Tensor,
    out: Tensor,
    cs: Tensor,
    gs: Tensor,
    dxp: Tensor,
    dhx: Tensor,
) -> tuple[Tensor, Tensor]:
    """The column-split backward, step by step in reverse: the elementwise kernel, then the
    carry ``dL/dh_{t-1} = dhx_t W_hh (+ dL/dh_t z)`` as one product. Returns ``(dh0, dc0)``."""
    steps, batch, units = out.shape
    lstm, gru = ctx.cell == 1, ctx.cell == 2
    grid = (triton_cdiv(batch, BLOCK_B), triton_cdiv(units, SPLIT_BLOCK_N))
    carry, dc = d_h, d_c
    direct = torch.empty_like(h0) if gru else carry  # written by GRU only
    for t in range(steps - 1, -1, -1):
        dc_prev = torch.empty_like(h0) if lstm else carry  # written by LSTM only
        dh = d_out[t] + carry
        h_prev, c_prev = (h0, c0) if t == 0 else (out[t - 1], cs[t - 1])
        _launch(
            "backward_step", out, grid, dh, dc, out[t], h_prev, cs[t], c_prev, gs[t], dxp[t], dhx[t], dc_prev,
            direct, batch, units, CELL=ctx.cell, G=ctx.gates, RELU=ctx.relu, BLOCK_B=BLOCK_B, BLOCK_N=SPLIT_BLOCK_N,
        )  # fmt: skip
        carry = torch.addmm(direct, dhx[t], w) if gru else torch.mm(dhx[t], w)
        dc = dc_prev
    return carry, (dc if lstm else carry)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _layer_plan(cell: Any) -> tuple[int, bool, bool]:
    """``(kernel code, relu, split)`` for a built torch cell of this library (``split``: too wide
    for one program, run by :mod:`~rnn_xframework.kernels.triton.split`), or
    :class:`UnsupportedConfigError` naming what the kernels do not cover."""
    from rnn_xframework.kernels.triton.common import GATES

    kind, row = cell.cell_kind, kinds.get(cell.cell_kind)
    if row is None:
        supported = sorted(k for k, r in kinds.KINDS.items() if r.triton is not None)
        raise UnsupportedConfigError(f"compile 'triton': no kernel for {kind}; supported: {supported}")
    relu = row.nonlinearity and cell.activation == "relu"
    dtype = cell.cell.weight_hh.dtype
    if dtype not in DTYPES:
        raise UnsupportedConfigError(
            f"compile 'triton': the kernels compute in float32 or float64 exactly, got a {kind} in {dtype}; "
            "use a float32/float64 RNN"
        )
    code = row.triton
    up = _pow2(cell.units)
    scale = 2 if dtype == torch.float64 else 1  # float64 takes twice the registers
    return code, relu, GATES[code] * up * up * scale > MAX_WEIGHT_ELEMENTS


def supports(rnn: Any) -> bool:
    """Whether every cell of ``rnn`` has a kernel here (what ``auto`` asks before choosing it)."""
    try:
        for c in rnn.cells:
            _layer_plan(c)
    except UnsupportedConfigError:
        return False
    return frameworks.triton_installed()


def _biases(c: Any, code: int) -> tuple[Tensor | None, Tensor | None]:
    """``(input-side bias, b_hh kept inside the kernel)`` of a native cell: GRU keeps ``b_hh``
    inside (the reset gate multiplies ``h W_hh^T + b_hh``); the others fold it into the input side."""
    if code == 2:
        return c.bias_ih, (c.bias_hh if c.bias_hh is not None else c.weight_hh.new_zeros(c.weight_hh.shape[0]))
    return script_loops._bias_sum(c.bias_ih, c.bias_hh), None


def fits_two_layer(plans: list[tuple[int, bool, bool]], cells: list[Any]) -> bool:
    """Whether a stack runs inference in one launch (:mod:`~rnn_xframework.kernels.triton.two_layer`):
    two layers of one cell type whose three weight sets fit :data:`MAX_WEIGHT_ELEMENTS`."""
    from rnn_xframework.kernels.triton.common import GATES

    if len(plans) != 2 or plans[0][0] != plans[1][0]:
        return False
    up0, up1 = _pow2(cells[0].units), _pow2(cells[1].units)
    scale = 2 if cells[0].cell.weight_hh.dtype == torch.float64 else 1
    return GATES[plans[0][0]] * (up0 * up0 + up0 * up1 + up1 * up1) * scale <= MAX_WEIGHT_ELEMENTS


class StackRunner:
    """``(x [batch, time, in], states) -> (y, states)`` for a built torch ``RNN``: without
    autograd a small two-layer stack in one launch (:func:`fits_two_layer`), else one kernel launch
    per layer (and one per layer backward)."""

    def __init__(self, rnn: Any) -> None:
        self.rnn = rnn
        self.plans = [_layer_plan(c) for c in rnn.cells]
        self.two_layer = fits_two_layer(self.plans, list(rnn.cells))

    def __call__(
        self, x: Tensor, states: list[list[Tensor]], lengths: Tensor | None = None
    ) -> tuple[Tensor, list[list[Tensor]]]:
        """``lengths``: :class:`LayerFunction`'s (a right-padded batch; every layer persistent)."""
        rnn = self.rnn
        self.check(x)
        save = torch.is_grad_enabled()
        seq = x.flip(1) if rnn.go_backwards else x
        batch, steps = seq.shape[0], seq.shape[1]
        # the first layer reads the batch-first input; xp is then seen time-major (a view)
        inp = seq.reshape(batch * steps, seq.shape[2])
        if self.two_layer and not save and lengths is None:
            out, ends = self._two_layer(inp, batch, steps, states)
            return (out.transpose(0, 1) if rnn.return_sequences else out[-1]), ends
        time_major = False
        ends: list[list[Tensor]] = []
        out = seq
        for wrapper, (code, relu, split), state in zip(rnn.cells, self.plans, states, strict=True):
            c = wrapper.cell
            bias, b_hh = _biases(c, code)
            xp = torch.mm(inp, c.weight_ih.t()) if bias is None else torch.addmm(bias, inp, c.weight_ih.t())
            g = c.weight_ih.shape[0]
            xp = xp.view(steps, batch, g) if time_major else xp.view(batch, steps, g).transpose(0, 1)
            out, h_last, c_last = LayerFunction.apply(
                xp, state[0], state[1] if code == 1 else None, c.weight_hh, b_hh, code, relu, save, split, lengths
            )
            ends.append([h_last, c_last] if code == 1 else [h_last])
            inp = out.view(steps * batch, out.shape[2])
            time_major = True
        y = out.transpose(0, 1) if rnn.return_sequences else out[-1]
        return y, ends

    @staticmethod
    def check(x: Tensor) -> None:  # check_tensor, looked up at each call
        check_tensor(x)

    def _two_layer(
        self, inp: Tensor, batch: int, steps: int, states: list[list[Tensor]]
    ) -> tuple[Tensor, list[list[Tensor]]]:
        c0, c1 = (w.cell for w in self.rnn.cells)
        code = self.plans[0][0]
        lstm = code == 1
        bias0, bhh0 = _biases(c0, code)
        bias1, bhh1 = _biases(c1, code)
        g0, g1 = c0.weight_ih.shape[0], c1.weight_ih.shape[0]
        xp = torch.mm(inp, c0.weight_ih.t()) if bias0 is None else torch.addmm(bias0, inp, c0.weight_ih.t())
        xp = xp.view(batch, steps, g0).transpose(0, 1)
        u0, u1 = c0.weight_hh.shape[1], c1.weight_hh.shape[1]
        out = xp.new_empty(steps, batch, u1)
        ends = [[xp.new_empty(batch, u0)], [xp.new_empty(batch, u1)]]
        if lstm:
            ends[0].append(xp.new_empty(batch, u0))
            ends[1].append(xp.new_empty(batch, u1))
        h00, h01 = states[0][0].contiguous(), states[1][0].contiguous()
        c00 = states[0][1].contiguous() if lstm else h00
        c01 = states[1][1].contiguous() if lstm else h01
        b1 = bias1 if bias1 is not None else xp.new_zeros(g1)
        _launch(
            "stack2_forward", xp, (triton_cdiv(batch, BLOCK_B),), xp, xp.stride(0), xp.stride(1),
            c0.weight_hh.contiguous(), c1.weight_ih.contiguous(), c1.weight_hh.contiguous(), b1,
            bhh0 if bhh0 is not None else b1, bhh1 if bhh1 is not None else b1, h00, c00, h01, c01, out,
            ends[0][0], ends[0][-1], ends[1][0], ends[1][-1], steps, batch, u0, u1,
            CELL=code, RELU0=self.plans[0][1], RELU1=self.plans[1][1], BLOCK_B=BLOCK_B, UP0=_pow2(u0), UP1=_pow2(u1),
        )  # fmt: skip
        return out, ends


def compile_rnn(rnn: Any) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch.compile.compiled_module.CompiledRNN` whose loop is
    :class:`StackRunner` (inference and training alike); masked calls and dropout in training:
    :class:`~rnn_xframework.backends.torch.compile.triton_masked.TritonMaskedLoop`."""
    frameworks.check_torch_order("xf.compile(rnn, 'triton')")
    if not frameworks.triton_installed():
        raise BackendUnavailableError(
            "compile 'triton' needs the triton package (CUDA builds of torch include it); install it with: "
            'pip install "rnn_xframework[triton]"'
        )
    check_built(rnn)
    from rnn_xframework.backends.torch.compile import torchscript, triton_masked

    runner = StackRunner(rnn)
    masked = triton_masked.TritonMaskedLoop(runner, torchscript.masked(rnn), bool(rnn.zero_output_for_mask))
    return CompiledRNN(rnn, runner, "triton", masked=masked)
