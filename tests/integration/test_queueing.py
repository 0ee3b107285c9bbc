"""Jobs over the in-flight limit wait as QUEUED and are released oldest first by the poller."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.flow import Flow, make_flow
from s2v.deps import Deps
from s2v.flows import poll
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0.2) as em:
        yield em


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_IN_FLIGHT_JOBS="1")


def drop(flow: Flow, stem: str) -> str:
    flow.put(f"inputs/q/{stem}.png", samples.portrait_png(96, 96))
    flow.put(f"inputs/q/{stem}.wav", samples.speech_wav(0.6))
    return flow.ingest(f"inputs/q/{stem}.wav").job_id


def test_jobs_over_the_limit_queue_and_are_released_oldest_first(flow: Flow, emulator: Emulator) -> None:
    before = emulator.submission_count
    ids = [drop(flow, f"s{n}") for n in range(3)]
    statuses = [flow.job(i).status for i in ids]
    assert statuses == [Status.SUBMITTED, Status.QUEUED, Status.QUEUED]
    assert "MaxInFlightJobs" in flow.job(ids[1]).queue_reason
    released: list[str] = []
    deadline = time.monotonic() + 30
    while not all(flow.job(i).status is Status.COMPLETED for i in ids):
        assert time.monotonic() < deadline, [flow.job(i).status for i in ids]
        in_flight = [i for i in ids if flow.job(i).status in (Status.SUBMITTING, Status.SUBMITTED,
                                                               Status.PROCESSING)]
        assert len(in_flight) <= 1
        for i in in_flight:
            if i not in released:
                released.append(i)
        flow.clock.advance(5)
        poll.run(flow.deps)
        time.sleep(0.1)
    assert released == ids  # oldest first
    assert emulator.submission_count - before == 3
    versions = [flow.job(i).version for i in ids]
    assert max(versions) < 12  # waiting does not rewrite a queued job on every poll


def _one_freed_slot_and_one_queued_job(flow: Flow, emulator: Emulator) -> str:
    """s0 renders and leaves the provider (its slot is free), s1 waits in the queue; nothing released yet."""
    first, queued = drop(flow, "s0"), drop(flow, "s1")
    assert flow.job(queued).status is Status.QUEUED
    emulator.wait_for_task(flow.job(first).provider_id)
    assert poll.check(flow.job(first), flow.deps) == "completed"  # a check alone does not release
    return queued


def test_a_releaser_that_loses_the_race_for_a_queued_job_counts_it_raced_not_released(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a scheduled run and a stream-triggered release that both read the same queued job
    queued = _one_freed_slot_and_one_queued_job(flow, emulator)
    before = emulator.submission_count
    stale = flow.deps.store.queued(limit=50)
    other = Deps(flow.deps.settings, clock=flow.clock, client_factory=flow.deps.client_factory)
    # When the stream-triggered one admits it first
    winner = poll.release_freed_slots(other)
    # Then the scheduled one, acting on its earlier read, reports the job raced, not released
    monkeypatch.setattr(flow.deps.store, "queued", lambda limit=50: stale)
    loser = poll.PollReport()
    poll.release_queued(flow.deps, loser, limit=50)
    assert winner.checked == {"released": 1}
    assert loser.checked == {"raced": 1}
    assert flow.job(queued).status is Status.SUBMITTED and emulator.submission_count - before == 1


def test_racing_releasers_count_each_queued_job_released_once(flow: Flow, emulator: Emulator) -> None:
    queued = _one_freed_slot_and_one_queued_job(flow, emulator)
    before = emulator.submission_count
    containers = [Deps(flow.deps.settings, clock=flow.clock, client_factory=flow.deps.client_factory)
                  for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)

    def release(deps: Deps) -> poll.PollReport:
        barrier.wait()
        return poll.release_freed_slots(deps)

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(release, containers))
    released = sum(r.checked["released"] for r in reports)
    assert released == 1, [r.checked for r in reports]
    assert all(set(r.checked) <= {"released", "raced", "still_queued"} for r in reports)
    assert flow.job(queued).status is Status.SUBMITTED and emulator.submission_count - before == 1


def test_a_fresh_upload_queues_behind_waiting_jobs_without_querying_them_and_takes_a_slot_once_none_wait(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a freed slot and one job still waiting for it (the guard's hint says so)
    queued = _one_freed_slot_and_one_queued_job(flow, emulator)
    real_queued = flow.deps.store.queued
    monkeypatch.setattr(flow.deps.store, "queued", lambda limit=50: pytest.fail("queried the queue"))
    # When a fresh pair arrives: it does not jump the queue, and it asked no query to know
    fresh = drop(flow, "s2")
    assert flow.job(fresh).status is Status.QUEUED
    assert "older jobs are waiting" in flow.job(fresh).queue_reason
    # When the poller releases the waiting jobs (oldest first) and then finds none left
    monkeypatch.setattr(flow.deps.store, "queued", real_queued)
    assert poll.release_freed_slots(flow.deps).checked["released"] == 1
    assert flow.job(queued).status is not Status.QUEUED
    for job_id in (queued, fresh):  # each renders in turn in the one slot
        if flow.job(job_id).status is Status.QUEUED:
            poll.release_freed_slots(flow.deps)
        emulator.wait_for_task(flow.job(job_id).provider_id)
        assert poll.check(flow.job(job_id), flow.deps) == "completed"
    poll.release_freed_slots(flow.deps)  # the queue is empty: the hint is cleared
    assert flow.deps.store.queued_hint() is None
    # Then a fresh upload takes a free slot at once
    later = drop(flow, "s3")
    assert flow.job(later).status is Status.SUBMITTED, flow.job(later).queue_reason
