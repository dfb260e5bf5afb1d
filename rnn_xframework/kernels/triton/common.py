"""What the three Triton kernel files (:mod:`.persistent`, :mod:`.split`, :mod:`.two_layer`) share:
the host-side tables keyed by their ``CELL`` code, and the device
helpers (``@DeviceFunction``: inlined by compiled kernels, called as Python by the interpreter).

Cells, in PyTorch's gate order: ``SIMPLE`` (G = 1), ``LSTM`` (G = 4, i f g o), ``GRU`` (G = 3,
r z n); :mod:`.persistent` states their math. Like the kernels, the helpers call only Triton's
built-ins, never ``triton.language.standard``'s ``@triton.jit`` functions, so that they also
run in the interpreter.
"""

from __future__ import annotations

import triton
import triton.language as tl

GATES = {0: 1, 1: 4, 2: 3}
"""Gate blocks per ``CELL`` code (which cell type has which code: the torch backend's table,
:data:`rnn_xframework.backends.torch.kinds.KINDS`)."""
SAVED = {0: 0, 1: 4, 2: 4}
"""Blocks of ``units`` columns per step the forward saves for the backward."""
SIMPLE = tl.constexpr(0)
LSTM = tl.constexpr(1)
GRU = tl.constexpr(2)


class DeviceFunction(triton.runtime.JITFunction):
    """A ``@triton.jit`` helper that the interpreter can call too: compiled kernels inline it
    like any JIT function; an interpreted kernel (plain Python) calls the Python function."""

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


@DeviceFunction
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@DeviceFunction
def tanh(x):
    # 2 s(2x) - 1: exact to rounding in float32 and float64, overflow-safe (exp -> inf gives -1).
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@DeviceFunction
def store4(ptr, step, U, a, b, c, d, mask):
    """Store the four ``[B, U]`` blocks a forward step saves (``gs`` at ``step``, one per ``U`` columns)."""
    tl.store(ptr + step, a, mask=mask)
    tl.store(ptr + step + U, b, mask=mask)
    tl.store(ptr + step + 2 * U, c, mask=mask)
    tl.store(ptr + step + 3 * U, d, mask=mask)


@DeviceFunction
def load4(ptr, step, U, mask):
    """The four ``[B, U]`` blocks :func:`store4` saved at ``step``."""
    a = tl.load(ptr + step, mask=mask, other=0.0)
    b = tl.load(ptr + step + U, mask=mask, other=0.0)
    c = tl.load(ptr + step + 2 * U, mask=mask, other=0.0)
    d = tl.load(ptr + step + 3 * U, mask=mask, other=0.0)
    return a, b, c, d


@DeviceFunction
def relu(a):
    """``max(a, 0)`` that keeps NaN, as ``torch.relu`` and ``np.maximum`` do (``tl.maximum``
    returns the other operand, so NaN became 0: issue 18)."""
    return tl.where(a < 0.0, 0.0, a)


@DeviceFunction
def simple_grad(h, dh, RELU: tl.constexpr):
    """dL/da of a SimpleRNN step ``h = act(a)`` (tanh, or relu with ``RELU``), from ``h`` and dL/dh.
    relu passes ``dh`` wherever ``h`` is not ``<= 0`` (NaN included), as PyTorch's relu backward does."""
    if RELU:
        dz = tl.where(h <= 0.0, 0.0, dh)
    else:
        dz = dh * (1.0 - h * h)
    return dz
