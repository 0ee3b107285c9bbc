"""The dashboard's pure parts: percentiles, UTC day bounds, and the background cache's timing rules."""

from __future__ import annotations

import threading
import time

import pytest

from s2v_cli.dashboard.data import _Cache, percentile, utc_day_bounds


def test_percentiles_are_nearest_rank_and_none_without_values() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 100)) == (5.0, 9.0, 10.0)
    assert percentile(list(reversed(values)), 50) == 5.0


def test_a_utc_day_is_bounded_from_its_first_to_its_last_moment_and_a_bad_date_is_no_bound() -> None:
    start = utc_day_bounds("2026-01-02", end=False)
    end = utc_day_bounds("2026-01-02", end=True)
    assert start == 1767312000.0 and end is not None and 86399.9 < end - start < 86400
    assert utc_day_bounds("", end=False) is None and utc_day_bounds("yesterday", end=True) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_kept_for_its_ttl_then_read_again() -> None:
    clock, calls = Clock(), []
    cache = _Cache(clock, workers=2)

    def read() -> int:
        calls.append(clock.now)
        return len(calls)

    far = time.monotonic() + 5
    assert cache.get("n", 10, read, deadline=far) == 1
    clock.now += 9
    assert cache.get("n", 10, read, deadline=far) == 1 and len(calls) == 1
    clock.now += 2
    assert cache.get("n", 10, read, deadline=far) == 2


def test_a_slow_read_is_kept_three_times_as_long_as_it_took() -> None:
    clock = Clock()
    cache = _Cache(clock, workers=1)

    def slow() -> str:
        clock.now += 20  # took 20 s
        return "counted"

    cache.get("n", 10, slow, deadline=time.monotonic() + 5)
    clock.now += 55
    assert cache.start("n", 10, slow) is None  # still fresh: 3 x 20 s
    clock.now += 10
    assert cache.start("n", 10, slow) is not None


def test_a_reader_waits_only_until_its_deadline_and_gets_the_value_on_a_later_read() -> None:
    cache, release = _Cache(time.time, workers=1), threading.Event()

    def blocked() -> str:
        release.wait(5)
        return "done"

    started = time.monotonic()
    assert cache.get("n", 10, blocked, deadline=started + 0.2) is None
    assert time.monotonic() - started < 1
    release.set()
    assert cache.get("n", 10, blocked, deadline=time.monotonic() + 5) == "done"


def test_a_failed_read_reaches_the_reader_and_is_tried_again() -> None:
    cache, calls = _Cache(time.time, workers=1), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("AWS said no")
        return "ok"

    with pytest.raises(RuntimeError, match="AWS said no"):
        cache.get("n", 10, flaky, deadline=time.monotonic() + 5)
    assert cache.get("n", 10, flaky, deadline=time.monotonic() + 5) == "ok"
