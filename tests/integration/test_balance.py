"""The provider balance as a pre-check: a job the balance cannot pay for waits QUEUED (one
"Balance low" event a UTC day), is released like any queued job once the balance suffices, and a
failing balance endpoint never blocks work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.events import event_bus
from helpers.flow import Flow, make_flow
from s2v.flows import poll
from s2v.flows.submission import BALANCE_CACHE_SECONDS, forget_balance
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator, Faults

ESTIMATE = 0.09  # a 0.6 s clip at 480p: 3 billed seconds at $0.03


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0, balance=0.05) as running:
        yield running


@pytest.fixture
def events(moto_endpoint: str, unique: str) -> Any:
    return event_bus(moto_endpoint, unique)


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator, events: Any) -> Iterator[Flow]:
    forget_balance()
    yield make_flow(moto_endpoint, unique, emulator.base_url, S2V_EVENT_BUS=events[0], S2V_MAX_IN_FLIGHT_JOBS="10")
    forget_balance()


def drop(flow: Flow, stem: str) -> str:
    flow.put(f"inputs/b/{stem}.png", samples.portrait_png(64, 64))
    flow.put(f"inputs/b/{stem}.wav", samples.speech_wav(0.6))
    return flow.ingest(f"inputs/b/{stem}.wav").job_id


def balance_low(events: Any) -> list[dict[str, Any]]:
    return [e for e in events[1]() if e["detail-type"] == "Balance low"]


def test_a_balance_below_the_estimate_queues_the_job_and_a_sufficient_one_releases_it(
        flow: Flow, emulator: Emulator, events: Any) -> None:
    # Given a balance of $0.05 and a job estimated at $0.09
    before = emulator.submission_count
    job = flow.job(drop(flow, "alice"))
    # Then it waits, saying why, and nothing was sent
    assert job.status is Status.QUEUED
    assert job.queue_reason == f"provider balance $0.05 is below this job's estimate ${ESTIMATE:.2f}"
    assert emulator.submission_count == before
    assert flow.deps.store.guard_state(flow.clock()).in_flight == 0
    sent = balance_low(events)
    assert len(sent) == 1 and sent[0]["detail"]["balance_usd"] == 0.05 and sent[0]["detail"]["job_id"] == job.job_id

    # When the poller runs while the balance is still low: still waiting, no second event
    flow.clock.advance(BALANCE_CACHE_SECONDS + 1)
    report = poll.run(flow.deps)
    assert report.checked["still_queued"] == 1 and flow.job(job.job_id).status is Status.QUEUED
    assert balance_low(events) == []

    # When the account is topped up, the next run (after the cached minute) releases it
    emulator.balance = 10.0
    report = poll.run(flow.deps)
    assert flow.job(job.job_id).status is Status.QUEUED  # the balance read a moment ago is still cached
    flow.clock.advance(BALANCE_CACHE_SECONDS + 1)
    report = poll.run(flow.deps)
    assert report.checked["released"] == 1, report
    assert flow.job(job.job_id).status is Status.SUBMITTED
    assert emulator.submission_count - before == 1


def test_one_balance_low_event_a_utc_day(flow: Flow, events: Any) -> None:
    drop(flow, "alice")
    flow.clock.advance(BALANCE_CACHE_SECONDS + 1)
    drop(flow, "bob")  # queued behind alice: no balance check, no event
    poll.run(flow.deps)
    assert len(balance_low(events)) == 1
    flow.clock.advance(86400)
    poll.run(flow.deps)  # a new UTC day, still too low
    assert len(balance_low(events)) == 1


def test_a_failing_balance_endpoint_never_blocks_work(flow: Flow, emulator: Emulator, events: Any) -> None:
    emulator.faults = Faults(balance_500=10_000)
    job = flow.job(drop(flow, "alice"))
    assert job.status is Status.SUBMITTED, (job.status, job.queue_reason)
    assert balance_low(events) == []


def test_the_balance_is_read_at_most_once_a_minute_per_container(flow: Flow, emulator: Emulator,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.balance = 10.0
    calls = []
    real = flow.deps.provider.balance
    monkeypatch.setattr(flow.deps.provider, "balance", lambda: calls.append(1) or real())
    for stem in ("a", "b", "c"):
        assert flow.job(drop(flow, stem)).status is Status.SUBMITTED
    assert len(calls) == 1
    flow.clock.advance(BALANCE_CACHE_SECONDS + 1)
    drop(flow, "d")
    assert len(calls) == 2


def test_jobs_admitted_within_the_cached_minute_are_subtracted_from_the_balance(
        flow: Flow, emulator: Emulator) -> None:
    # Given a balance that pays for one job but not two, read once for the minute
    emulator.balance = 0.15
    first = flow.job(drop(flow, "alice"))
    assert first.status is Status.SUBMITTED
    # When a second job comes within the same minute
    second = flow.job(drop(flow, "bob"))
    # Then the first job's estimate counts against the cached balance: the second waits
    assert second.status is Status.QUEUED, second.status
    left = 0.15 - ESTIMATE
    assert second.queue_reason == f"provider balance ${left:.2f} is below this job's estimate ${ESTIMATE:.2f}"


def test_admissions_within_the_cached_minute_read_no_spend_counter(flow: Flow, emulator: Emulator,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a balance that pays for every job, read with the day's spend counter by the first admission
    emulator.balance = 10.0
    reads: list[str] = []
    real = flow.deps.store.spent_on
    monkeypatch.setattr(flow.deps.store, "spent_on", lambda day: reads.append(day) or real(day))
    # When three jobs are admitted within the cached minute
    for stem in ("a", "b", "c"):
        assert flow.job(drop(flow, stem)).status is Status.SUBMITTED
    # Then the counter was read once, with the balance: the admit transaction holds the later ones to it
    assert len(reads) == 1
