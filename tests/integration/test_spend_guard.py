"""The spend guard on the real JobStore over moto's server, under bursts and random completion order.

Given many jobs arriving at once (each admitted or queued from its own thread), renders that end in
random order (delivered, failed, or refused by a busy provider and put back in the queue), and
overlapping poller runs releasing queued jobs oldest first, the guard must never let more jobs be
in flight than MaxInFlightJobs nor reserve more than DailyBudgetUSD in a UTC day, and every job
must end. A monitor thread checks the limits continuously (moto's DynamoDB is serialized, so each
scan is a consistent snapshot); the steps check them again, exactly, when nothing is moving.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from helpers.aws import create_jobs_table
from s2v.adapters.store import JobStore, Limits, utc_day
from s2v.model.jobs import IN_FLIGHT, TERMINAL, Event, Failure, InputObject, Job, Status

pytestmark = pytest.mark.slow  # moto copies the whole table for every transaction item

DAY_ONE_EVENING = datetime(2026, 3, 9, 21, 0, tzinfo=UTC).timestamp()
MAX_ROUNDS = 400


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY_ONE_EVENING)


@pytest.fixture
def store(moto_endpoint: str, unique: str, clock: Clock) -> JobStore:
    table = f"guard-{unique}"
    return JobStore(create_jobs_table(moto_endpoint, table), table, clock=clock)


@dataclass(frozen=True)
class Row:
    status: Status
    next_check_at: float


def snapshot(store: JobStore) -> dict[str, Row]:
    """Every job's status, from one scan that reads only what the checks need. moto serializes
    DynamoDB requests, so a one-page scan is a consistent snapshot of the table."""
    page = store._db.scan(TableName=store.table, ProjectionExpression="job_id, #s, next_check_at",
                          ExpressionAttributeNames={"#s": "status"})
    assert "LastEvaluatedKey" not in page
    return {item["job_id"]["S"]: Row(Status(item["status"]["S"]), float(item.get("next_check_at", {}).get("N", 0)))
            for item in page["Items"] if not item["job_id"]["S"].startswith("#")}


def new_job(n: int, cost: float, created: float) -> Job:
    return Job(job_id=f"burst-{n:03d}", status=Status.RECEIVED, version=0, folder="burst", stem=f"clip{n}",
               image=InputObject(f"inputs/burst/clip{n}.png", f"i{n}", 1000),
               audio=InputObject(f"inputs/burst/clip{n}.wav", f"a{n}", 2000),
               created_at=created, updated_at=created, estimated_cost_usd=cost)


class Simulation:
    """Ingest, provider and poller reduced to the store calls they make, in the same order."""

    def __init__(self, store: JobStore, limits: Limits, rng: random.Random, clock: Clock) -> None:
        self.store, self.limits, self.rng, self.clock = store, limits, rng, clock

    def arrive(self, job: Job) -> None:
        """Ingest: record the job, admit it or queue it with the reason."""
        job = self.store.create(job)
        admitted, reason = self.store.admit(job, cost_usd=job.estimated_cost_usd, limits=self.limits)
        if admitted is None and reason:
            assert self.store.transition(job, Event.DEFER, note=f"waiting: {reason}", queue_reason=reason)

    def finish(self, job_id: str, outcome: float, delay: float) -> None:
        """The provider's answer for one in-flight job: busy (back to the queue), failed, or rendered."""
        time.sleep(delay)  # shuffles the order in which the threads' writes land
        job = self.store.get(job_id)
        assert job is not None and job.status is Status.SUBMITTING
        if outcome < 0.15:  # 429 before acceptance: certain, so the slot and the money come back
            assert self.store.transition(job, Event.DEFER, note="provider busy", queue_reason="provider busy")
            return
        submitted = self.store.transition(job, Event.SUBMIT_ACCEPTED, provider_id=f"p-{job_id}",
                                          submitted_at=self.clock())
        assert submitted is not None
        if outcome < 0.35:
            failure = Failure(stage="render", code="provider_failed", reason="render failed")
            assert self.store.transition(submitted, Event.FAIL, note="failed", failure=failure)
            return
        completed = self.store.transition(submitted, Event.PROVIDER_COMPLETED, output_url="https://x/v.mp4")
        assert completed is not None
        assert self.store.transition(completed, Event.DELIVERED, output_key=f"outputs/burst/{job.stem}.mp4")

    def release(self) -> None:
        """One poller run: admit queued jobs oldest first until a limit says wait."""
        for job in self.store.queued():
            admitted, reason = self.store.admit(job, cost_usd=job.estimated_cost_usd, limits=self.limits)
            if admitted is None and reason:
                break  # everything younger waits too

    def release_concurrently(self, runs: int = 2) -> None:
        with ThreadPoolExecutor(runs) as pool:
            list(pool.map(lambda _: self.release(), range(runs)))

    def finish_some_concurrently(self, jobs: dict[str, Row]) -> int:
        in_flight = sorted(job_id for job_id, row in jobs.items() if row.status is Status.SUBMITTING)
        chosen = self.rng.sample(in_flight, self.rng.randint(1, len(in_flight))) if in_flight else []
        answers = [(job_id, self.rng.random(), self.rng.random() / 200) for job_id in chosen]
        with ThreadPoolExecutor(max(1, len(chosen))) as pool:
            list(pool.map(lambda answer: self.finish(*answer), answers))
        return len(chosen)


def queue_order(jobs: dict[str, Row]) -> list[str]:
    """The queue as the poller reads it: by ``next_check_at``, which a queued job sets to its age."""
    return sorted((j for j, row in jobs.items() if row.status is Status.QUEUED), key=lambda j: jobs[j].next_check_at)


def check_limits(store: JobStore, limits: Limits, now: float, *, settled: bool) -> dict[str, Row]:
    jobs = snapshot(store)
    guard = store.guard_state(now)
    in_flight = sum(1 for row in jobs.values() if row.status in IN_FLIGHT)
    assert in_flight <= limits.max_in_flight, f"{in_flight} jobs in flight, limit {limits.max_in_flight}"
    assert guard.in_flight <= limits.max_in_flight
    assert guard.spent_today_usd <= limits.daily_budget_usd + 1e-9, f"{guard.day}: ${guard.spent_today_usd}"
    if settled:
        assert guard.in_flight == in_flight
    return jobs


@contextmanager
def monitored(store: JobStore, limits: Limits, clock: Callable[[], float]) -> Iterator[list[int]]:
    """Check the limits continuously while the body runs; yields the list of observations made."""
    stop = threading.Event()
    seen: list[int] = []
    problems: list[BaseException] = []

    def watch() -> None:
        while not stop.is_set():
            try:
                check_limits(store, limits, clock(), settled=False)
                seen.append(1)
            except BaseException as exc:  # reported in the test's thread below
                problems.append(exc)
                return
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, name="guard-monitor", daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join(timeout=10)
    if problems:
        raise problems[0]


def run_until_done(sim: Simulation, clock: Clock, *, new_day: Callable[[dict[str, Row]], None] | None = None
                   ) -> int:
    """Finish some, release queued jobs, check; when nothing is in flight and jobs still wait, only a
    new day may help (``new_day``). Checks the release order every round. Returns the rounds taken."""
    jobs = check_limits(sim.store, sim.limits, clock(), settled=True)
    for rounds in range(1, MAX_ROUNDS + 1):
        sim.finish_some_concurrently(jobs)
        before = queue_order(check_limits(sim.store, sim.limits, clock(), settled=True))
        sim.release_concurrently()
        jobs = check_limits(sim.store, sim.limits, clock(), settled=True)
        still = set(queue_order(jobs))
        released = [j for j in before if j not in still]
        assert released == before[:len(released)], f"released {released} from the queue {before}"
        if all(row.status in TERMINAL for row in jobs.values()):
            return rounds
        if not any(row.status in IN_FLIGHT for row in jobs.values()):
            assert new_day is not None, "jobs wait with nothing in flight, and the budget is not the reason"
            new_day(jobs)
            jobs = check_limits(sim.store, sim.limits, clock(), settled=True)
    raise AssertionError(f"jobs still not finished after {MAX_ROUNDS} rounds")


def burst(sim: Simulation, jobs: list[Job], threads: int = 12) -> None:
    barrier = threading.Barrier(threads)

    def arrive_all(share: list[Job]) -> None:
        barrier.wait()
        for job in share:
            sim.arrive(job)

    shares = [jobs[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(arrive_all, shares))


def test_a_burst_never_has_more_jobs_in_flight_than_the_limit_and_every_job_finishes(
    store: JobStore, clock: Clock,
) -> None:
    # Given 24 jobs arriving at once with room for 3 at a time and a budget that never binds
    limits = Limits(max_in_flight=3, daily_budget_usd=1000.0)
    sim = Simulation(store, limits, random.Random(1), clock)
    jobs = [new_job(n, 0.15, DAY_ONE_EVENING - 600 + n) for n in range(24)]
    with monitored(store, limits, clock) as observations:
        # When they are admitted from 12 threads, then finish in random order while pollers release
        burst(sim, jobs)
        after_burst = check_limits(store, limits, clock(), settled=True)
        rounds = run_until_done(sim, clock)
    # Then exactly the limit was taken at once, the rest waited, and all of them ended
    assert sum(1 for row in after_burst.values() if row.status is Status.SUBMITTING) == 3
    assert sum(1 for row in after_burst.values() if row.status is Status.QUEUED) == 21
    final = {j.job_id: j for j in store.scan_jobs()}
    assert set(final) == {j.job_id for j in jobs}
    assert all(j.status in TERMINAL for j in final.values())
    assert store.guard_state(clock()).in_flight == 0
    assert rounds >= 8 and len(observations) > 10  # it took many rounds, and the monitor watched them


def test_the_days_spend_never_exceeds_the_budget_and_queued_jobs_start_when_the_day_resets(
    store: JobStore, clock: Clock,
) -> None:
    # Given $1.00 a day, 4 slots and 16 jobs of mixed length arriving at once late in the evening
    limits = Limits(max_in_flight=4, daily_budget_usd=1.0)
    rng = random.Random(7)
    sim = Simulation(store, limits, rng, clock)
    jobs = [new_job(n, rng.choice([0.09, 0.15, 0.3]), DAY_ONE_EVENING - 600 + n) for n in range(16)]
    resets: list[tuple[str, int]] = []

    def new_day(jobs: dict[str, Row]) -> None:
        # Nothing in flight, and the oldest queued job does not fit in what is left of today's budget
        queued = queue_order(jobs)
        oldest = store.get(queued[0])
        assert oldest is not None
        assert store.guard_state(clock()).spent_today_usd + oldest.estimated_cost_usd > limits.daily_budget_usd
        clock.now = (int(clock.now // 86400) + 1) * 86400 + 5  # just after midnight UTC
        sim.release_concurrently()
        started = len(queued) - len(store.queued())
        assert started > 0, "queued jobs did not start when the day reset"
        resets.append((utc_day(clock.now), started))

    with monitored(store, limits, clock):
        # When they are admitted from 12 threads and run to the end, day after day
        burst(sim, jobs)
        run_until_done(sim, clock, new_day=new_day)
    # Then each day's reservations stayed within the budget, queued jobs waited for new days, all ended
    final = list(store.scan_jobs())
    assert all(j.status in TERMINAL for j in final)
    assert len(resets) >= 2, f"expected the budget to make jobs wait for new days, got {resets}"
    booked: dict[str, float] = defaultdict(float)
    for job in final:
        booked[job.admitted_day] += job.reserved_cost_usd
    for day, amount in booked.items():
        assert amount <= limits.daily_budget_usd + 1e-9, f"{day}: ${amount:.2f} booked"
        noon = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC).timestamp()
        assert store.guard_state(noon).spent_today_usd == pytest.approx(amount)
    assert store.guard_state(clock()).in_flight == 0
