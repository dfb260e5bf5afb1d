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
ones without faults). :func:`release` drops the calling thread's buffers.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

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
    """Free the calling thread's scratch buffers (the next large call allocates them again)."""
    _local.__dict__.pop("buffers", None)


def held_bytes() -> int:
    """Bytes the calling thread's scratch buffers hold."""
    return sum(t.numel() * t.element_size() for t in _local.__dict__.get("buffers", {}).values())
