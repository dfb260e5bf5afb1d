"""The ``"cpu"`` layers' scratch buffers (``cpu_scratch.py``): reused from call to call on calls
autograd does not record, never part of what a call returns, one set per thread.

Every test here lowers ``MIN_ELEMENTS`` to 0, so the small test sizes take the scratch buffers that
only large calls (W2, W3) take otherwise.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import test_compile_cpu as base
from helpers import random_cell_states
from test_compile_cpu import FEATURES, STEPS, assert_outputs, built
from test_compile_cpu_masked import c_loop_only, lengths_for, mask_of

import rnn_xframework as xf

torch = pytest.importorskip("torch")
from rnn_xframework.backends.torch.compile import cpu_scratch  # noqa: E402

config = base.config
kernel_builds = base.kernel_builds


@pytest.fixture(autouse=True)
def every_buffer_scratch(monkeypatch):
    monkeypatch.setattr(cpu_scratch, "MIN_ELEMENTS", 0)
    yield
    cpu_scratch.release()


def _inputs(rng, kind, dtype, depth, batch):
    x = torch.from_numpy(rng.normal(size=(batch, STEPS, FEATURES)).astype(dtype))
    states = random_cell_states(rng, kind, depth, batch, 6, dtype)
    return x, [[torch.from_numpy(s) for s in lay] for lay in states]


def _frozen(result):
    y, states = result
    return y.clone(), [[s.clone() for s in lay] for lay in states]


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("masked", ["none", "unsorted", "sorted"])
@pytest.mark.parametrize("batch", [3, 12])
def test_results_never_share_a_scratch_buffer(rng, dtype, config, depth, masked, batch):
    """Two calls in a row, other inputs: the first call's outputs and final states are what the
    uncompiled RNN gives, and stay so after the second call has reused every buffer (unmasked
    layer by layer, masked rows in their own order (batch 3) or packed (batch 12))."""
    kind = config[0]
    rnn = built(config, dtype, rng, 6, depth=depth, return_sequences=True, return_state=True)
    fast = c_loop_only(xf.compile(rnn, "cpu"))
    mask = None if masked == "none" else mask_of(lengths_for(masked, batch, rng))
    (x1, s1), (x2, s2) = _inputs(rng, kind, dtype, depth, batch), _inputs(rng, kind, dtype, depth, batch)
    with torch.no_grad():
        first = fast(x1, s1, mask=mask)
        kept = _frozen(first)
        assert_outputs(first, rnn(x1, s1, mask=mask), dtype)
        assert_outputs(fast(x2, s2, mask=mask), rnn(x2, s2, mask=mask), dtype)
    assert_outputs(first, kept, dtype)  # nothing the first call returned was overwritten
    assert torch.equal(first[0], kept[0])
    assert cpu_scratch.held_bytes() > 0  # the buffers were taken (oneDNN's LSTM: the time-major input copy)


@pytest.mark.parametrize("masked", [False, True])
def test_inference_mode_then_other_modes(rng, masked):
    """Buffers first taken under ``torch.inference_mode()`` serve later calls without it (an inference
    tensor refuses writes outside inference mode), and the other way round; autograd calls too."""
    rnn = built(("LSTMCell", {}), "float64", rng, 6, depth=3, return_sequences=True)
    fast = xf.compile(rnn, "cpu")
    x = torch.from_numpy(rng.normal(size=(12, STEPS, FEATURES)))
    mask = mask_of(lengths_for("unsorted", 12, rng)) if masked else None
    want = rnn(x, mask=mask).detach()
    for mode in (torch.inference_mode, torch.no_grad, torch.enable_grad, torch.inference_mode, torch.no_grad):
        with mode():
            got = fast(x, mask=mask)
        assert np.max(np.abs(got.detach().numpy() - want.numpy())) <= 1e-12
    cpu_scratch.release()
    with torch.no_grad():
        fast(x, mask=mask)
    with torch.inference_mode():
        got = fast(x, mask=mask)
    assert np.max(np.abs(got.numpy() - want.numpy())) <= 1e-12


def test_buffers_are_per_slot_and_thread():
    with cpu_scratch.session():
        _per_slot_and_thread()


def _per_slot_and_thread():
    like = torch.zeros(1)
    a = cpu_scratch.buffer("a", (4, 5), like)
    assert a.shape == (4, 5) and a.is_contiguous()
    assert cpu_scratch.buffer("a", (2, 3), like).data_ptr() == a.data_ptr()  # a smaller call reuses it
    assert cpu_scratch.buffer("b", (4, 5), like).data_ptr() != a.data_ptr()
    assert cpu_scratch.buffer("a", (4, 5), like.double()).data_ptr() != a.data_ptr()  # per dtype
    grown = cpu_scratch.buffer("a", (40, 5), like)
    assert grown.shape == (40, 5)
    held = cpu_scratch.held_bytes()
    seen = {}

    def other():
        with cpu_scratch.session():
            seen["ptr"] = cpu_scratch.buffer("a", (40, 5), like).data_ptr()
        seen["held"] = cpu_scratch.held_bytes()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen["ptr"] != grown.data_ptr() and seen["held"] == 200 * 4
    assert cpu_scratch.held_bytes() == held
    cpu_scratch.release()
    assert cpu_scratch.held_bytes() == 0


def test_small_buffers_and_buffers_outside_one_session_are_fresh(monkeypatch):
    like = torch.zeros(1)
    for depth in (0, 2):  # outside a session; nested in another
        with contextlib.ExitStack() as stack:
            for _ in range(depth):
                stack.enter_context(cpu_scratch.session())
            first, second = cpu_scratch.buffer("a", (9, 11), like), cpu_scratch.buffer("a", (9, 11), like)
            assert first.data_ptr() != second.data_ptr()  # both alive: a freed one's address is not reused
    monkeypatch.setattr(cpu_scratch, "MIN_ELEMENTS", 100)
    with cpu_scratch.session():
        first, second = cpu_scratch.buffer("a", (9, 11), like), cpu_scratch.buffer("a", (9, 11), like)
        assert first.data_ptr() != second.data_ptr()
    assert cpu_scratch.held_bytes() == 0


@pytest.mark.parametrize("masked", [False, True])
def test_a_call_from_inside_a_call(rng, masked):
    """A forward hook on the first layer that calls the same compiled stack with other inputs (a
    session inside the outer call's): the inner call gets fresh buffers, the outer call's layer outputs
    waiting in the scratch buffers are untouched, both results right."""
    rnn = built(("GRUCell", {}), "float64", rng, 6, depth=3, return_sequences=True)
    fast = xf.compile(rnn, "cpu")
    x, other = (torch.from_numpy(rng.normal(size=(12, STEPS, FEATURES))) for _ in range(2))
    mask = mask_of(lengths_for("unsorted", 12, rng)) if masked else None
    inner, calls = [], []
    layer = fast.loop.cells[0]

    def call_again(*_):
        if not calls:  # once: the inner call runs this layer too
            calls.append(1)
            inner.append(fast(other, mask=mask))

    hook = layer.register_forward_hook(call_again)
    if masked:  # the masked call runs the layers' packed() directly: the hook goes on that
        packed = layer.packed
        layer.packed = lambda *a: (packed(*a), call_again())[0]
    with torch.no_grad():
        got = fast(x, mask=mask)
    hook.remove()
    assert len(inner) == 1
    assert np.max(np.abs(got.numpy() - rnn(x, mask=mask).detach().numpy())) <= 1e-12
    assert np.max(np.abs(inner[0].numpy() - rnn(other, mask=mask).detach().numpy())) <= 1e-12


def test_concurrent_calls_on_two_threads(rng):
    """One compiled stack called from two threads at once, each with its own inputs: each gets its
    own results (each thread has its own buffers)."""
    rnn = built(("GRUCell", {}), "float64", rng, 6, depth=3, return_sequences=True)
    fast = xf.compile(rnn, "cpu")
    inputs = [torch.from_numpy(rng.normal(size=(12, STEPS, FEATURES))) for _ in range(2)]
    mask = mask_of(lengths_for("unsorted", 12, rng))
    want = [rnn(x, mask=m).detach() for x in inputs for m in (None, mask)]
    got, start = {}, threading.Barrier(2)

    def run(i):
        start.wait()
        with torch.no_grad():
            for k in range(50):
                got[(i, k)] = [fast(inputs[i], mask=m) for m in (None, mask)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (i, _), ys in got.items():
        for j, y in enumerate(ys):
            assert np.max(np.abs(y.numpy() - want[2 * i + j].numpy())) <= 1e-12
