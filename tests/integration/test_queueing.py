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
