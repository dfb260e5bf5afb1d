"""Timing: first call (``compile_s``), warm-up, then budgeted repeats.

A *sample* is the mean time of ``number`` back-to-back calls; calls shorter than
``min_sample_s`` are batched so that timer overhead stays negligible. The
number of samples is chosen from a time budget and clamped to
``[min_repeats, max_repeats]``. ``sync`` (e.g. ``torch.cuda.synchronize``) is
called before starting and after stopping the clock, never inside the batch.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rnn_xframework.bench.methods import Runner

SyncFn = Callable[[], None]


def _no_sync() -> None:
    """Default synchronisation hook: nothing to wait for (CPU)."""


@dataclass(frozen=True)
class Budget:
    """How long to spend measuring one method on one workload."""

    budget_s: float = 2.0
    """Seconds of timed samples wanted (a noisy machine may stop the samples at twice this)."""
    min_repeats: int = 5
    """Samples taken at least, whatever the budget."""
    max_repeats: int = 50
    """Samples taken at most."""
    warmup_s: float = 0.2
    """Seconds of untimed warm-up calls (at most 20 calls); the fastest one sizes the samples."""
    min_sample_s: float = 0.005
    """Seconds one sample lasts at least: shorter calls are timed in batches of back-to-back calls."""

    def __post_init__(self) -> None:
        """Refuse a budget that cannot be measured with (``ValueError`` naming the field)."""
        seconds = {"budget_s": self.budget_s, "min_sample_s": self.min_sample_s, "warmup_s": self.warmup_s}
        for name, value in seconds.items():
            low = 0.0 if name == "warmup_s" else math.ulp(0.0)  # warm-up may be 0 (one call)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < math.inf:
                raise ValueError(f"budget: {name} must be a finite number of seconds >= {low}, got {value!r}")
        for name in ("min_repeats", "max_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"budget: {name} must be an integer >= 1, got {value!r}")
        if self.min_repeats > self.max_repeats:
            raise ValueError(f"budget: min_repeats {self.min_repeats} > max_repeats {self.max_repeats}")


@dataclass
class Measurement:
    """Statistics over the timed samples, all in seconds per call."""

    median_s: float
    q1_s: float
    q3_s: float
    min_s: float
    max_s: float
    repeats: int
    number: int
    warmup_calls: int
    samples_s: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain-dict form for JSON output."""
        return asdict(self)


def time_first_call(runner: Runner, sync: SyncFn = _no_sync) -> float:
    """Run ``runner`` once and return its wall time: the ``compile_s`` of a setup."""
    sync()
    start = time.perf_counter()
    runner()
    sync()
    return time.perf_counter() - start


def _timed_batch(runner: Runner, number: int, sync: SyncFn) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(number):
        runner()
    sync()
    return (time.perf_counter() - start) / number


def measure(runner: Runner, budget: Budget, sync: SyncFn = _no_sync) -> Measurement:
    """Warm ``runner`` up (untimed), then time it within ``budget``."""
    warm_start = time.perf_counter()
    warmup_calls = 0
    estimate = math.inf
    while warmup_calls == 0 or (time.perf_counter() - warm_start < budget.warmup_s and warmup_calls < 20):
        # The fastest warm-up call is the estimate: one slow call (noise) must
        # not shrink the batch size.
        estimate = min(estimate, _timed_batch(runner, 1, sync))
        warmup_calls += 1

    number = max(1, math.ceil(budget.min_sample_s / max(estimate, 1e-9)))
    wanted = int(budget.budget_s / max(estimate * number, 1e-9))
    repeats = min(max(wanted, budget.min_repeats), budget.max_repeats)

    samples: list[float] = []
    deadline = time.perf_counter() + 2.0 * budget.budget_s
    while len(samples) < repeats:
        samples.append(_timed_batch(runner, number, sync))
        # A noisy machine can make calls far slower than the estimate: stop at
        # twice the budget once the minimum number of samples is in.
        if len(samples) >= budget.min_repeats and time.perf_counter() > deadline:
            break

    if len(samples) >= 2:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    else:
        q1 = q3 = samples[0]
    return Measurement(
        median_s=statistics.median(samples),
        q1_s=q1,
        q3_s=q3,
        min_s=min(samples),
        max_s=max(samples),
        repeats=len(samples),
        number=number,
        warmup_calls=warmup_calls,
        samples_s=samples,
    )
