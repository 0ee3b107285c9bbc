"""The DynamoDB job store against moto's server: conditional writes, the spend guard, the index."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.aws import create_jobs_table
from s2v.adapters.store import JobStore, Limits
from s2v.model.jobs import Event, InputObject, Job, Status

NOW = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(moto_endpoint: str, unique: str, clock: Clock) -> JobStore:
    ddb = create_jobs_table(moto_endpoint, f"jobs-{unique}")
    return JobStore(ddb, f"jobs-{unique}", clock=clock)


def new_job(n: int = 0, *, created: float = NOW, status: Status = Status.RECEIVED) -> Job:
    return Job(job_id=f"job-{n:04d}", status=status, version=0, folder="talks", stem=f"s{n}",
               image=InputObject(f"inputs/talks/s{n}.png", "e1", 10),
               audio=InputObject(f"inputs/talks/s{n}.wav", "e2", 20),
               created_at=created, updated_at=created, estimated_cost_usd=0.15)


def test_creating_the_same_job_twice_keeps_the_first_and_returns_it(store: JobStore,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = store.create(new_job(1))
    reads: list[object] = []
    original = store._db.get_item
    monkeypatch.setattr(store._db, "get_item", lambda **kw: reads.append(kw) or original(**kw))
    second = store.create(new_job(1).with_changes(stem="other"))
    assert second.stem == first.stem == "s1"
    assert reads == []  # the failed put returned the stored job itself
    monkeypatch.undo()
    assert store.get("job-0001") == second


def test_a_transition_from_a_stale_version_is_a_no_op(store: JobStore) -> None:
    job = store.create(new_job(1))
    moved = store.transition(job, Event.FAIL, note="x")
    assert moved is not None and moved.status is Status.FAILED
    assert store.transition(job, Event.DEFER) is None  # stale version
    stored = store.get(job.job_id)
    assert stored and stored.status is Status.FAILED and stored.version == 1
    assert [h["status"] for h in stored.history] == ["RECEIVED", "FAILED"]


def test_concurrent_creates_and_admissions_of_one_job_elect_exactly_one_submitter(store: JobStore) -> None:
    limits = Limits(max_in_flight=10, daily_budget_usd=100)
    barrier = threading.Barrier(8)

    def race(_: int) -> bool:
        barrier.wait()
        job = store.create(new_job(7))
        if job.status is not Status.RECEIVED:
            return False
        admitted, _reason = store.admit(job, cost_usd=0.15, limits=limits)
        return admitted is not None

    for attempt in range(5):
        with ThreadPoolExecutor(8) as pool:
            wins = list(pool.map(race, range(8)))
        assert sum(wins) == 1, f"round {attempt}: {sum(wins)} submitters"
        stored = store.get("job-0007")
        assert stored and stored.status is Status.SUBMITTING
        store.transition(stored, Event.FAIL, note="reset")
        store._db.delete_item(TableName=store.table, Key={"job_id": {"S": "job-0007"}})
    assert store.guard_state(NOW).in_flight == 0


def _admit_all(store: JobStore, jobs: list[Job], limits: Limits) -> list[tuple[Job | None, str]]:
    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(lambda j: store.admit(j, cost_usd=0.5, limits=limits), jobs))


def test_in_flight_limit_holds_under_concurrent_admission_and_frees_on_completion(store: JobStore) -> None:
    jobs = [store.create(new_job(n)) for n in range(12)]
    results = _admit_all(store, jobs, Limits(max_in_flight=3, daily_budget_usd=1000))
    admitted = [j for j, _ in results if j]
    assert len(admitted) == 3
    assert all("in flight" in reason for j, reason in results if j is None)
    assert store.guard_state(NOW).in_flight == 3
    done = store.transition(admitted[0], Event.SUBMIT_ACCEPTED, provider_id="p")
    assert done
    store.transition(done, Event.PROVIDER_COMPLETED, output_url="https://x")
    assert store.guard_state(NOW).in_flight == 2


def test_daily_budget_is_never_exceeded_and_a_new_day_has_a_fresh_budget(store: JobStore, clock: Clock) -> None:
    jobs = [store.create(new_job(n)) for n in range(6)]
    results = _admit_all(store, jobs, Limits(max_in_flight=100, daily_budget_usd=1.0))
    assert sum(1 for j, _ in results if j) == 2  # 2 × $0.50
    assert all("budget" in reason for j, reason in results if j is None)
    assert store.guard_state(NOW).spent_today_usd == pytest.approx(1.0)
    clock.now = NOW + 86400
    waiting = [j for j, (a, _) in zip(jobs, results, strict=True) if a is None]
    admitted, _ = store.admit(store.get(waiting[0].job_id), cost_usd=0.5,  # type: ignore[arg-type]
                              limits=Limits(max_in_flight=100, daily_budget_usd=1.0))
    assert admitted is not None


def test_deferring_an_in_flight_job_refunds_its_reservation(store: JobStore) -> None:
    job = store.create(new_job(1))
    admitted, _ = store.admit(job, cost_usd=0.5, limits=Limits(max_in_flight=1, daily_budget_usd=1.0))
    assert admitted
    queued = store.transition(admitted, Event.DEFER, note="provider busy")
    assert queued and queued.status is Status.QUEUED
    state = store.guard_state(NOW)
    assert (state.in_flight, state.spent_today_usd) == (0, 0)


def test_the_due_index_returns_only_due_active_jobs_and_queued_jobs_oldest_first(
    store: JobStore, clock: Clock,
) -> None:
    wait: Callable[[Job, float], Job | None] = lambda j, t: store.touch(j, next_check_at=t)  # noqa: E731
    a, b, c = (store.create(new_job(n, created=NOW - 100 + n)) for n in range(3))
    wait(a, NOW - 5)
    wait(b, NOW + 500)
    failed = store.transition(c, Event.FAIL, note="bad")
    assert failed
    assert [j.job_id for j in store.due(NOW)] == [a.job_id]
    q_new = store.create(new_job(10, created=NOW - 10))
    q_old = store.create(new_job(11, created=NOW - 50))
    store.transition(q_new, Event.DEFER, note="wait")
    store.transition(q_old, Event.DEFER, note="wait")
    assert [j.job_id for j in store.queued()] == [q_old.job_id, q_new.job_id]
    assert {j.job_id for j in store.due(NOW + 1000)} == {a.job_id, b.job_id}


LIMITS = Limits(max_in_flight=10, daily_budget_usd=100)


def _submitting(store: JobStore, n: int) -> Job:
    admitted, _ = store.admit(store.create(new_job(n)), cost_usd=0.15, limits=LIMITS)
    assert admitted is not None
    return admitted


def test_touching_an_ended_job_keeps_the_cost_it_ended_with(store: JobStore) -> None:
    # Given a job refused by the provider: refunded, final cost 0
    failed = store.transition(_submitting(store, 1), Event.FAIL, note="refused", refund=True)
    assert failed and failed.final_cost_usd == 0.0
    # When its error report's key is recorded
    store.touch(failed, error_key="outputs/talks/s1.error.json")
    # Then it still cost nothing
    stored = store.get(failed.job_id)
    assert stored and stored.final_cost_usd == 0.0 and stored.error_key


def test_the_first_provider_id_a_job_gets_claims_the_task_for_it_alone(store: JobStore) -> None:
    a, b = _submitting(store, 1), _submitting(store, 2)
    accepted = store.transition(a, Event.SUBMIT_ACCEPTED, provider_id="task-1")
    assert accepted and store.task_holder("task-1") == a.job_id
    assert store.transition(b, Event.SUBMIT_ACCEPTED, provider_id="task-1") is None  # held by a
    assert store.get(b.job_id).provider_id == ""  # type: ignore[union-attr]
    assert store.task_holder("task-2") == ""


def test_adoption_is_exclusive_both_ways(store: JobStore) -> None:
    a, b = _submitting(store, 1), _submitting(store, 2)
    barrier = threading.Barrier(4)

    def adopt(job: Job) -> str:
        barrier.wait()
        return store.adopt(job, "task-1", note="found", reconciled_by="input urls")[1] or "adopted"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(adopt, [a, b, a, b]))
    assert outcomes.count("adopted") == 1, outcomes
    holder = store.task_holder("task-1")
    assert holder in (a.job_id, b.job_id)
    owner = store.get(holder)
    assert owner and owner.status is Status.SUBMITTED and owner.provider_id == "task-1"
    assert owner.reconciled_by == "input urls"
    # a job that holds a task never adopts a second one
    assert store.adopt(owner, "task-2", note="found")[0] is None
    stale_read = a if holder == a.job_id else b
    assert store.adopt(stale_read, "task-2", note="found") == (None, "changed")


def test_remember_once_lets_exactly_one_of_many_callers_through(store: JobStore) -> None:
    barrier = threading.Barrier(6)

    def claim(_: int) -> bool:
        barrier.wait()
        return store.remember_once("#event#test#2026-11-28", ttl_seconds=60)

    with ThreadPoolExecutor(6) as pool:
        assert sorted(pool.map(claim, range(6))) == [False] * 5 + [True]


@pytest.mark.parametrize("status", [Status.RECEIVED, Status.QUEUED, Status.SUBMITTING, Status.SUBMITTED,
                                    Status.PROCESSING, Status.COMPLETED])
def test_cancelling_frees_the_slot_of_a_job_in_flight_and_nothing_else(store: JobStore, status: Status) -> None:
    job = store.create(new_job(1))
    if status is Status.QUEUED:
        job = store.transition(job, Event.DEFER)  # type: ignore[assignment]
    if status not in (Status.RECEIVED, Status.QUEUED):
        job = store.admit(job, cost_usd=0.15, limits=LIMITS)[0]  # type: ignore[assignment]
    if status in (Status.SUBMITTED, Status.PROCESSING, Status.COMPLETED):
        job = store.transition(job, Event.SUBMIT_ACCEPTED, provider_id="t")  # type: ignore[assignment]
    if status in (Status.PROCESSING, Status.COMPLETED):
        job = store.transition(job, Event.PROVIDER_PROCESSING)  # type: ignore[assignment]
    if status is Status.COMPLETED:
        job = store.transition(job, Event.PROVIDER_COMPLETED)  # type: ignore[assignment]
    assert job.status is status
    in_flight = store.guard_state(NOW).in_flight
    cancelled = store.transition(job, Event.CANCEL, note="cancelled by test", cancelled_by="test")
    assert cancelled and cancelled.status is Status.CANCELLED
    assert store.guard_state(NOW).in_flight == in_flight - (1 if status in (
        Status.SUBMITTING, Status.SUBMITTED, Status.PROCESSING) else 0)
    assert store.transition(cancelled, Event.PROVIDER_COMPLETED) is None
    assert store.transition(cancelled, Event.FAIL) is None
    stored = store.get(job.job_id)
    assert stored and stored.status is Status.CANCELLED
    assert stored not in store.due(NOW + 10**6, limit=100) and stored not in store.queued(limit=100)
