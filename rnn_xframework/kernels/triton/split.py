"""Triton kernels for layers too wide for one program: the weight columns split across programs.

Where a layer's recurrent weights do not fit one program's registers
(:data:`~rnn_xframework.backends.torch.compile.triton.MAX_WEIGHT_ELEMENTS`), each time step is one launch
of :func:`forward_step_kernel` over a grid of (batch blocks, unit-column blocks): program
``(b, n)`` computes every gate of units ``n*BLOCK_N ...`` for its batch rows, reading ``h_{t-1}``
whole and its ``G`` column blocks of ``W_hh`` in ``BLOCK_K``-wide slices (from L2, not kept on
chip), then the cell's update for those units, which needs no other program's gates. The
launch boundary is the step-to-step synchronization; under a CUDA graph a launch costs a few
microseconds. (A persistent version whose programs keep their columns for the whole sequence
and meet at a grid-wide barrier per step cannot run in Triton's interpreter, which runs programs
one after another, so it could not be tested here: not built.)

Backward per step (reverse): :func:`backward_step_kernel` (elementwise, tiled like the forward)
turns ``dL/dh_t`` into ``dL/dxp_t`` (and GRU's ``dL/dhx_t``) and carries ``dL/dc``; the carry
``dL/dh_{t-1} = dhx_t W_hh`` (+ ``dL/dh_t z`` for GRU) is one torch product per step.

Same cells, gate order, saved tensors and exactness (``input_precision="ieee"``) as
:mod:`~rnn_xframework.kernels.triton.persistent`, whose helpers this reuses; like those
kernels, these call only Triton's built-ins (``tl.full``, not the ``@triton.jit`` helpers of
``triton.language.standard`` such as ``tl.zeros``), so that they also run in the interpreter
when triton was imported before ``TRITON_INTERPRET=1`` was set.
"""

from __future__ import annotations

import triton.language as tl

from rnn_xframework.kernels.triton.common import GRU, LSTM, SIMPLE, load4, sigmoid, simple_grad, store4, tanh


def forward_step_kernel(
    xp,
    s_xb,
    w,
    bh,
    h_prev,
    c_prev,
    out,
    c_out,
    gs,
    B,
    U,
    CELL: tl.constexpr,
    RELU: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One step. ``xp [B, G*U]`` (row stride ``s_xb``), ``w = W_hh [G*U, U]``, ``bh [G*U]`` (GRU),
    ``h_prev, c_prev [B, U]`` -> ``out, c_out [B, U]``, with ``SAVE`` ``gs [B, 4*U]``."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m2 = (rows[:, None] < B) & (cols[None, :] < U)
    a0 = tl.full((BLOCK_B, BLOCK_N), 0.0, xp.dtype.element_ty)
    a1 = tl.full((BLOCK_B, BLOCK_N), 0.0, xp.dtype.element_ty)
    a2 = tl.full((BLOCK_B, BLOCK_N), 0.0, xp.dtype.element_ty)
    a3 = tl.full((BLOCK_B, BLOCK_N), 0.0, xp.dtype.element_ty)
    for k0 in range(0, U, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        h = tl.load(h_prev + rows[:, None] * U + ks[None, :], mask=(rows[:, None] < B) & (ks[None, :] < U), other=0.0)
        wmask = (ks[:, None] < U) & (cols[None, :] < U)
        wt = w + cols[None, :] * U + ks[:, None]  # tile [k, n] = W_hh[n, k]
        a0 += tl.dot(h, tl.load(wt, mask=wmask, other=0.0), input_precision="ieee")
        if CELL != SIMPLE:
            a1 += tl.dot(h, tl.load(wt + U * U, mask=wmask, other=0.0), input_precision="ieee")
            a2 += tl.dot(h, tl.load(wt + 2 * U * U, mask=wmask, other=0.0), input_precision="ieee")
        if CELL == LSTM:
            a3 += tl.dot(h, tl.load(wt + 3 * U * U, mask=wmask, other=0.0), input_precision="ieee")
    x = xp + rows[:, None] * s_xb + cols[None, :]
    su = rows[:, None] * U + cols[None, :]
    g_t = rows[:, None] * 4 * U + cols[None, :]
    if CELL == SIMPLE:
        a = tl.load(x, mask=m2, other=0.0) + a0
        if RELU:
            h_new = tl.maximum(a, 0.0)
        else:
            h_new = tanh(a)
    if CELL == LSTM:
        gi = sigmoid(tl.load(x, mask=m2, other=0.0) + a0)
        gf = sigmoid(tl.load(x + U, mask=m2, other=0.0) + a1)
        gg = tanh(tl.load(x + 2 * U, mask=m2, other=0.0) + a2)
        go = sigmoid(tl.load(x + 3 * U, mask=m2, other=0.0) + a3)
        c = gf * tl.load(c_prev + su, mask=m2, other=0.0) + gi * gg
        h_new = go * tanh(c)
        tl.store(c_out + su, c, mask=m2)
        if SAVE:
            store4(gs, g_t, U, gi, gf, gg, go, m2)
    if CELL == GRU:
        hn = a2 + tl.load(bh + 2 * U + cols, mask=cols < U, other=0.0)[None, :]
        r = sigmoid(tl.load(x, mask=m2, other=0.0) + a0 + tl.load(bh + cols, mask=cols < U, other=0.0)[None, :])
        z = sigmoid(tl.load(x + U, mask=m2, other=0.0) + a1 + tl.load(bh + U + cols, mask=cols < U, other=0.0)[None, :])
        n = tanh(tl.load(x + 2 * U, mask=m2, other=0.0) + r * hn)
        h_new = (1.0 - z) * n + z * tl.load(h_prev + su, mask=m2, other=0.0)
        if SAVE:
            store4(gs, g_t, U, r, z, n, hn, m2)
    tl.store(out + su, h_new, mask=m2)


def backward_step_kernel(
    dh,
    dc,
    h,
    h_prev,
    c,
    c_prev,
    gs,
    dxp,
    dhx,
    dc_prev,
    direct,
    B,
    U,
    CELL: tl.constexpr,
    G: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One step backward, elementwise. ``dh [B, U]`` (dL/dh_t, all terms), ``dc [B, U]`` (LSTM
    carry), ``h = h_t``, ``h_prev``, ``c = c_t``, ``c_prev`` ``[B, U]``, ``gs [B, 4*U]`` ->
    ``dxp [B, G*U]``, GRU ``dhx [B, 3*U]``, LSTM ``dc_prev [B, U]``, GRU ``direct = dh * z``."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m2 = (rows[:, None] < B) & (cols[None, :] < U)
    su = rows[:, None] * U + cols[None, :]
    d_t = rows[:, None] * G * U + cols[None, :]
    g_t = rows[:, None] * 4 * U + cols[None, :]
    d = tl.load(dh + su, mask=m2, other=0.0)
    if CELL == SIMPLE:
        dz = simple_grad(tl.load(h + su, mask=m2, other=0.0), d, RELU)
        tl.store(dxp + d_t, dz, mask=m2)
    if CELL != SIMPLE:
        ga, gb, gc_, gd = load4(gs, g_t, U, m2)
    if CELL == LSTM:  # i, f, g, o
        tc = tanh(tl.load(c + su, mask=m2, other=0.0))
        dcv = tl.load(dc + su, mask=m2, other=0.0) + d * gd * (1.0 - tc * tc)
        tl.store(dxp + d_t, dcv * gc_ * ga * (1.0 - ga), mask=m2)
        tl.store(dxp + d_t + U, dcv * tl.load(c_prev + su, mask=m2, other=0.0) * gb * (1.0 - gb), mask=m2)
        tl.store(dxp + d_t + 2 * U, dcv * ga * (1.0 - gc_ * gc_), mask=m2)
        tl.store(dxp + d_t + 3 * U, d * tc * gd * (1.0 - gd), mask=m2)
        tl.store(dc_prev + su, dcv * gb, mask=m2)
    if CELL == GRU:  # r, z, n, hn
        hp = tl.load(h_prev + su, mask=m2, other=0.0)
        dzn = d * (1.0 - gb) * (1.0 - gc_ * gc_)
        dzz = d * (hp - gc_) * gb * (1.0 - gb)
        dzr = dzn * gd * ga * (1.0 - ga)
        tl.store(dxp + d_t, dzr, mask=m2)
        tl.store(dxp + d_t + U, dzz, mask=m2)
        tl.store(dxp + d_t + 2 * U, dzn, mask=m2)
        tl.store(dhx + d_t, dzr, mask=m2)
        tl.store(dhx + d_t + U, dzz, mask=m2)
        tl.store(dhx + d_t + 2 * U, dzn * ga, mask=m2)
        tl.store(direct + su, d * gb, mask=m2)


KERNELS = {"forward_step": forward_step_kernel, "backward_step": backward_step_kernel}
