"""Jobs over the in-flight limit wait as QUEUED and are released oldest first by the poller."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from helpers.flow import Flow, make_flow
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
