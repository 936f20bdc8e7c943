"""Latency measurement: warm-up, then repeats until a minimum count AND a minimum time.

Every clock read is preceded by the ``sync`` hook (e.g. ``torch.cuda.synchronize``) so that
asynchronous devices are timed for the work they did, not for the launch. Clocks are monotonic
(``time.perf_counter``); tests pass a fake clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


def percentiles(values: Sequence[float], qs: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """{'p50': ..., 'p95': ..., 'p99': ...} with linear interpolation; NaN for no values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {f"p{q:g}": math.nan for q in qs}
    got = np.percentile(v, list(qs))
    return {f"p{q:g}": float(x) for q, x in zip(qs, got)}


@dataclass
class Timing:
    """Durations (seconds) of the timed calls, with what it took to get them."""

    times_s: list[float] = field(default_factory=list)
    warmup: int = 0
    wall_s: float = 0.0  # first to last timed clock read

    @property
    def repeats(self) -> int:
        return len(self.times_s)

    def per_item_ms(self, items_per_call: int = 1) -> dict[str, float]:
        """Percentiles and mean of one item's latency (call time / items) in milliseconds."""
        ms = [1000.0 * t / items_per_call for t in self.times_s]
        out = percentiles(ms)
        out["mean"] = float(np.mean(ms)) if ms else math.nan
        return out

    def throughput(self, items_per_call: int = 1) -> float:
        """Items per second over the timed calls."""
        total = sum(self.times_s)
        return items_per_call * len(self.times_s) / total if total > 0 else math.nan


def measure(fn: Callable[[], object], *, warmup: int = 5, min_repeats: int = 20, min_seconds: float = 1.5,
            max_repeats: int = 100_000, max_seconds: float = 600.0, sync: Callable[[], object] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``fn`` after ``warmup`` untimed calls, until both min_repeats and min_seconds are met.

    max_repeats / max_seconds bound a runaway loop (a very fast call, or a very slow one).
    """
    if min_repeats < 0 or warmup < 0 or min_seconds < 0:
        raise ValueError("warmup, min_repeats and min_seconds must be >= 0")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = clock()
    elapsed = 0.0
    while len(times) < max_repeats and elapsed < max_seconds:
        if len(times) >= min_repeats and elapsed >= min_seconds:
            break
        sync()
        t0 = clock()
        fn()
        sync()
        t1 = clock()
        times.append(t1 - t0)
        elapsed = t1 - start
    return Timing(times_s=times, warmup=warmup, wall_s=elapsed)


def time_once(fn: Callable[[], object], sync: Callable[[], object] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds one call of ``fn`` takes, synchronised on both ends."""
    sync = sync or (lambda: None)
    sync()
    t0 = clock()
    fn()
    sync()
    return clock() - t0
