"""Timing: percentiles, and the warm-up / minimum-count-and-time repeat logic, on a fake clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoseg.bench.timing import Timing, measure, percentiles, time_once


class FakeClock:
    """A clock that only moves when the timed function runs; records the order of events."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s, self.events = 0.0, step_s, []

    def __call__(self) -> float:
        self.events.append("clock")
        return self.now

    def fn(self) -> None:
        self.events.append("fn")
        self.now += self.step_s

    def sync(self) -> None:
        self.events.append("sync")


def test_percentiles_match_linear_interpolation():
    p = percentiles(range(1, 101))
    assert p == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_repeats_until_min_seconds_when_calls_are_fast():
    c = FakeClock(0.1)
    t = measure(c.fn, warmup=3, min_repeats=5, min_seconds=2.0, clock=c)
    assert t.repeats == 20  # 5 calls would be only 0.5 s; 2 s needs 20
    assert t.wall_s == pytest.approx(2.0)
    assert c.events.count("fn") == 23  # 3 warm-up calls are not timed
    assert t.times_s == pytest.approx([0.1] * 20)


def test_repeats_until_min_count_when_calls_are_slow():
    c = FakeClock(0.5)
    t = measure(c.fn, warmup=0, min_repeats=30, min_seconds=1.0, clock=c)
    assert t.repeats == 30
    assert t.wall_s == pytest.approx(15.0)


def test_max_bounds_stop_a_runaway_loop():
    c = FakeClock(1.0)
    assert measure(c.fn, warmup=0, min_repeats=1000, min_seconds=0, max_repeats=7, clock=c).repeats == 7
    c = FakeClock(1.0)
    assert measure(c.fn, warmup=0, min_repeats=1000, min_seconds=0, max_seconds=4.0, clock=c).repeats == 4


def test_sync_comes_before_every_clock_read():
    c = FakeClock(0.01)
    measure(c.fn, warmup=2, min_repeats=4, min_seconds=0, sync=c.sync, clock=c)
    ev = c.events
    reads = [i for i, e in enumerate(ev) if e == "clock"]
    assert len(reads) == 1 + 2 * 4  # start mark, then before and after each timed call
    for i in reads[1:]:
        assert ev[i - 1] == "sync"
    assert ev[:3] == ["fn", "fn", "sync"]  # warm-up, then the device is drained before timing starts


def test_time_once_syncs_both_ends():
    c = FakeClock(0.25)
    assert time_once(c.fn, sync=c.sync, clock=c) == pytest.approx(0.25)
    assert c.events == ["sync", "clock", "fn", "sync", "clock"]


def test_per_item_latency_and_throughput_divide_by_batch():
    t = Timing(times_s=[0.16, 0.32, 0.16, 0.16], warmup=1, wall_s=0.8)
    lat = t.per_item_ms(16)
    assert lat["p50"] == pytest.approx(10.0)
    assert lat["mean"] == pytest.approx(12.5)
    assert lat["p99"] == pytest.approx(np.percentile([10, 20, 10, 10], 99))
    assert t.throughput(16) == pytest.approx(64 / 0.8)
    assert math.isnan(Timing().throughput())


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        measure(lambda: None, min_repeats=-1)
