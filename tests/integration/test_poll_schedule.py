"""The poller checks every job whose next check falls before the midpoint to its next run.

With the template's defaults (a run every 60 s, per-job checks at most 60 s apart), a job checked
a moment into one run is due a moment after the next run starts: checking strictly "due by now"
made such jobs wait a second minute, doubling the poll path's latency.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.flow import Flow, make_flow
from s2v.flows import poll
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=600) as em:  # stays processing
        yield em


def submitted_job(flow: Flow, stem: str) -> str:
    flow.put(f"inputs/talks/{stem}.png", samples.portrait_png(96, 96))
    flow.put(f"inputs/talks/{stem}.wav", samples.speech_wav(0.5))
    result = flow.ingest(f"inputs/talks/{stem}.wav")
    assert result.outcome == "submitted", result
    return result.job_id


def checks_after_run(flow: Flow, job_id: str, next_check_in: float) -> int:
    job = flow.job(job_id)
    assert job.status in (Status.SUBMITTED, Status.PROCESSING)
    flow.deps.store.touch(job, next_check_at=flow.clock() + next_check_in)
    before = flow.job(job_id).check_count
    poll.run(flow.deps)
    return flow.job(job_id).check_count - before


def test_a_job_due_before_the_midpoint_to_the_next_run_is_checked_now(
        moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url, S2V_POLL_SCHEDULE_SECONDS="60")
    job_id = submitted_job(flow, "soon")
    assert checks_after_run(flow, job_id, next_check_in=0.4) == 1  # the case that used to wait a minute
    assert checks_after_run(flow, job_id, next_check_in=29) == 1
    assert checks_after_run(flow, job_id, next_check_in=31) == 0  # nearer the next run: left to it


def test_without_a_schedule_only_jobs_due_now_are_checked(moto_endpoint: str, unique: str,
                                                          emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    job_id = submitted_job(flow, "exact")
    assert checks_after_run(flow, job_id, next_check_in=0.4) == 0
    assert checks_after_run(flow, job_id, next_check_in=0) == 1
