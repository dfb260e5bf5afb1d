"""The C loop's recurrences for :mod:`~rnn_xframework.backends.torch.compile.cpu`'s layers: one call of
``cpu_cells.c`` per layer and sequence (forward without a backward), and one ``torch.autograd.Function``
per cell type whose backward is the C loop's BPTT (once-differentiable); :func:`zero_past` for the masked
calls' outputs. Buffers are time-major and contiguous; ``xp [T, B, G*H]`` is the layer's input
projection (``cpu_cells.c`` documents each buffer)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnn_xframework.backends.torch.compile import cpu_build, cpu_scratch


def _p(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


Active = Tensor | None
"""``None`` (every row real at every step), or ``int32 [T]``: the number of leading rows real at
each step, non-increasing (a right-padded batch sorted longest first,
:mod:`~rnn_xframework.backends.torch.compile.cpu_masked`). The other rows take an identity step:
state held, output the held state (``cpu_cells.c``'s ``hold_rows``)."""

Lengths = Tensor | None
"""``None``, or ``int32 [B]``: each row's length, rows in any order (a right-padded batch, unsorted).
Every row is computed and the rows past their length take their held state back (``cpu_cells.c``'s
``hold_past``). Forward only: a call autograd records takes :data:`Active`."""


class Packed(NamedTuple):
    """A right-padded batch sorted longest first whose buffers hold only its real rows, step after step
    (``PackedSequence``'s layout: ``[N, width]``, ``N = active.sum()``, step ``t``'s ``active[t]`` rows from
    ``active[:t].sum()`` on). The layer's projection ``xp`` is packed; ``y`` too where ``out`` (the next
    layer's input: the rows held past their length are not written), else ``[T, B, H]`` with them held.
    Forward only (a call autograd does not record; ``cpu_cells.c``'s ``row0``)."""

    steps: int
    batch: int
    active: Tensor
    out: bool
    ends: Tensor
    """``int64 [k]``: the packed row of each non-empty row's last real step (the rows from ``k`` on are empty)."""
    slot: str | None
    """The :mod:`~rnn_xframework.backends.torch.compile.cpu_scratch` slot of ``y`` (``None``: a fresh tensor),
    where the caller copies what it returns from ``y`` (a packed output is the next layer's input)."""

    def flag(self) -> int:
        """``cpu_cells.c``'s ``packed``: bit 1, ``xp`` packed; bit 2, ``y`` too."""
        return 3 if self.out else 1

    def y(self, like: Tensor, hid: int) -> Tensor:
        return empty(like, (like.shape[0], hid) if self.out else (self.steps, self.batch, hid), self.slot)

    def layer_out(self, y: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        """``(seq, h)`` of a layer's ``y``: the next layer's input (packed, or ``[T, B, H]`` seen
        batch-first) and each row's state after its last real step (``h0``'s for an empty row)."""
        if not self.out:
            return y.transpose(0, 1), y[-1]
        return y, torch.cat([y.index_select(0, self.ends), h0[self.ends.shape[0] :]])


def empty(like: Tensor, shape: tuple[int, ...], slot: str | None) -> Tensor:
    """``like.new_empty(shape)``, or the :mod:`~rnn_xframework.backends.torch.compile.cpu_scratch` buffer ``slot``."""
    return like.new_empty(shape) if slot is None else cpu_scratch.buffer(slot, shape, like)


PIPELINE_MAX_BATCH = 8
"""The largest batch :func:`lstm_pair_forward` takes: ``cpu_mm.h``'s ``SMALL_ROWS`` (a step's product is the C
loop's own register-blocked one up to it, a BLAS call above)."""


def lstm_pair_forward(
    x: Tensor,
    w_ih: Tensor,
    bias: Tensor | None,
    w: Tensor,
    w_ih_up: Tensor,
    bias_up: Tensor | None,
    w_up: Tensor,
    state: list[Tensor],
    up: list[Tensor],
    threads: int | None = None,
    lengths: Lengths = None,
) -> tuple[Tensor, list[Tensor], list[Tensor], int]:
    """Two LSTM layers in one call of the C loop, pipelined on two threads (``cpu_cells.c``'s
    ``xf_lstm2_fwd``; one after the other where torch runs one thread), each projecting its own input step
    by step: ``x [T, B, F]`` time-major, the lower layer's ``w_ih [4H1, F]``, ``bias [4H1]`` (both of its
    biases, or ``None``) and ``w [4H1, H1]`` (``weight_hh``); the upper layer's ``w_ih_up [4H2, H1]``,
    ``bias_up`` and ``w_up [4H2, H2]``; ``state`` / ``up`` each layer's ``[h0, c0]``; ``threads``: at most
    this many (default ``torch.get_num_threads()``). Returns ``(y [T, B, H2], [h, c] lower,
    [h, c] upper, the threads that ran)``; a call autograd does not record, ``B <=``
    :data:`PIPELINE_MAX_BATCH`; ``lengths``: :data:`Lengths` (rows past their length hold their state, in
    both layers), else every row real. Both ways give the same numbers, bit for bit."""
    x = x.contiguous()
    steps, batch, features = x.shape
    h1, h2 = w.shape[1], w_up.shape[1]
    y1 = empty(x, (steps, batch, h1), "out0")
    y = x.new_empty(steps, batch, h2)
    cs1, cs2 = x.new_empty(2, batch, h1), x.new_empty(2, batch, h2)
    work = x.new_empty(batch * 9 * (h1 + h2))
    mats = [cpu_scratch.transposed(m) for m in (w_ih, w, w_ih_up, w_up)]
    b1, b2 = (None if b is None else b.detach().contiguous() for b in (bias, bias_up))
    h01, c01, h02, c02 = (s.contiguous() for s in (*state, *up))
    threads = torch.get_num_threads() if threads is None else threads
    ran = cpu_build.kernel("lstm2_fwd", x.dtype)(
        steps, batch, features, h1, h2, threads, _p(x), _p(mats[0]), _p(b1), _p(mats[1]), _p(mats[2]), _p(b2),
        _p(mats[3]), _p(h01), _p(c01), _p(h02), _p(c02), _p(y1), _p(y), _p(cs1), _p(cs2), _p(work), _p(lengths),
    )  # fmt: skip
    last = (steps - 1) % 2
    return y, [y1[-1].clone(), cs1[last].clone()], [y[-1], cs2[last].clone()], ran


def lstm_forward_both(
    a: tuple[Tensor, Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor, Tensor], threads: int | None = None
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], int]:
    """Two independent LSTM layers at once (``cpu_cells.c``'s ``xf_lstm_fwd_both``: a ``Bidirectional``'s
    directions), each ``(xp [T, B, 4H], w [4H, H], h0, c0)`` as :func:`lstm_forward` takes them, on two
    threads (one after the other where ``threads``, default ``torch.get_num_threads()``, is 1). Returns
    ``((y, c_T) of a, (y, c_T) of b, the threads that ran)``; a call autograd does not record, every row real,
    ``B <=`` :data:`PIPELINE_MAX_BATCH`. The same numbers as two :func:`lstm_forward` calls, bit for bit."""
    steps, batch = a[0].shape[:2]
    bufs = []
    for xp, w, h0, c0 in (a, b):
        hid = w.shape[1]
        u = cpu_scratch.transposed(w)
        y, cs = xp.new_empty(steps, batch, hid), xp.new_empty(2, batch, hid)
        act, tc = xp.new_empty(batch, 4 * hid), xp.new_empty(batch, hid)
        bufs.append((hid, xp, u, h0.contiguous(), c0.contiguous(), y, cs, act, tc))
    threads = torch.get_num_threads() if threads is None else threads
    ran = cpu_build.kernel("lstm_fwd_both", a[0].dtype)(
        threads, steps, batch, bufs[0][0], bufs[1][0], *(_p(t) for t in bufs[0][1:]), *(_p(t) for t in bufs[1][1:])
    )
    last = (steps - 1) % 2
    (ya, csa), (yb, csb) = ((buf[5], buf[6]) for buf in bufs)
    return (ya, csa[last].clone()), (yb, csb[last].clone()), ran


def lstm_forward(
    xp: Tensor,
    w: Tensor,
    h0: Tensor,
    c0: Tensor,
    save: bool,
    active: Active = None,
    lengths: Lengths = None,
    packed: Packed | None = None,
    out: str | None = None,
) -> tuple[Tensor, ...]:
    """``(y, c_T, cs, act, tc)``: with ``save`` every step's cell state, gates and ``tanh(c)`` for
    the backward; without, the kernel keeps them in one step's scratch. ``packed``: :class:`Packed`
    (``xp [N, 4H]``; its ``active``, not ``active=``; without ``save``). ``out``: ``y``'s scratch slot
    (:func:`empty`), without ``packed``."""
    steps, batch, g = (packed.steps, packed.batch, xp.shape[1]) if packed else xp.shape
    active = packed.active if packed else active
    hid = g // 4
    u = cpu_scratch.transposed(w)
    y = packed.y(xp, hid) if packed else empty(xp, (steps, batch, hid), out)
    cs, act, tc = (
        (xp.new_empty(steps, batch, hid), xp.new_empty(steps, batch, g), xp.new_empty(steps, batch, hid))
        if save
        else (xp.new_empty(2, batch, hid), xp.new_empty(batch, g), xp.new_empty(batch, hid))
    )
    cpu_build.kernel("lstm_fwd", xp.dtype)(
        steps, batch, hid, int(save), _p(xp), _p(u), _p(h0), _p(c0), _p(y), _p(cs), _p(act), _p(tc), _p(active),
        _p(lengths), packed.flag() if packed else 0,
    )  # fmt: skip
    return y, cs[steps - 1 if save else (steps - 1) % 2].clone(), cs, act, tc


def gru_forward(
    xp: Tensor,
    w: Tensor,
    b: Tensor,
    h0: Tensor,
    after: bool,
    save: bool,
    active: Active = None,
    lengths: Lengths = None,
    packed: Packed | None = None,
    out: str | None = None,
) -> tuple[Tensor, ...]:
    """``(y, act, hn)``: with ``save`` every step's gates and ``hn`` for the backward; ``packed``,
    ``out`` as :func:`lstm_forward`'s."""
    steps, batch, g = (packed.steps, packed.batch, xp.shape[1]) if packed else xp.shape
    active = packed.active if packed else active
    hid = g // 3
    u = cpu_scratch.transposed(w)
    y = packed.y(xp, hid) if packed else empty(xp, (steps, batch, hid), out)
    act, hn = (
        (xp.new_empty(steps, batch, g), xp.new_empty(steps, batch, hid))
        if save
        else (xp.new_empty(batch, g), xp.new_empty(batch, hid))
    )
    scratch = xp.new_empty(batch, g)
    cpu_build.kernel("gru_fwd", xp.dtype)(
        steps, batch, hid, int(after), int(save), _p(xp), _p(u), _p(b.detach().contiguous()), _p(h0), _p(y),
        _p(act), _p(hn), _p(scratch), _p(active), _p(lengths), packed.flag() if packed else 0,
    )  # fmt: skip
    return y, act, hn


def rnn_forward(
    xp: Tensor,
    w: Tensor,
    h0: Tensor,
    relu: bool,
    active: Active = None,
    lengths: Lengths = None,
    packed: Packed | None = None,
) -> Tensor:
    """``y [T, B, H]``, the outputs, which are the states (the backward reads them), written over
    ``xp`` (no second sequence-sized buffer); ``packed`` as :func:`lstm_forward`'s (``y`` over ``xp``
    where both are packed)."""
    steps, batch, hid = (packed.steps, packed.batch, xp.shape[1]) if packed else xp.shape
    active = packed.active if packed else active
    y = xp if packed is None or packed.out else packed.y(xp, hid)
    u = cpu_scratch.transposed(w)
    cpu_build.kernel("rnn_fwd", xp.dtype)(
        steps, batch, hid, int(relu), _p(xp), _p(u), _p(h0), _p(y), _p(active), _p(lengths),
        packed.flag() if packed else 0,
    )  # fmt: skip
    return y


def recording(lengths: Lengths, *tensors: Tensor | None) -> bool:
    """Whether autograd records this layer's call (its inputs, states and parameters: ``tensors``, ``None``
    for an absent bias); a call with ``lengths`` must not be recorded."""
    recording = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if recording and lengths is not None:
        raise RuntimeError('a "cpu" layer call with lengths (unsorted rows) has no backward: pass active instead')
    return recording


def _project(x: Tensor, w_ih: Tensor, bias: Tensor | None, batch: int) -> Tensor:
    """``xp [T, B, G] = x W_ih^T + bias`` (``x [T*B, in]``, time-major rows) into the scratch ``xp``: a
    Function's forward (autograd off), whose recurrence reads it and saves none of it."""
    out = empty(x, (x.shape[0], w_ih.shape[0]), "xp")
    xp = torch.mm(x, w_ih.t(), out=out) if bias is None else torch.addmm(bias, x, w_ih.t(), out=out)
    return xp.view(x.shape[0] // batch, batch, w_ih.shape[0])


def _projection_grads(ctx: Any, dxp: Tensor, x: Tensor, w_ih: Tensor, bias: bool) -> tuple[Tensor | None, ...]:
    """The gradients of :func:`_project`'s ``(x, w_ih, bias)`` from ``dxp`` (the Function's inputs 0-2),
    the ones autograd needs."""
    flat = dxp.view(-1, dxp.shape[-1])
    need = ctx.needs_input_grad
    return (
        flat.mm(w_ih) if need[0] else None,
        flat.t().mm(x) if need[1] else None,
        flat.sum(0) if bias and need[2] else None,
    )


class LSTMRecurrence(torch.autograd.Function):
    """``(x [T*B, in] time-major rows, weight_ih, bias [4H] | None, weight_hh [4H, H], h0, c0, active) ->
    (y [T, B, H], c_T)``: the projection (:func:`_project`) and the recurrence in one Function, so the
    projection and its gradient are scratch buffers (:mod:`~rnn_xframework.backends.torch.compile.cpu_scratch`)
    that never leave the Function; the backward computes the projection's gradients itself."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        w_ih: Tensor,
        bias: Tensor | None,
        w: Tensor,
        h0: Tensor,
        c0: Tensor,
        active: Active,
    ) -> tuple[Tensor, Tensor]:
        xp = _project(x, w_ih, bias, h0.shape[0])
        y, c_last, cs, act, tc = lstm_forward(xp, w, h0, c0, save=True, active=active)
        ctx.save_for_backward(x, w_ih, w.detach().contiguous(), h0, c0, y, cs, act, tc)
        ctx.active, ctx.bias = active, bias is not None
        return y, c_last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor | None, gc: Tensor | None) -> tuple[Tensor | None, ...]:
        x, w_ih, w, h0, c0, y, cs, act, tc = ctx.saved_tensors
        steps, batch, hid = y.shape
        gy = torch.zeros_like(y) if gy is None else gy.contiguous()
        dh = torch.zeros_like(h0)
        dc = torch.zeros_like(c0) if gc is None else gc.clone(memory_format=torch.contiguous_format)
        with cpu_scratch.session():
            dz = empty(act, tuple(act.shape), "dxp")  # every row written (held rows: zeros)
            cpu_build.kernel("lstm_bwd", y.dtype)(
                steps, batch, hid, _p(w), _p(c0), _p(cs), _p(act), _p(tc), _p(gy), _p(dh), _p(dc), _p(dz),
                _p(ctx.active),
            )  # fmt: skip
            return *_projection_grads(ctx, dz, x, w_ih, ctx.bias), _by_previous_state(dz, h0, y), dh, dc, None


class GRURecurrence(torch.autograd.Function):
    """``(x [T*B, in] time-major rows, weight_ih, bias_ih [3H] | None, weight_hh [3H, H], bias_hh [3H], h0,
    reset_after, active) -> y [T, B, H]``; the projection inside, as :class:`LSTMRecurrence`'s."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        w_ih: Tensor,
        b_ih: Tensor | None,
        w: Tensor,
        b: Tensor,
        h0: Tensor,
        after: bool,
        active: Active,
    ) -> Tensor:
        xp = _project(x, w_ih, b_ih, h0.shape[0])
        y, act, hn = gru_forward(xp, w, b, h0, after, save=True, active=active)
        ctx.save_for_backward(x, w_ih, w.detach().contiguous(), h0, y, act, hn)
        ctx.after, ctx.active, ctx.bias = after, active, b_ih is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, w_ih, w, h0, y, act, hn = ctx.saved_tensors
        steps, batch, hid = y.shape
        gy = gy.contiguous()
        dh = torch.zeros_like(h0)
        with cpu_scratch.session():
            dx, dhu = empty(act, tuple(act.shape), "dxp"), empty(act, tuple(act.shape), "dhu")  # every row written
            scratch = h0.new_empty(batch, hid)
            cpu_build.kernel("gru_bwd", y.dtype)(
                steps, batch, hid, int(ctx.after), _p(w), _p(h0), _p(y), _p(act), _p(hn), _p(gy), _p(dh), _p(dx),
                _p(dhu), _p(scratch), _p(ctx.active),
            )  # fmt: skip
            flat = dhu.view(steps * batch, 3 * hid)
            if ctx.after:
                dw = _by_previous_state(dhu, h0, y)
            else:  # the candidate's product reads r * h (saved as hn), the gates' read h
                dw = torch.cat(
                    [_by_previous_state(dhu[:, :, : 2 * hid], h0, y), flat[:, 2 * hid :].t().mm(hn.view(-1, hid))]
                )
            return *_projection_grads(ctx, dx, x, w_ih, ctx.bias), dw, flat.sum(0), dh, None, None


class RNNRecurrence(torch.autograd.Function):
    """``(xp [T, B, H], weight_hh [H, H], h0, relu, active) -> (y [T, B, H], h_T)``. ``y`` is written over
    ``xp`` (marked dirty: the projection's GEMM saves only its operands, so nothing reads ``xp``
    later); the final state is an output of its own (a copy), so its gradient arrives as
    ``[B, H]``, not as a full-size ``y[-1]`` select's backward."""

    @staticmethod
    def forward(ctx: Any, xp: Tensor, w: Tensor, h0: Tensor, relu: bool, active: Active) -> tuple[Tensor, Tensor]:
        y = rnn_forward(xp, w, h0, relu, active)
        ctx.mark_dirty(y)
        ctx.save_for_backward(w.detach().contiguous(), h0, y)
        ctx.relu, ctx.active = relu, active
        return y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor | None, gh: Tensor | None) -> tuple[Tensor, Tensor, Tensor, None, None]:
        w, h0, y = ctx.saved_tensors
        steps, batch, hid = y.shape
        owned = gy is None or not gy.is_contiguous()  # then a new buffer, which dz may overwrite
        gy = torch.zeros_like(y) if gy is None else gy.contiguous()
        dh = torch.zeros_like(h0) if gh is None else gh.clone(memory_format=torch.contiguous_format)
        dz = gy if owned else y.new_empty(y.shape)  # returned (the gradient of xp): a tensor of its own
        cpu_build.kernel("rnn_bwd", y.dtype)(
            steps, batch, hid, int(ctx.relu), _p(w), _p(y), _p(gy), _p(dh), _p(dz), _p(ctx.active)
        )
        return dz, _by_previous_state(dz, h0, y), dh, None, None


def _by_previous_state(dz: Tensor, h0: Tensor, y: Tensor) -> Tensor:
    """``sum_t dz_t^T h_{t-1}`` (``h_{-1} = h0``; ``dz [T, B, G]``, any strides with contiguous rows of
    its own, ``y [T, B, H]``): a recurrent kernel's gradient in two products, without the
    ``[h0, y[:-1]]`` sequence-sized copy."""
    steps, batch = y.shape[0], y.shape[1]
    dw = dz[0].t().mm(h0)
    if steps > 1:
        dw.addmm_(dz[1:].reshape((steps - 1) * batch, dz.shape[2]).t(), y[:-1].reshape(-1, y.shape[2]))
    return dw


def zero_past(y: Tensor, cut: Tensor, start: int = 0) -> Tensor:
    """``y [batch, time, units]`` (any strides, units contiguous; a tensor autograd does not record)
    zeroed in place at the steps ``t >= max(start, cut[b])`` of each row ``b`` (``cut``: ``int32 [batch]``):
    ``zero_output_for_mask`` in one pass, where ``torch.where`` costs about 18 us at W1."""
    if y.stride(2) != 1 or y.requires_grad:
        raise ValueError("zero_past: y needs contiguous units and no autograd history")
    batch, steps, width = y.shape
    cpu_build.kernel("zero_past", y.dtype)(start, steps, batch, width, y.stride(1), y.stride(0), _p(cut), _p(y))
    return y
