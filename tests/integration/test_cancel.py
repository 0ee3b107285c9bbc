"""Cancelling a job in every state it can be in, and what may arrive after (flows/cancel.py).

Each test drives the real core against moto's server and the WaveSpeed emulator. For every
cancel: the job ends CANCELLED with who and when, it is never delivered, a job at the provider
has its task deleted there, its provider slot is free, its cost is 0 if it never reached the
provider and its estimate otherwise, ``outputs/<folder>/<stem>.cancelled.json`` says so, and one
"Job cancelled" event is sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import s2v.flows.outputs
from helpers.crash import Crash, crash_after
from helpers.events import event_bus
from helpers.flow import Flow, make_flow
from s2v.adapters.providers.wavespeed import MODEL, Prediction, sign_webhook
from s2v.flows import deliver, poll
from s2v.flows.cancel import DELETED, IN_FLIGHT, NOT_LISTED, NOT_SENT, cancel
from s2v.flows.status import apply_prediction
from s2v.flows.webhook import handle_callback
from s2v.model.errors import InputError, SubmitOutcomeUnknown
from s2v.model.jobs import Job, Status
from s2v.model.outputs import REPORT
from s2v_local import samples
from s2v_local.emulator import Emulator, Faults

API_KEY = "flow-test-key"
WHO = "alice@laptop"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(emulator: Emulator) -> Iterator[None]:
    emulator.faults, emulator.render_seconds = Faults(), 0
    yield
    emulator.faults, emulator.render_seconds = Faults(), 0


@pytest.fixture
def events(moto_endpoint: str, unique: str) -> Any:
    return event_bus(moto_endpoint, unique)


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator, events: Any) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url, S2V_EVENT_BUS=events[0])


def put_pair(flow: Flow, stem: str = "talk") -> str:
    flow.put(f"inputs/c/{stem}.png", samples.portrait_png(64, 64))
    flow.put(f"inputs/c/{stem}.wav", samples.speech_wav(0.6))
    return f"inputs/c/{stem}.wav"


def outputs(flow: Flow) -> set[str]:
    listing = flow.s3.list_objects_v2(Bucket=flow.bucket, Prefix="outputs/")
    return {o["Key"] for o in listing.get("Contents", [])}


def settle(flow: Flow, emulator: Emulator, runs: int = 5) -> None:
    """What the triggers do afterwards: poller runs and the stream to deliver."""
    for _ in range(runs):
        poll.run(flow.deps)
        for job in flow.jobs():
            deliver.on_job_change(job.job_id, flow.deps)
        flow.clock.advance(60)


def assert_cancelled(flow: Flow, events: Any, job_id: str, *, was: Status, charged: bool) -> Job:
    job = flow.job(job_id)
    assert job.status is Status.CANCELLED, (job.status, [h["note"] for h in job.history])
    assert job.cancelled_by == WHO and job.cancelled_at
    assert any(h["status"] == "CANCELLED" and h["note"] == f"cancelled by {WHO} (was {was})" for h in job.history)
    assert flow.deps.store.guard_state(flow.clock()).in_flight == 0
    expected_cost = job.estimated_cost_usd if charged else 0.0
    assert job.final_cost_usd == pytest.approx(expected_cost)
    if not charged:
        assert flow.deps.store.guard_state(flow.clock()).spent_today_usd == pytest.approx(0.0)
    key = "outputs/c/talk.cancelled.json"
    assert outputs(flow) == {key}, outputs(flow)  # no video, no report, no error file
    assert job.report_key == key
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key=key)["Body"].read())
    assert (report["code"], report["status"], report["cancelled_by"]) == ("cancelled", "CANCELLED", WHO)
    assert report["final_cost_usd"] == pytest.approx(expected_cost)
    sent = [e for e in events[1]() if e["detail-type"] == "Job cancelled"]
    assert len(sent) == 1 and sent[0]["detail"]["job_id"] == job_id and sent[0]["detail"]["cancelled_by"] == WHO
    return job


def test_a_received_job_is_cancelled_locally(flow: Flow, emulator: Emulator, events: Any) -> None:
    key = put_pair(flow)
    with crash_after(flow.deps.store, "create_once"), pytest.raises(Crash):
        flow.ingest(key)
    job = flow.jobs()[0]
    assert job.status is Status.RECEIVED
    before = emulator.submission_count
    outcome = cancel(job.job_id, flow.deps, by=WHO)
    assert (outcome.was, outcome.job.provider_delete) == (Status.RECEIVED, NOT_SENT)
    flow.clock.advance(600)  # past the orphan check: the poller does not pick it up again
    settle(flow, emulator)
    assert emulator.submission_count == before
    assert_cancelled(flow, events, job.job_id, was=Status.RECEIVED, charged=False)


def test_a_queued_job_is_cancelled_locally_and_never_released(flow: Flow, emulator: Emulator, events: Any) -> None:
    emulator.faults = Faults(submit_429=1)
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    assert job.status is Status.QUEUED
    # Deferred after its admission: the reservation went back, and the job says it holds none
    assert (job.admitted_day, job.reserved_cost_usd) == ("", 0.0)
    assert flow.deps.store.guard_state(flow.clock()).spent_today_usd == pytest.approx(0.0)
    before = emulator.submission_count
    cancel(job.job_id, flow.deps, by=WHO)
    settle(flow, emulator)
    assert emulator.submission_count == before
    assert_cancelled(flow, events, job.job_id, was=Status.QUEUED, charged=False)


def test_a_job_admitted_but_not_yet_sent_is_never_sent_and_costs_nothing(
        flow: Flow, emulator: Emulator, events: Any) -> None:
    key = put_pair(flow)
    with crash_after(flow.deps.store, "admit", when=lambda r, *a, **k: r[0] is not None), pytest.raises(Crash):
        flow.ingest(key)
    job = flow.jobs()[0]
    assert job.status is Status.SUBMITTING and not job.sent_at
    before = emulator.submission_count
    outcome = cancel(job.job_id, flow.deps, by=WHO)
    assert outcome.job.provider_delete == NOT_SENT
    settle(flow, emulator, runs=20)  # past the settle window: a cancelled job is not requeued
    assert emulator.submission_count == before
    assert_cancelled(flow, events, job.job_id, was=Status.SUBMITTING, charged=False)


def test_a_submitter_cancelled_between_admission_and_its_post_sends_nothing(
        flow: Flow, emulator: Emulator, events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the cancel lands just after admission, before the submitter records what it sends
    key = put_pair(flow)
    real_admit = flow.deps.store.admit

    def admit_then_cancelled(job: Job, **kwargs: Any) -> Any:
        admitted = real_admit(job, **kwargs)
        if admitted[0] is not None:
            cancel(job.job_id, flow.deps, by=WHO)
        return admitted

    monkeypatch.setattr(flow.deps.store, "admit", admit_then_cancelled)
    before = emulator.submission_count
    result = flow.ingest(key)
    # Then the submitter's record fails and nothing is sent
    assert result.outcome == "cancelled", result
    assert emulator.submission_count == before
    monkeypatch.undo()
    settle(flow, emulator)
    assert_cancelled(flow, events, result.job_id, was=Status.SUBMITTING, charged=False)


def test_a_post_in_flight_when_cancelled_has_its_task_deleted_by_the_submitter(
        flow: Flow, emulator: Emulator, events: Any) -> None:
    # Given the provider takes the job but answers late
    emulator.faults = Faults(submit_delay_seconds=1.5)
    emulator.render_seconds = 30
    key = put_pair(flow)
    before = emulator.submission_count
    ingest = threading.Thread(target=flow.ingest, args=(key,))
    ingest.start()
    deadline = time.monotonic() + 10
    while not (flow.jobs() and flow.jobs()[0].sent_at):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # When it is cancelled while the POST is in flight
    outcome = cancel(flow.jobs()[0].job_id, flow.deps, by=WHO)
    assert outcome.job.provider_delete == IN_FLIGHT
    ingest.join(timeout=30)
    # Then the submitter finds it cancelled and deletes the task it was given
    job = flow.jobs()[0]
    assert emulator.submission_count - before == 1
    assert job.provider_id and emulator.tasks[job.provider_id]["status"] == "deleted"
    assert job.provider_delete == DELETED
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=Status.SUBMITTING, charged=True)
    assert job.provider_id not in emulator.charges


@pytest.mark.parametrize("reached", [True, False], ids=["provider_took_it", "never_arrived"])
def test_a_post_in_flight_when_cancelled_that_ends_unanswered_is_settled_from_the_list(
        reached: bool, flow: Flow, emulator: Emulator, events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the cancel lands while the POST is on its way, and the POST then gets no clear answer
    emulator.render_seconds = 30
    key = put_pair(flow)
    real_submit = flow.deps.provider.submit

    def cancelled_then_unanswered(request: Any, **kwargs: Any) -> Any:
        outcome = cancel(flow.jobs()[0].job_id, flow.deps, by=WHO)
        assert outcome.job.provider_delete == IN_FLIGHT
        if reached:
            emulator.faults = Faults(submit_500_after_accept=1)
            return real_submit(request, **kwargs)
        raise SubmitOutcomeUnknown("WaveSpeed gave no answer to the submit (read timeout); it may have "
                                   "accepted the job")

    monkeypatch.setattr(flow.deps.provider, "submit", cancelled_then_unanswered)
    before = emulator.submission_count
    job = flow.job(flow.ingest(key).job_id)
    monkeypatch.undo()
    # Then the job still says its POST may have reached the provider, with what the POST came to
    assert job.status is Status.CANCELLED and job.provider_delete == IN_FLIGHT, job.provider_delete
    assert job.submit_note and job.sent_until and not job.provider_id
    # And the poller settles it from the provider's list once the settle window allows
    settle(flow, emulator, runs=20)
    job = flow.job(job.job_id)
    assert emulator.submission_count - before == (1 if reached else 0)
    if reached:
        assert job.provider_delete == DELETED and job.reconciled_by == "input urls"
        assert emulator.tasks[job.provider_id]["status"] == "deleted"
        assert flow.deps.store.task_holder(job.provider_id) == job.job_id
    else:
        assert job.provider_delete.startswith(NOT_LISTED), job.provider_delete
    assert job.job_id not in {j.job_id for j in flow.deps.store.due(flow.clock() + 10**6, limit=100)}
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key="outputs/c/talk.cancelled.json")["Body"].read())
    assert report["provider"]["task"] == job.provider_delete
    # Its cost is what it may have been charged: the estimate if the provider took it, else nothing
    assert_cancelled(flow, events, job.job_id, was=Status.SUBMITTING, charged=reached)


def test_a_post_in_flight_when_cancelled_that_the_provider_refuses_costs_nothing(
        flow: Flow, emulator: Emulator, events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key = put_pair(flow)
    real_submit = flow.deps.provider.submit

    def cancelled_then_busy(request: Any, **kwargs: Any) -> Any:
        cancel(flow.jobs()[0].job_id, flow.deps, by=WHO)
        emulator.faults = Faults(submit_429=1)
        return real_submit(request, **kwargs)

    monkeypatch.setattr(flow.deps.provider, "submit", cancelled_then_busy)
    job = flow.job(flow.ingest(key).job_id)
    monkeypatch.undo()
    assert job.provider_delete.startswith("not taken"), job.provider_delete
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=Status.SUBMITTING, charged=False)


def test_an_ambiguous_submit_is_found_in_the_list_and_its_task_deleted(
        flow: Flow, emulator: Emulator, events: Any) -> None:
    emulator.faults = Faults(submit_500_after_accept=1)
    emulator.render_seconds = 30
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    assert job.status is Status.SUBMITTING and job.submit_note and not job.provider_id
    outcome = cancel(job.job_id, flow.deps, by=WHO)
    assert outcome.job.provider_id and outcome.job.reconciled_by == "input urls"
    assert outcome.job.provider_delete == DELETED
    assert emulator.tasks[outcome.job.provider_id]["status"] == "deleted"
    assert flow.deps.store.task_holder(outcome.job.provider_id) == job.job_id
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=Status.SUBMITTING, charged=True)


@pytest.mark.parametrize("state", [Status.SUBMITTED, Status.PROCESSING])
def test_a_job_rendering_at_the_provider_is_deleted_there_and_a_late_completion_changes_nothing(
        state: Status, flow: Flow, emulator: Emulator, events: Any) -> None:
    emulator.render_seconds = 30
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    assert job.status is Status.SUBMITTED
    if state is Status.PROCESSING:
        emulator.wait_for_task(job.provider_id, statuses=("processing",))
        flow.clock.advance(60)
        poll.run(flow.deps)
        job = flow.job(job.job_id)
    assert job.status is state
    # When it is cancelled
    outcome = cancel(job.job_id, flow.deps, by=WHO)
    # Then its task is deleted at the provider, which stops it (and charges nothing in the emulator)
    assert outcome.job.provider_delete == DELETED
    assert emulator.tasks[job.provider_id]["status"] == "deleted"
    # And a completion arriving after the cancel, by poll or by webhook, is a no-op
    late = Prediction(id=job.provider_id, model=MODEL, status="completed",
                      outputs=(emulator.output_url(job.provider_id),))
    assert apply_prediction(job, late, flow.deps, source="poll") is None
    assert apply_prediction(flow.job(job.job_id), late, flow.deps, source="webhook") is None
    body = json.dumps({"id": job.provider_id, "model": MODEL, "status": "completed",
                       "outputs": [emulator.output_url(job.provider_id)]}).encode()
    headers = sign_webhook(body, emulator.webhook_secret, webhook_id="late-1", timestamp=int(time.time()))
    answer = handle_callback(job.job_id, flow.deps.secrets.callback_token(job.job_id), headers, body, flow.deps)
    assert (answer.status_code, answer.message) == (200, "already final")
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=state, charged=True)
    assert job.provider_id not in emulator.charges


def test_a_completed_job_not_yet_delivered_is_never_delivered(flow: Flow, emulator: Emulator, events: Any) -> None:
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    emulator.wait_for_task(job.provider_id)
    flow.clock.advance(60)
    poll.run(flow.deps)
    job = flow.job(job.job_id)
    assert job.status is Status.COMPLETED
    cancel(job.job_id, flow.deps, by=WHO)
    # The stream record of COMPLETED arrives after the cancel: deliver re-reads and only rewrites
    # the cancelled entry (no video, no second event)
    assert deliver.on_job_change(job.job_id, flow.deps) == "rewritten"
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=Status.COMPLETED, charged=True)


def test_a_cancel_during_the_copy_leaves_no_video_behind(
        flow: Flow, emulator: Emulator, events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import s2v.adapters.delivery

    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    emulator.wait_for_task(job.provider_id)
    flow.clock.advance(60)
    poll.run(flow.deps)
    assert flow.job(job.job_id).status is Status.COMPLETED
    # Given the cancel lands while the deliver function is copying the video
    real_copy = s2v.adapters.delivery.copy_url_to_s3

    def copy_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        copied = real_copy(*args, **kwargs)
        cancel(job.job_id, flow.deps, by=WHO)
        return copied

    monkeypatch.setattr(s2v.adapters.delivery, "copy_url_to_s3", copy_then_cancelled)
    # Then the copy it finished is withdrawn
    assert deliver.on_job_change(job.job_id, flow.deps) == "cancelled"
    monkeypatch.undo()
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=Status.COMPLETED, charged=True)


def test_a_cancel_after_a_delivery_died_between_copy_and_record_withdraws_the_video(
        flow: Flow, emulator: Emulator, events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    emulator.wait_for_task(job.provider_id)
    flow.clock.advance(60)
    poll.run(flow.deps)
    assert flow.job(job.job_id).status is Status.COMPLETED
    # Given a deliver function that died after copying the video, before recording DELIVERED
    with crash_after(s2v.flows.outputs, "place_document", when=lambda r, job, deps, kind, *rest: kind is REPORT), \
            pytest.raises(Crash):
        deliver.on_job_change(job.job_id, flow.deps)
    assert "outputs/c/talk.mp4" in outputs(flow)
    # When the job is cancelled before any retry delivers it
    cancel(job.job_id, flow.deps, by=WHO)
    # Then the stream's CANCELLED record withdraws the video and its report
    assert deliver.on_job_change(job.job_id, flow.deps) == "withdrawn"
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=Status.COMPLETED, charged=True)


@pytest.mark.parametrize("final", [Status.DELIVERED, Status.FAILED])
def test_a_finished_job_cannot_be_cancelled(final: Status, flow: Flow, emulator: Emulator) -> None:
    if final is Status.FAILED:
        emulator.faults = Faults(fail_renders=True)
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    emulator.wait_for_task(job.provider_id)
    settle(flow, emulator, runs=3)
    assert flow.job(job.job_id).status is final
    with pytest.raises(InputError, match="nothing to cancel"):
        cancel(job.job_id, flow.deps, by=WHO)


def test_cancelling_twice_reports_the_first_cancel(flow: Flow, emulator: Emulator, events: Any) -> None:
    emulator.faults = Faults(submit_429=1)
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    cancel(job.job_id, flow.deps, by=WHO)
    again = cancel(job.job_id, flow.deps, by="someone else")
    assert again.already and again.job.cancelled_by == WHO
    assert_cancelled(flow, events, job.job_id, was=Status.QUEUED, charged=False)


def test_a_failed_delete_is_recorded_and_retried_by_cancelling_again(
        flow: Flow, emulator: Emulator, events: Any) -> None:
    emulator.render_seconds = 30
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    emulator.faults = Faults(delete_500=100)
    first = cancel(job.job_id, flow.deps, by=WHO)
    assert first.delete_failed and first.job.status is Status.CANCELLED
    assert emulator.tasks[job.provider_id]["status"] != "deleted"
    emulator.faults = Faults()
    again = cancel(job.job_id, flow.deps, by=WHO)
    assert again.already and again.job.provider_delete == DELETED
    assert emulator.tasks[job.provider_id]["status"] == "deleted"
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key="outputs/c/talk.cancelled.json")["Body"].read())
    assert report["provider"]["task"] == DELETED  # rewritten with the outcome
    assert_cancelled(flow, events, job.job_id, was=Status.SUBMITTED, charged=True)


def test_a_cancelled_job_can_be_rendered_again_on_purpose(flow: Flow, emulator: Emulator) -> None:
    from s2v.flows.ingest import retry_failed

    emulator.faults = Faults(submit_429=1)
    job = flow.job(flow.ingest(put_pair(flow)).job_id)
    cancel(job.job_id, flow.deps, by=WHO)
    new = retry_failed(job.job_id, flow.deps)
    assert new.retry_of == job.job_id and new.status is Status.RECEIVED


@pytest.mark.parametrize("reached", [True, False], ids=["provider_took_it", "never_sent"])
def test_a_job_whose_submitter_died_mid_post_is_looked_up_in_the_list_when_cancelled(
        reached: bool, flow: Flow, emulator: Emulator, events: Any) -> None:
    # Given a submitter that died after recording what it sends, after (or before) the POST
    emulator.render_seconds = 30
    key = put_pair(flow)
    target, when = (flow.deps.provider, "submit") if reached else (flow.deps.store, "touch")
    condition = (lambda r, *a, **k: True) if reached else (lambda r, job, **k: bool(k.get("sent_at")))
    with crash_after(target, when, when=condition), pytest.raises(Crash):
        flow.ingest(key)
    job = flow.jobs()[0]
    assert job.status is Status.SUBMITTING and job.sent_at and not job.submit_note and not job.provider_id
    # When it is cancelled once its POST cannot still be running
    flow.clock.advance(600)
    outcome = cancel(job.job_id, flow.deps, by=WHO)
    # Then the provider's list settles what became of it
    if reached:
        assert outcome.job.provider_delete == DELETED and outcome.job.reconciled_by == "input urls"
        assert emulator.tasks[outcome.job.provider_id]["status"] == "deleted"
    else:
        assert outcome.job.provider_delete.startswith("not in the provider's list"), outcome.job.provider_delete
        assert not outcome.job.provider_id
    settle(flow, emulator)
    assert_cancelled(flow, events, job.job_id, was=Status.SUBMITTING, charged=True)
