"""Optional pre-faulting of guest memory before a run (``--prefault-gb``).

On a freshly started VM (e.g. Firecracker) the host backs guest memory lazily,
so the first touch of each guest page is very slow (measured here: ~9 s for
the first 4 GiB, 1.6 s for the next touch of the same size). A worker that
allocates fresh buffers then shows multi-second "first calls" and
occasional multi-second samples. Touching (writing) N GiB once, in this
process, and freeing it makes later allocations reuse host-backed pages.
"""

from __future__ import annotations

import time

PAGE = 4096
CHUNK = 1 << 30


def prefault(gib: float) -> float:
    """Write one byte per page of ``gib`` GiB, then free it; returns seconds taken."""
    start = time.perf_counter()
    chunks: list[bytearray] = []
    remaining = int(gib * (1 << 30))
    while remaining > 0:
        size = min(CHUNK, remaining)
        buf = bytearray(size)
        buf[::PAGE] = b"\x01" * len(range(0, size, PAGE))
        chunks.append(buf)
        remaining -= size
    chunks.clear()
    return time.perf_counter() - start
