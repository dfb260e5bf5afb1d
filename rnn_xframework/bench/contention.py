"""How much CPU *other* processes used while a worker ran (Linux only).

The machine is shared: another process saturating a core halves what a
2-thread worker gets. For each worker we compare the whole system's busy CPU
time (``/proc/stat``) with the worker's own CPU time (``RUSAGE_CHILDREN``);
the difference, over ``wall * cpu_count``, is the fraction of the machine
that foreign processes took. Results with a high value are suspect.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal


def _system_busy_s() -> float | None:
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in first[1:]]
    return sum(values[i] for i in _BUSY_FIELDS if i < len(values)) / ticks


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ContentionProbe:
    """Snapshot taken before a worker starts; :meth:`foreign_fraction` after it ends."""

    wall: float
    busy: float | None
    children: float

    @classmethod
    def start(cls) -> ContentionProbe:
        """Take the 'before' snapshot."""
        return cls(time.perf_counter(), _system_busy_s(), _children_cpu_s())

    def foreign_fraction(self) -> float | None:
        """Share of all CPUs used by other processes since :meth:`start` (0..1)."""
        busy = _system_busy_s()
        if busy is None or self.busy is None:
            return None
        wall = time.perf_counter() - self.wall
        ours = _children_cpu_s() - self.children
        foreign = max(0.0, (busy - self.busy) - ours)
        return min(1.0, foreign / max(wall * (os.cpu_count() or 1), 1e-9))
