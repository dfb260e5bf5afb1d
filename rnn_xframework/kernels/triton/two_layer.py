"""A two-layer stack in one persistent Triton launch (inference).

For a small two-layer stack of one cell type, :func:`stack2_forward_kernel` runs both layers in
one launch: each program (16 batch rows) loads layer 0's recurrent weights, layer 1's input
weights and layer 1's recurrent weights once, one register tile per gate block each, and per
step computes layer 0 at time ``t`` and then layer 1 at time ``t`` from it. Layer 0's outputs
never leave the chip (no intermediate sequence in memory, one launch instead of two plus the
second layer's input GEMM). Only the top layer's output sequence and both final states are
written. Used without autograd when the three weight sets fit the register budget
(:data:`~rnn_xframework.backends.torch.compile.triton.MAX_WEIGHT_ELEMENTS`); training and larger stacks
take the per-layer kernels. Same cells, gate order and exactness as
:mod:`~rnn_xframework.kernels.triton.persistent`.
"""

from __future__ import annotations

import triton.language as tl

from rnn_xframework.kernels.triton.common import GRU, LSTM, SIMPLE, DeviceFunction, sigmoid, tanh


@DeviceFunction
def _cell(CELL: tl.constexpr, RELU: tl.constexpr, a0, a1, a2, a3, r0, r1, r2, r3, h, c):
    """One step of a cell from its input parts ``a*`` (bias included) and recurrent parts ``r*``
    (GRU: ``b_hh`` included) -> ``(h, c)``; ``c`` passes through except for LSTM."""
    if CELL == SIMPLE:
        if RELU:
            h = tl.maximum(a0 + r0, 0.0)
        else:
            h = tanh(a0 + r0)
    if CELL == LSTM:
        c = sigmoid(a1 + r1) * c + sigmoid(a0 + r0) * tanh(a2 + r2)
        h = sigmoid(a3 + r3) * tanh(c)
    if CELL == GRU:
        r = sigmoid(a0 + r0)
        z = sigmoid(a1 + r1)
        n = tanh(a2 + r * r2)
        h = (1.0 - z) * n + z * h
    return h, c


def stack2_forward_kernel(
    xp,
    s_xt,
    s_xb,
    whh0,
    wih1,
    whh1,
    bih1,
    bhh0,
    bhh1,
    h00,
    c00,
    h01,
    c01,
    out,
    hl0,
    cl0,
    hl1,
    cl1,
    T,
    B,
    U0,
    U1,
    CELL: tl.constexpr,
    RELU0: tl.constexpr,
    RELU1: tl.constexpr,
    BLOCK_B: tl.constexpr,
    UP0: tl.constexpr,
    UP1: tl.constexpr,
):
    """``xp [T, B, G*U0]`` (layer 0's input projection, strides ``s_xt, s_xb``), ``whh0 [G*U0,
    U0]``, ``wih1 [G*U1, U0]``, ``whh1 [G*U1, U1]``, ``bih1 [G*U1]`` (layer 1's input bias; for
    SimpleRNN/LSTM both biases summed), ``bhh0, bhh1`` (GRU's ``b_hh``), initial states ``h0l, c0l
    [B, Ul]`` -> ``out [T, B, U1]`` and final states ``hll, cll``."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    n0 = tl.arange(0, UP0)
    n1 = tl.arange(0, UP1)
    m0 = (rows[:, None] < B) & (n0[None, :] < U0)
    m1 = (rows[:, None] < B) & (n1[None, :] < U1)
    # tiles [k, n] = W[g*U + n, k]
    t00 = whh0 + n0[None, :] * U0 + n0[:, None]
    k00 = (n0[:, None] < U0) & (n0[None, :] < U0)
    t01 = wih1 + n1[None, :] * U0 + n0[:, None]
    k01 = (n0[:, None] < U0) & (n1[None, :] < U1)
    t11 = whh1 + n1[None, :] * U1 + n1[:, None]
    k11 = (n1[:, None] < U1) & (n1[None, :] < U1)
    b1 = bih1 + n1
    bm1 = n1 < U1
    r0a = tl.load(t00, mask=k00, other=0.0)
    i1a = tl.load(t01, mask=k01, other=0.0)
    r1a = tl.load(t11, mask=k11, other=0.0)
    b1a = tl.load(b1, mask=bm1, other=0.0)[None, :]
    r0b, r0c, r0d = r0a, r0a, r0a  # unused gate slots of SimpleRNN
    i1b, i1c, i1d = i1a, i1a, i1a
    r1b, r1c, r1d = r1a, r1a, r1a
    b1b, b1c, b1d = b1a, b1a, b1a
    if CELL != SIMPLE:
        r0b = tl.load(t00 + U0 * U0, mask=k00, other=0.0)
        r0c = tl.load(t00 + 2 * U0 * U0, mask=k00, other=0.0)
        i1b = tl.load(t01 + U1 * U0, mask=k01, other=0.0)
        i1c = tl.load(t01 + 2 * U1 * U0, mask=k01, other=0.0)
        r1b = tl.load(t11 + U1 * U1, mask=k11, other=0.0)
        r1c = tl.load(t11 + 2 * U1 * U1, mask=k11, other=0.0)
        b1b = tl.load(b1 + U1, mask=bm1, other=0.0)[None, :]
        b1c = tl.load(b1 + 2 * U1, mask=bm1, other=0.0)[None, :]
    if CELL == LSTM:
        r0d = tl.load(t00 + 3 * U0 * U0, mask=k00, other=0.0)
        i1d = tl.load(t01 + 3 * U1 * U0, mask=k01, other=0.0)
        r1d = tl.load(t11 + 3 * U1 * U1, mask=k11, other=0.0)
        b1d = tl.load(b1 + 3 * U1, mask=bm1, other=0.0)[None, :]
    hb0a, hb0b, hb0c, hb1a, hb1b, hb1c = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    if CELL == GRU:  # b_hh stays inside the reset product
        hb0a = tl.load(bhh0 + n0, mask=n0 < U0, other=0.0)[None, :]
        hb0b = tl.load(bhh0 + U0 + n0, mask=n0 < U0, other=0.0)[None, :]
        hb0c = tl.load(bhh0 + 2 * U0 + n0, mask=n0 < U0, other=0.0)[None, :]
        hb1a = tl.load(bhh1 + n1, mask=bm1, other=0.0)[None, :]
        hb1b = tl.load(bhh1 + U1 + n1, mask=bm1, other=0.0)[None, :]
        hb1c = tl.load(bhh1 + 2 * U1 + n1, mask=bm1, other=0.0)[None, :]
    s0 = rows[:, None] * U0 + n0[None, :]
    s1 = rows[:, None] * U1 + n1[None, :]
    h0 = tl.load(h00 + s0, mask=m0, other=0.0)
    h1 = tl.load(h01 + s1, mask=m1, other=0.0)
    c0 = tl.load(c00 + s0, mask=m0, other=0.0)
    c1 = tl.load(c01 + s1, mask=m1, other=0.0)
    xrow = rows[:, None] * s_xb + n0[None, :]
    for t in range(T):
        x = xp + t * s_xt + xrow
        a0 = tl.load(x, mask=m0, other=0.0)
        p0 = tl.dot(h0, r0a, input_precision="ieee") + hb0a
        a1, a2, a3, p1, p2, p3 = a0, a0, a0, p0, p0, p0  # SimpleRNN: one gate block
        if CELL != SIMPLE:
            a1 = tl.load(x + U0, mask=m0, other=0.0)
            a2 = tl.load(x + 2 * U0, mask=m0, other=0.0)
            p1 = tl.dot(h0, r0b, input_precision="ieee") + hb0b
            p2 = tl.dot(h0, r0c, input_precision="ieee") + hb0c
        if CELL == LSTM:
            a3 = tl.load(x + 3 * U0, mask=m0, other=0.0)
            p3 = tl.dot(h0, r0d, input_precision="ieee")
        h0, c0 = _cell(CELL, RELU0, a0, a1, a2, a3, p0, p1, p2, p3, h0, c0)
        e0 = tl.dot(h0, i1a, input_precision="ieee") + b1a
        g0 = tl.dot(h1, r1a, input_precision="ieee") + hb1a
        e1, e2, e3, g1, g2, g3 = e0, e0, e0, g0, g0, g0
        if CELL != SIMPLE:
            e1 = tl.dot(h0, i1b, input_precision="ieee") + b1b
            e2 = tl.dot(h0, i1c, input_precision="ieee") + b1c
            g1 = tl.dot(h1, r1b, input_precision="ieee") + hb1b
            g2 = tl.dot(h1, r1c, input_precision="ieee") + hb1c
        if CELL == LSTM:
            e3 = tl.dot(h0, i1d, input_precision="ieee") + b1d
            g3 = tl.dot(h1, r1d, input_precision="ieee")
        h1, c1 = _cell(CELL, RELU1, e0, e1, e2, e3, g0, g1, g2, g3, h1, c1)
        tl.store(out + t * B * U1 + s1, h1, mask=m1)
    tl.store(hl0 + s0, h0, mask=m0)
    tl.store(hl1 + s1, h1, mask=m1)
    if CELL == LSTM:
        tl.store(cl0 + s0, c0, mask=m0)
        tl.store(cl1 + s1, c1, mask=m1)


KERNELS = {"stack2_forward": stack2_forward_kernel}
