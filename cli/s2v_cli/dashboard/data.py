"""What the dashboard's pages show, read through the jobs table's indexes (s2v_cli.queries).

Costs per page view: the jobs list is one query (a folder/name search reads chunks of keys, at most
READ_LIMIT jobs or SEARCH_SECONDS, then one BatchGetItem); one job is one GetItem; the overview is
two GetItems (the spend guard's in-flight counter and today's spend, always fresh), one COUNT query
per state (run side by side), two queries over the recent window (failures by code, render times
of the newest deliveries) and one BatchGetItem (30 days of spend). A COUNT reads every item of its
state (DynamoDB pages it by 1 MB), so the states jobs end in are counted again after ``ended_ttl``
seconds and active states (few items) after ``active_ttl``; a slow table stretches both (``_Cache``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from s2v.model.jobs import IN_FLIGHT, TERMINAL, Job, Status
from s2v_cli import views
from s2v_cli.queries import JobQueries
from s2v_cli.target import Target

T = TypeVar("T")
WINDOW_DAYS = 7  # failures by code and render times cover the jobs created this recently
FAILURES_LIMIT = 1000  # ... at most this many failures (newest first)
LATENCY_SAMPLE = 200  # ... and the render times of the newest deliveries
SPEND_DAYS = 30
PRESIGN_SECONDS = 900  # a video or portrait link made for the page is good for 15 minutes


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


@dataclass
class _Entry:
    value: Any = None
    done_at: float | None = None  # None: never computed
    took: float = 0.0
    running: Future[Any] | None = None


class _Cache:
    """Values computed in the background and kept ``ttl`` seconds, or three times as long as they took
    when that is longer (a slow table is not asked again and again). A reader waits for a fresh value
    until its deadline, then takes the last one (None before the first): a page never waits for long."""

    def __init__(self, clock: Callable[[], float], workers: int) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s2v-dashboard")

    def start(self, name: str, ttl: float, compute: Callable[[], Any]) -> Future[Any] | None:
        """Begin computing ``name`` unless a fresh value is kept or it is under way."""
        with self._lock:
            entry = self._entries.setdefault(name, _Entry())
            if entry.done_at is not None and self._clock() - entry.done_at < max(ttl, 3 * entry.took):
                return None
            if entry.running is None:
                entry.running = self._pool.submit(self._compute, entry, compute)
            return entry.running

    def get(self, name: str, ttl: float, compute: Callable[[], T], *, deadline: float) -> T | None:
        running = self.start(name, ttl, compute)
        if running is not None:
            # Still computing at the deadline: the last value now, the fresh one on the next refresh.
            with contextlib.suppress(FuturesTimeout):
                running.result(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            return self._entries[name].value  # type: ignore[no-any-return]

    def _compute(self, entry: _Entry, compute: Callable[[], Any]) -> None:
        began = self._clock()
        try:
            value = compute()
        finally:
            with self._lock:
                entry.running = None
        with self._lock:
            entry.value, entry.done_at, entry.took = value, self._clock(), self._clock() - began


@dataclass(frozen=True)
class FailureCount:
    code: str
    stage: str
    count: int
    example: str  # the newest reason with this code


@dataclass(frozen=True)
class Overview:
    """None where a figure is still being read (the page shows it on a later refresh)."""

    counts: dict[Status, int | None]
    in_flight: int
    max_in_flight: int | None
    day: str
    spent_today: float
    budget: float | None
    spend_days: list[tuple[str, float]] | None  # oldest first, SPEND_DAYS of them, today last
    failures: list[FailureCount] | None  # most frequent first, over the window
    render_p50: float | None
    render_p90: float | None
    total_p50: float | None  # drop to delivered
    total_p90: float | None
    delivered_in_window: int | None
    window_days: int = WINDOW_DAYS
    read_at: float = field(default_factory=time.time)

    @property
    def complete(self) -> bool:
        return None not in (*self.counts.values(), self.spend_days, self.failures, self.delivered_in_window)

    @property
    def total(self) -> int | None:
        return None if None in self.counts.values() else sum(n or 0 for n in self.counts.values())

    @property
    def in_flight_by_records(self) -> int | None:
        counts = [self.counts.get(s) for s in IN_FLIGHT]
        return None if None in counts else sum(n or 0 for n in counts)


class DashboardData:
    def __init__(self, target: Target, *, clock: Callable[[], float] = time.time,
                 active_ttl: float = 2.0, ended_ttl: float = 10.0, wait_seconds: float = 2.5) -> None:
        self.target = target
        self.queries = JobQueries(target.client("dynamodb"), target.table)
        self._clock = clock
        self._cache = _Cache(clock, workers=8)  # botocore keeps 10 connections per client
        self.active_ttl, self.ended_ttl, self.wait_seconds = active_ttl, ended_ttl, wait_seconds

    # --- the overview ----------------------------------------------------------------------------

    def overview(self) -> Overview:
        """Every figure is read side by side (one COUNT query per state, the two window queries, the
        spend days); the page waits at most ``wait_seconds`` for them, and shows any still being read
        on a later refresh."""
        now = self._clock()
        since = now - WINDOW_DAYS * 86400
        days = [(datetime.fromtimestamp(now, UTC) - timedelta(days=n)).strftime("%Y-%m-%d")
                for n in range(SPEND_DAYS - 1, -1, -1)]
        jobs: dict[str, tuple[float, Callable[[], Any]]] = {
            f"count:{s}": (self.ended_ttl if s in TERMINAL else self.active_ttl,
                           functools.partial(self.queries.count, s)) for s in Status}
        jobs["failures"] = (self.ended_ttl, lambda: self._failures(since))
        jobs["latency"] = (self.ended_ttl, lambda: self._latency(since))
        jobs[f"spend:{days[-1]}"] = (self.ended_ttl, lambda: self.queries.spend_by_day(days))
        guard = self.target.store.guard_state(now)  # always fresh: two GetItems
        for name, (ttl, compute) in jobs.items():
            self._cache.start(name, ttl, compute)
        deadline = time.monotonic() + self.wait_seconds
        got = {name: self._cache.get(name, ttl, compute, deadline=deadline) for name, (ttl, compute) in jobs.items()}
        render, total = got["latency"] or (None, None)
        spent = got[f"spend:{days[-1]}"]
        if spent is not None:
            spent = {**spent, guard.day: guard.spent_today_usd}  # today's from the fresh read
        limits = self.target.limits
        return Overview(
            counts={s: got[f"count:{s}"] for s in Status}, in_flight=guard.in_flight,
            max_in_flight=limits.max_in_flight, day=guard.day, spent_today=guard.spent_today_usd,
            budget=limits.daily_budget_usd,
            spend_days=[(d, round(spent.get(d, 0.0), 4)) for d in days] if spent is not None else None,
            failures=got["failures"], render_p50=percentile(render or [], 50), render_p90=percentile(render or [], 90),
            total_p50=percentile(total or [], 50), total_p90=percentile(total or [], 90),
            delivered_in_window=len(render) if render is not None else None, read_at=now,
        )

    def _failures(self, since: float) -> list[FailureCount]:
        items = self.queries.values(Status.FAILED, since=since, attributes=("failure",), limit=FAILURES_LIMIT)
        counts: Counter[tuple[str, str]] = Counter()
        example: dict[tuple[str, str], str] = {}
        for item in items:  # newest first
            failure = item.get("failure") or {}
            key = (str(failure.get("code") or "unknown"), str(failure.get("stage") or ""))
            counts[key] += 1
            example.setdefault(key, str(failure.get("reason") or ""))
        return [FailureCount(code, stage, n, example[(code, stage)]) for (code, stage), n in counts.most_common()]

    def _latency(self, since: float) -> tuple[list[float], list[float]]:
        items = self.queries.values(Status.DELIVERED, since=since, attributes=("render_seconds", "created_at",
                                                                                "delivered_at"), limit=LATENCY_SAMPLE)
        render = [float(i["render_seconds"]) for i in items if i.get("render_seconds")]
        total = [float(i["delivered_at"]) - float(i["created_at"]) for i in items
                 if i.get("delivered_at") and i.get("created_at")]
        return render, total

    # --- one job ---------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        if len(job_id) != 32 or not all(c in "0123456789abcdef" for c in job_id):
            return None
        return self.target.store.get(job_id)

    def segments(self, parent: Job) -> list[Job]:
        """A long talk's segment jobs, in talk order (each attempt of a re-rendered one)."""
        from s2v_cli.queries import segments_of

        return list(segments_of(self.target.store, parent))

    def presigned(self, key: str, *, content_type: str = "") -> str:
        params: dict[str, Any] = {"Bucket": self.target.bucket, "Key": key}
        if content_type:
            params["ResponseContentType"] = content_type
        return str(self.target.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS))


# --- shaping for the templates -----------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    status: str
    at: str  # UTC time
    elapsed: str  # since the job was created
    note: str


def timeline(job: Job) -> list[Step]:
    return [Step(status, at, elapsed, note) for at, elapsed, status, note in views.history_rows(job)]


def utc_day_bounds(day: str, *, end: bool) -> float | None:
    """``2025-11-20`` as the Unix time its UTC day starts (or ends); None for no or a bad date."""
    if not day:
        return None
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return start + 86400 - 0.000001 if end else start
