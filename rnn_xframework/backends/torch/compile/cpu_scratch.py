"""Buffers the ``"cpu"`` layers reuse from call to call, on calls autograd does not record.

A large fresh tensor is fresh memory: glibc maps an allocation above 32 MiB anew each time and the
kernel faults every page in on first write (W3's LSTM projection, ``[25600, 2048]`` float32, 210 MB:
about 30 ms of a 165 ms GEMM). A buffer that lives only inside one call -- a layer's projection,
the gathered input of a masked call, a packed output the next layer reads -- is taken from here
instead: one tensor per slot, dtype and thread, grown when a call needs more and kept for the next
call. Nothing a call returns is ever one of these (the callers return fresh tensors or copies), and
each thread has its own, so concurrent calls never share one. Buffers are reused only inside one
:func:`session` (a compiled RNN's call, a backward), not nested in another (a hook that calls the RNN
again from inside a call gets fresh tensors), and from :data:`MIN_ELEMENTS` on (the heap serves smaller
ones without faults). :func:`transposed` keeps small weight matrices' transposes the same way, per
thread, checked against the weights' bytes at every call. :func:`release` drops the calling thread's buffers.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from rnn_xframework.backends.torch.compile import cpu_build

MIN_ELEMENTS = 1 << 18
"""From this many elements (1 MiB of float32) a scratch buffer is reused; W1's buffers stay below it."""

_local = threading.local()


class session:
    """``with session():`` the scope in which :func:`buffer` reuses buffers: one call of a compiled RNN
    or one backward, on this thread. A session inside another gets fresh tensors."""

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _local.depth -= 1


def buffer(slot: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A contiguous ``shape`` tensor of ``like``'s dtype (CPU), valid until the next :func:`buffer` call
    of the same ``slot`` on this thread; its values are undefined (as ``torch.empty``'s). Outside a
    :func:`session`, or in a nested one, a fresh tensor."""
    n = math.prod(shape)
    if n < MIN_ELEMENTS or getattr(_local, "depth", 0) != 1:
        return like.new_empty(shape)
    store: dict[tuple[str, torch.dtype], Tensor] = _local.__dict__.setdefault("buffers", {})
    key = (slot, like.dtype)
    held = store.get(key)
    if held is None or held.numel() < n:
        store.pop(key, None)  # free the smaller one first
        with torch.inference_mode(False):  # a normal tensor: one made in inference mode refuses writes outside it
            held = store[key] = like.new_empty(n)
    return held[:n].view(shape)


def release() -> None:
    """Free the calling thread's scratch buffers and kept transposes (the next call makes them again)."""
    _local.__dict__.pop("buffers", None)
    _local.__dict__.pop("transposed", None)


TRANSPOSED_MAX = 1 << 16
"""The largest matrix (elements) whose transpose :func:`transposed` keeps between calls: W1's (an LSTM's
``weight_hh [256, 64]``: 23 us for ``.t().contiguous()``, a few for the check; 2 x 64 KiB kept) are kept,
W2's are not (their transposes cost a fraction of a percent of their call)."""
TRANSPOSED_PER_THREAD = 16


def transposed(w: Tensor) -> Tensor:
    """``w.t()`` contiguous for a 2-D ``w``: where ``w`` has at most :data:`TRANSPOSED_MAX` elements, from this
    thread's cache (``cpu_cells.c``'s ``xf_transposed``: the transpose kept beside a copy of ``w``, rebuilt where
    ``w``'s bytes differ from it, so optimizer steps, ``load_state_dict`` and writes through ``.data`` all show;
    at most :data:`TRANSPOSED_PER_THREAD` matrices, least recently used dropped). A cache's entry is keyed by
    ``w``'s address and shape; another tensor at that address is told apart by its bytes. The result is read
    until this thread's next call for the same key."""
    w = w.detach()
    if w.numel() > TRANSPOSED_MAX or not w.is_contiguous():
        return w.t().contiguous()
    lru: OrderedDict[tuple[Any, ...], Tensor] = _local.__dict__.setdefault("transposed", OrderedDict())
    rows, cols = w.shape
    key = (w.data_ptr(), rows, cols, w.dtype)
    cache = lru.get(key)
    if cache is None:
        with torch.inference_mode(False):  # zeros: a valid (copy, transpose) pair
            cache = lru[key] = torch.zeros(2 * rows * cols, dtype=w.dtype)
        if len(lru) > TRANSPOSED_PER_THREAD:
            lru.popitem(last=False)
    else:
        lru.move_to_end(key)
    cpu_build.kernel("transposed", w.dtype)(rows, cols, w.data_ptr(), cache.data_ptr())
    return cache[rows * cols :].view(cols, rows)


def held_bytes() -> int:
    """Bytes the calling thread's scratch buffers hold."""
    return sum(t.numel() * t.element_size() for t in _local.__dict__.get("buffers", {}).values())
