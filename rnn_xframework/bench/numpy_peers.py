"""NumPy reference: per step and layer ``h = tanh(x_t @ K + b + h @ R)`` (fp32)."""

from __future__ import annotations

from rnn_xframework.bench.framework_setup import check_device
from rnn_xframework.bench.methods import Runner
from rnn_xframework.bench.timing import time_first_call
from rnn_xframework.bench.workloads import Workload


def setup_reference_loop(w: Workload, grad: bool, device: str) -> tuple[Runner, float]:
    """Forward only; inputs and weights are random float32."""
    import numpy as np

    check_device("numpy", device)
    if grad:
        raise ValueError("the NumPy reference loop has no backward pass")
    rng = np.random.default_rng(0)

    def uniform(*shape: int, fan_in: int) -> np.ndarray:
        limit = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-limit, limit, size=shape).astype(np.float32)

    b, t, f, u = w.batch, w.steps, w.features, w.units
    x = rng.standard_normal((b, t, f), dtype=np.float32)
    k0, r0, b0 = uniform(f, u, fan_in=f), uniform(u, u, fan_in=u), uniform(u, fan_in=u)
    k1, r1, b1 = uniform(u, u, fan_in=u), uniform(u, u, fan_in=u), uniform(u, fan_in=u)

    def run() -> np.ndarray:
        h0 = np.zeros((b, u), np.float32)
        h1 = np.zeros((b, u), np.float32)
        out = np.empty((b, t, u), np.float32)
        for s in range(t):
            h0 = np.tanh(x[:, s] @ k0 + b0 + h0 @ r0)
            h1 = np.tanh(h0 @ k1 + b1 + h1 @ r1)
            out[:, s] = h1
        return out

    return run, time_first_call(run)


def setup_gemm_matmul(n: int, device: str) -> tuple[Runner, float]:
    """``np.matmul`` of fp32 ``n x n`` (whatever BLAS NumPy links)."""
    import numpy as np

    check_device("numpy", device)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)

    def run() -> object:
        return np.matmul(a, b, out=c)

    return run, time_first_call(run)
