"""What the dashboard's pages show, read through the jobs table's indexes (s2v_cli.queries).

Costs per page view: the jobs list is one query (more only when folder/name filters drop most of
what is read, bounded by ``READ_LIMIT``); one job is one GetItem; the overview is two GetItems
(the spend guard's in-flight counter and today's spend, always fresh), one COUNT query per state,
two queries over the recent window (failures, render times) and one BatchGetItem (30 days of
spend). Counts of the states jobs end in cover many items, so they are kept ``ended_ttl`` seconds;
active states are few items and are counted again after ``active_ttl``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from s2v.model.jobs import TERMINAL, Job, Status
from s2v_cli import views
from s2v_cli.queries import JobQueries
from s2v_cli.target import Target

T = TypeVar("T")
WINDOW_DAYS = 7  # failures by code and render times cover the jobs created this recently
WINDOW_LIMIT = 2000  # ... at most this many of each (newest first)
SPEND_DAYS = 30
PRESIGN_SECONDS = 900  # a video or portrait link made for the page is good for 15 minutes


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


class _Cache:
    """A value per name, kept for a while; one caller refreshes it while others wait for it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._values: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, ttl: float, compute: Callable[[], T]) -> T:
        with self._lock:
            now = self._clock()
            kept = self._values.get(name)
            if kept is not None and now - kept[0] < ttl:
                return kept[1]  # type: ignore[no-any-return]
            value = compute()
            self._values[name] = (self._clock(), value)
            return value


@dataclass(frozen=True)
class FailureCount:
    code: str
    stage: str
    count: int
    example: str  # the newest reason with this code


@dataclass(frozen=True)
class Overview:
    counts: dict[Status, int]
    in_flight: int
    max_in_flight: int | None
    day: str
    spent_today: float
    budget: float | None
    spend_days: list[tuple[str, float]]  # oldest first, SPEND_DAYS of them, today last
    failures: list[FailureCount]  # most frequent first, over the window
    render_p50: float | None
    render_p90: float | None
    total_p50: float | None  # drop to delivered
    total_p90: float | None
    delivered_in_window: int
    window_days: int = WINDOW_DAYS
    read_at: float = field(default_factory=time.time)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def in_flight_by_records(self) -> int:
        from s2v.model.jobs import IN_FLIGHT

        return sum(self.counts.get(s, 0) for s in IN_FLIGHT)


class DashboardData:
    def __init__(self, target: Target, *, clock: Callable[[], float] = time.time,
                 active_ttl: float = 2.0, ended_ttl: float = 10.0) -> None:
        self.target = target
        self.queries = JobQueries(target.client("dynamodb"), target.table)
        self._clock = clock
        self._cache = _Cache(clock)
        self.active_ttl, self.ended_ttl = active_ttl, ended_ttl

    # --- the overview ----------------------------------------------------------------------------

    def counts(self) -> dict[Status, int]:
        return {status: self._cache.get(f"count:{status}", self.ended_ttl if status in TERMINAL else self.active_ttl,
                                        functools.partial(self.queries.count, status)) for status in Status}

    def overview(self) -> Overview:
        now = self._clock()
        guard = self.target.store.guard_state(now)
        counts = self.counts()
        since = now - WINDOW_DAYS * 86400
        failures = self._cache.get("failures", self.ended_ttl, lambda: self._failures(since))
        render, total = self._cache.get("latency", self.ended_ttl, lambda: self._latency(since))
        days = [(datetime.fromtimestamp(now, UTC) - timedelta(days=n)).strftime("%Y-%m-%d")
                for n in range(SPEND_DAYS - 1, -1, -1)]
        spent = self._cache.get(f"spend:{days[-1]}", self.ended_ttl, lambda: self.queries.spend_by_day(days))
        spent = {**spent, guard.day: guard.spent_today_usd}  # today's from the fresh read
        limits = self.target.limits
        return Overview(
            counts=counts, in_flight=guard.in_flight, max_in_flight=limits.max_in_flight, day=guard.day,
            spent_today=guard.spent_today_usd, budget=limits.daily_budget_usd,
            spend_days=[(d, round(spent.get(d, 0.0), 4)) for d in days], failures=failures,
            render_p50=percentile(render, 50), render_p90=percentile(render, 90),
            total_p50=percentile(total, 50), total_p90=percentile(total, 90), delivered_in_window=len(render),
            read_at=now,
        )

    def _failures(self, since: float) -> list[FailureCount]:
        items = self.queries.values(Status.FAILED, since=since, attributes=("failure",), limit=WINDOW_LIMIT)
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
                                                                                "delivered_at"), limit=WINDOW_LIMIT)
        render = [float(i["render_seconds"]) for i in items if i.get("render_seconds")]
        total = [float(i["delivered_at"]) - float(i["created_at"]) for i in items
                 if i.get("delivered_at") and i.get("created_at")]
        return render, total

    # --- one job ---------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        if len(job_id) != 32 or not all(c in "0123456789abcdef" for c in job_id):
            return None
        return self.target.store.get(job_id)

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
