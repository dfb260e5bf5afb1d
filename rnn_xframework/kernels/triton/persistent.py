"""Persistent Triton kernels for one recurrent layer: the whole time loop in one launch.

Each program owns ``BLOCK_B`` batch rows. It loads the recurrent weights once (one
``[units, units]`` tile per gate block, zero-padded to a power of two ``UP``) and keeps them, and
the state, on chip for the whole sequence (compiled, Triton keeps the weight tiles in shared
memory and the state in registers: docs/cuda.md); per step it reads the precomputed
input projection ``xp[t]`` and writes the step's output. The input projection (``x W_ih^T + b``
for the whole sequence) is one GEMM before the launch, and the weight gradients are
whole-sequence GEMMs after the backward launch (:mod:`~rnn_xframework.backends.torch.compile.triton`).

Cells, in PyTorch's gate order (the order of ``weight_hh``'s row blocks; ``layouts.py`` maps
it to Keras's), ``a = xp_t + h_{t-1} W_hh^T``:

* ``SIMPLE`` (G = 1): ``h = act(a)``, ``act`` tanh or relu.
* ``LSTM`` (G = 4, i f g o): ``c = s(f) c + s(i) tanh(g)``, ``h = s(o) tanh(c)``.
* ``GRU`` (G = 3, r z n; ``reset_after``): ``hx = h W_hh^T + b_hh``, ``r = s(xr + hr)``,
  ``z = s(xz + hz)``, ``n = tanh(xn + r hn)``, ``h = (1 - z) n + z h``.

The forward saves what the backward needs (LSTM: the four activations and ``c``; GRU: ``r, z,
n, hn``); the backward runs the steps in reverse with the same register-resident weights and
writes ``dL/dxp`` per step (and for GRU ``dL/dhx``, which differs from it in the ``n`` block).

Products are ``tl.dot(..., input_precision="ieee")``: exact float32 (no TF32) and float64.
Padding is exact: padded weight rows and columns are zero, so padded state columns never reach
real ones. The kernels here are plain Python functions until
:mod:`~rnn_xframework.backends.torch.compile.triton` wraps them, per device: ``triton.jit`` for CUDA
tensors, Triton's interpreter for CPU tensors (with ``TRITON_INTERPRET=1`` set). So the choice
does not depend on the environment at import time, they call only Triton's built-ins and the
helpers of :mod:`.common`, never ``triton.language.standard``'s ``@triton.jit`` functions (``tl.zeros``,
``tl.sigmoid``), which are compiled-only when triton was imported without the interpreter.
"""

from __future__ import annotations

import triton.language as tl

from rnn_xframework.kernels.triton.common import (
    GRU,
    LSTM,
    SIMPLE,
    DeviceFunction,
    load4,
    relu,
    sigmoid,
    simple_grad,
    store4,
    tanh,
)


@DeviceFunction
def _block(B, U, BLOCK_B: tl.constexpr, UP: tl.constexpr):
    """This program's batch ``rows [BLOCK_B]``, the unit ``cols [UP]``, the mask of the real
    ``[rows, cols]`` entries, and their offsets in a contiguous ``[B, U]`` tensor."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, UP)
    return rows, cols, (rows[:, None] < B) & (cols[None, :] < U), rows[:, None] * U + cols[None, :]


@DeviceFunction
def _gate_tiles(tile, U, mask, CELL: tl.constexpr):
    """The ``[UP, UP]`` register tiles of ``W_hh``'s gate blocks: ``tile`` addresses block 0's
    tile (in either orientation), block ``g`` lies ``g * U * U`` elements further. The blocks a
    cell lacks are block 0 again (never read)."""
    w0 = tl.load(tile, mask=mask, other=0.0)
    w1 = w0
    w2 = w0
    w3 = w0
    if CELL != SIMPLE:
        w1 = tl.load(tile + U * U, mask=mask, other=0.0)
        w2 = tl.load(tile + 2 * U * U, mask=mask, other=0.0)
    if CELL == LSTM:
        w3 = tl.load(tile + 3 * U * U, mask=mask, other=0.0)
    return w0, w1, w2, w3


def forward_kernel(
    xp,
    s_xt,
    s_xb,
    w,
    bh,
    h0,
    c0,
    out,
    cs,
    gs,
    h_last,
    c_last,
    lens,
    T,
    B,
    U,
    CELL: tl.constexpr,
    RELU: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    UP: tl.constexpr,
    MASKED: tl.constexpr,
):
    """``xp [T, B, G*U]`` (strides ``s_xt, s_xb``, unit last), ``w = W_hh [G*U, U]``, ``bh = b_hh
    [G*U]`` (GRU), ``h0, c0 [B, U]`` -> ``out [T, B, U]``; with ``SAVE`` also ``cs [T, B, U]``
    (LSTM) and ``gs [T, B, 4*U]``; ``h_last, c_last [B, U]``. All outputs contiguous. With
    ``MASKED``, ``lens [B]`` (int32): row ``b`` is real for ``t < lens[b]`` and holds its state
    after (a right-padded batch: the state, and the output, of its last real step)."""
    rows, cols, m2, su = _block(B, U, BLOCK_B, UP)
    if MASKED:
        n_real = tl.load(lens + rows, mask=rows < B, other=0)[:, None]
    ks = tl.arange(0, UP)
    wmask = (ks[:, None] < U) & (cols[None, :] < U)
    # tile [k, n] = W_hh[n, k]: h @ tile = h W_hh^T
    w0, w1, w2, w3 = _gate_tiles(w + cols[None, :] * U + ks[:, None], U, wmask, CELL)
    if CELL == GRU:
        b0 = tl.load(bh + cols, mask=cols < U, other=0.0)[None, :]
        b1 = tl.load(bh + U + cols, mask=cols < U, other=0.0)[None, :]
        b2 = tl.load(bh + 2 * U + cols, mask=cols < U, other=0.0)[None, :]
    h = tl.load(h0 + su, mask=m2, other=0.0)
    if CELL == LSTM:
        c = tl.load(c0 + su, mask=m2, other=0.0)
    xrow = rows[:, None] * s_xb + cols[None, :]
    for t in range(T):
        x = xp + t * s_xt + xrow
        o_t = t * B * U + su
        if CELL == SIMPLE:
            a = tl.load(x, mask=m2, other=0.0) + tl.dot(h, w0, input_precision="ieee")
            if RELU:
                h_new = relu(a)
            else:
                h_new = tanh(a)
        if CELL == LSTM:
            gi = sigmoid(tl.load(x, mask=m2, other=0.0) + tl.dot(h, w0, input_precision="ieee"))
            gf = sigmoid(tl.load(x + U, mask=m2, other=0.0) + tl.dot(h, w1, input_precision="ieee"))
            gg = tanh(tl.load(x + 2 * U, mask=m2, other=0.0) + tl.dot(h, w2, input_precision="ieee"))
            go = sigmoid(tl.load(x + 3 * U, mask=m2, other=0.0) + tl.dot(h, w3, input_precision="ieee"))
            c_new = gf * c + gi * gg
            h_new = go * tanh(c_new)
            if MASKED:  # a select, not arithmetic: NaN in a padding step's projection reaches nothing
                c = tl.where(n_real > t, c_new, c)
            else:
                c = c_new
            if SAVE:
                g_t = t * B * 4 * U + rows[:, None] * 4 * U + cols[None, :]
                store4(gs, g_t, U, gi, gf, gg, go, m2)
                tl.store(cs + o_t, c, mask=m2)
        if CELL == GRU:
            hr = tl.dot(h, w0, input_precision="ieee") + b0
            hz = tl.dot(h, w1, input_precision="ieee") + b1
            hn = tl.dot(h, w2, input_precision="ieee") + b2
            r = sigmoid(tl.load(x, mask=m2, other=0.0) + hr)
            z = sigmoid(tl.load(x + U, mask=m2, other=0.0) + hz)
            n = tanh(tl.load(x + 2 * U, mask=m2, other=0.0) + r * hn)
            h_new = (1.0 - z) * n + z * h
            if SAVE:
                g_t = t * B * 4 * U + rows[:, None] * 4 * U + cols[None, :]
                store4(gs, g_t, U, r, z, n, hn, m2)
        if MASKED:
            h = tl.where(n_real > t, h_new, h)
        else:
            h = h_new
        tl.store(out + o_t, h, mask=m2)
    tl.store(h_last + su, h, mask=m2)
    if CELL == LSTM:
        tl.store(c_last + su, c, mask=m2)


def backward_kernel(
    dout,
    gh,
    gc,
    w,
    out,
    h0,
    c0,
    cs,
    gs,
    dxp,
    dhx,
    dh0,
    dc0,
    lens,
    T,
    B,
    U,
    CELL: tl.constexpr,
    G: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    UP: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Backward through the steps of :func:`forward_kernel`. ``dout [T, B, U]`` (dL/d out), ``gh,
    gc [B, U]`` (dL/d h_last, c_last) -> ``dxp [T, B, G*U]`` (dL/d xp), for GRU ``dhx [T, B, 3*U]``
    (dL/d (h W_hh^T + b_hh)), and ``dh0, dc0 [B, U]``. All contiguous. With ``MASKED`` (``lens``
    as the forward's), a held step passes ``dh`` / ``dc`` through and has zero ``dxp`` / ``dhx``."""
    rows, cols, m2, su = _block(B, U, BLOCK_B, UP)
    if MASKED:
        n_real = tl.load(lens + rows, mask=rows < B, other=0)[:, None]
    ks = tl.arange(0, UP)
    wmask = (cols[:, None] < U) & (ks[None, :] < U)
    # tile [n, k] = W_hh[n, k]: d @ tile = d W_hh
    w0, w1, w2, w3 = _gate_tiles(w + cols[:, None] * U + ks[None, :], U, wmask, CELL)
    dh = tl.load(gh + su, mask=m2, other=0.0)
    if CELL == LSTM:
        dc = tl.load(gc + su, mask=m2, other=0.0)
    for s in range(T):
        t = T - 1 - s
        o_t = t * B * U + su
        dh += tl.load(dout + o_t, mask=m2, other=0.0)
        d_t = t * B * G * U + rows[:, None] * G * U + cols[None, :]
        first = (su * 0 + t) == 0  # step 0 reads the initial state instead of step t - 1
        if MASKED:
            # a held step (t >= lens): zero gradients into its gates, dh and dc carried through. The
            # carries are blended, not selected (a select of the loop-carried values trips an
            # assertion in the LLVM of triton 3.9 for sm_90): dh_{t-1} = (d W_hh) + dh * held, exact
            # because a held row's d is zeros and a real row's held is 0 (its gates are finite:
            # autograd's masked calls zero the padding's inputs)
            real = n_real > t
            held = tl.where(real, 0.0, 1.0)
            dh_in = tl.where(real, dh, 0.0)
        else:
            dh_in = dh
        if CELL == SIMPLE:
            dz = simple_grad(tl.load(out + o_t, mask=m2, other=0.0), dh_in, RELU)
            tl.store(dxp + d_t, dz, mask=m2)
            dh_prev = tl.dot(dz, w0, input_precision="ieee")
        if CELL != SIMPLE:
            g_t = t * B * 4 * U + rows[:, None] * 4 * U + cols[None, :]
            ga, gb, gc_, gd = load4(gs, g_t, U, m2)
        if CELL == LSTM:  # ga, gb, gc_, gd = i, f, g, o
            c = tl.load(cs + o_t, mask=m2, other=0.0)
            c_prev = tl.load(cs + o_t - B * U, mask=m2 & (first == 0), other=0.0) + tl.load(
                c0 + su, mask=m2 & first, other=0.0
            )
            tc = tanh(c)
            if MASKED:
                dct = tl.where(real, dc, 0.0) + dh_in * gd * (1.0 - tc * tc)
            else:
                dct = dc + dh * gd * (1.0 - tc * tc)
            dzi = dct * gc_ * ga * (1.0 - ga)
            dzf = dct * c_prev * gb * (1.0 - gb)
            dzg = dct * ga * (1.0 - gc_ * gc_)
            dzo = dh_in * tc * gd * (1.0 - gd)
            if MASKED:
                dc = dct * gb + dc * held
            else:
                dc = dct * gb
            tl.store(dxp + d_t, dzi, mask=m2)
            tl.store(dxp + d_t + U, dzf, mask=m2)
            tl.store(dxp + d_t + 2 * U, dzg, mask=m2)
            tl.store(dxp + d_t + 3 * U, dzo, mask=m2)
            dh_prev = (
                tl.dot(dzi, w0, input_precision="ieee")
                + tl.dot(dzf, w1, input_precision="ieee")
                + tl.dot(dzg, w2, input_precision="ieee")
                + tl.dot(dzo, w3, input_precision="ieee")
            )
        if CELL == GRU:  # ga, gb, gc_, gd = r, z, n, hn
            h_prev = tl.load(out + o_t - B * U, mask=m2 & (first == 0), other=0.0) + tl.load(
                h0 + su, mask=m2 & first, other=0.0
            )
            dzn = dh_in * (1.0 - gb) * (1.0 - gc_ * gc_)
            dzz = dh_in * (h_prev - gc_) * gb * (1.0 - gb)
            dzr = dzn * gd * ga * (1.0 - ga)
            dhn = dzn * ga
            tl.store(dxp + d_t, dzr, mask=m2)
            tl.store(dxp + d_t + U, dzz, mask=m2)
            tl.store(dxp + d_t + 2 * U, dzn, mask=m2)
            tl.store(dhx + d_t, dzr, mask=m2)
            tl.store(dhx + d_t + U, dzz, mask=m2)
            tl.store(dhx + d_t + 2 * U, dhn, mask=m2)
            dh_prev = (
                dh_in * gb
                + tl.dot(dzr, w0, input_precision="ieee")
                + tl.dot(dzz, w1, input_precision="ieee")
                + tl.dot(dhn, w2, input_precision="ieee")
            )
        if MASKED:
            dh = dh_prev + dh * held
        else:
            dh = dh_prev
    tl.store(dh0 + su, dh, mask=m2)
    if CELL == LSTM:
        tl.store(dc0 + su, dc, mask=m2)


KERNELS = {"forward": forward_kernel, "backward": backward_kernel}
