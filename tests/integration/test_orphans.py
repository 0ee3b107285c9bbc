"""An orphaned RECEIVED job (its ingest died after recording it) is sent back through the ingest
queue, where ingest's limits, retries and dead-letter queue apply: the poller never validates it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpers.flow import Flow, make_flow
from s2v.flows import ingest, poll
from s2v.flows.ingest import ORPHAN_AFTER_SECONDS
from s2v.flows.resume import RESUME_MESSAGE
from s2v.model.jobs import Job, Status
from s2v_local import samples
from s2v_local.emulator import Emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=600) as em:
        yield em


class IngestDied(Exception):
    pass


def orphan(flow: Flow, monkeypatch: pytest.MonkeyPatch, stem: str) -> Job:
    """A pair whose ingest was killed right after it recorded the job."""
    flow.put(f"inputs/talks/{stem}.png", samples.portrait_png(96, 96))
    flow.put(f"inputs/talks/{stem}.wav", samples.speech_wav(1.0))
    with monkeypatch.context() as patched:
        patched.setattr(ingest, "process_received", lambda job, deps, **kwargs: (_ for _ in ()).throw(IngestDied()))
        with pytest.raises(IngestDied):
            flow.ingest(f"inputs/talks/{stem}.wav")
    [job] = flow.jobs()
    assert job.status is Status.RECEIVED
    return job


def queued_messages(flow: Flow) -> list[dict]:  # type: ignore[type-arg]
    sqs, url = flow.deps.sqs, flow.deps.settings.ingest_queue_url
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
    return [json.loads(m["Body"]) for m in found]


def test_the_poller_sends_an_orphaned_job_to_the_ingest_queue_instead_of_validating_it(
        moto_endpoint: str, unique: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job left RECEIVED by an ingest that died, now past the orphan wait
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    job = orphan(flow, monkeypatch, "orphan")
    flow.clock.advance(ORPHAN_AFTER_SECONDS)

    # When the poller runs (where validating would be a fault: no media is ever read there)
    def validated_in_the_poller(job: Job, deps: object) -> None:
        raise AssertionError("the poller validated a job inline")

    with monkeypatch.context() as patched:
        patched.setattr(ingest, "validate", validated_in_the_poller)
        report = poll.run(flow.deps)
        # Then the job is sent back to ingest, once: the next run finds it not due again
        assert report.checked["requeued"] == 1 and report.errors == 0
        assert poll.run(flow.deps).checked["requeued"] == 0
    assert queued_messages(flow) == [{RESUME_MESSAGE: {"job_id": job.job_id}}]
    after = flow.job(job.job_id)
    assert after.status is Status.RECEIVED and after.next_check_at >= flow.clock() + ORPHAN_AFTER_SECONDS

    # And ingest, reading the message, validates and submits it like an upload
    assert flow.drain_ingest() == 1
    assert flow.job(job.job_id).status is Status.SUBMITTED


def test_a_resume_message_for_a_job_that_moved_on_is_a_no_op(
        moto_endpoint: str, unique: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    job = orphan(flow, monkeypatch, "twice")
    before = emulator.submission_count
    flow.clock.advance(ORPHAN_AFTER_SECONDS)
    poll.run(flow.deps)
    # The S3 event is redelivered meanwhile and ingest completes the job itself
    assert flow.ingest("inputs/talks/twice.wav").outcome == "submitted"
    assert flow.drain_ingest() == 1
    assert flow.job(job.job_id).status is Status.SUBMITTED
    assert emulator.submission_count == before + 1
