"""Ambiguous submits settled from the provider's list: found, provably absent, or cannot tell.

Each test drives the real core against moto's server and the WaveSpeed emulator (its list,
paging, filters and inputs), and counts what the emulator was asked to render.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from helpers.flow import Flow, make_flow
from s2v.adapters.providers.wavespeed import PredictionPage, SubmitRequest
from s2v.flows import deliver, poll
from s2v.flows.reconcile import ListBudget, reconcile_submit
from s2v.model.errors import SubmitOutcomeUnknown
from s2v.model.jobs import Job, Status
from s2v.model.models import CATALOG
from s2v.model.reconcile import MATCH_INPUT_URLS, MATCH_TIME_WINDOW
from s2v_local import samples
from s2v_local.emulator import Emulator, Faults

API_KEY = "flow-test-key"
SETTLE = 300  # S2V_SUBMIT_RECONCILE_SECONDS in these tests


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0) as running:
        yield running


@pytest.fixture(autouse=True)
def _healthy(emulator: Emulator) -> Iterator[None]:
    emulator.faults = Faults()
    yield
    emulator.faults = Faults()


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url, S2V_SUBMIT_RECONCILE_SECONDS=str(SETTLE),
                     S2V_MAX_IN_FLIGHT_JOBS="10")


@pytest.fixture
def alone(moto_endpoint: str, unique: str) -> Iterator[tuple[Flow, Emulator]]:
    """A provider account of its own: matching by time must not see other tests' tasks."""
    with Emulator(api_key=API_KEY, render_seconds=0) as running:
        yield make_flow(moto_endpoint, unique, running.base_url, S2V_SUBMIT_RECONCILE_SECONDS=str(SETTLE),
                        S2V_MAX_IN_FLIGHT_JOBS="10"), running


def put_pair(flow: Flow, stem: str) -> str:
    flow.put(f"inputs/r/{stem}.png", samples.portrait_png(64, 64 + len(stem)))
    flow.put(f"inputs/r/{stem}.wav", samples.speech_wav(0.6))
    return f"inputs/r/{stem}.wav"


def unanswered(flow: Flow, *, send: bool) -> Any:
    """The POST gets no answer: sent (the provider makes the task) or lost on the way (it does not)."""
    real = flow.deps.provider.submit

    def submit(request: Any, **kwargs: Any) -> Any:
        if send:
            real(request, **kwargs)
        raise SubmitOutcomeUnknown("WaveSpeed gave no answer to the submit (read timeout); it may have "
                                   "accepted the job")
    return submit


def ambiguous_job(flow: Flow, stem: str, *, send: bool, monkeypatch: pytest.MonkeyPatch) -> Job:
    key = put_pair(flow, stem)
    with monkeypatch.context() as patch:
        patch.setattr(flow.deps.provider, "submit", unanswered(flow, send=send))
        result = flow.ingest(key)
    job = flow.job(result.job_id)
    assert job.status is Status.SUBMITTING and job.sent_at and job.submit_note and not job.provider_id, job
    return job


def run_until_settled(flow: Flow, emulator: Emulator, job_id: str, *, step: float = 60, runs: int = 20) -> Job:
    for _ in range(runs):
        job = flow.job(job_id)
        if job.status in (Status.DELIVERED, Status.FAILED) and (job.error_key or job.status is Status.DELIVERED):
            return job
        if job.provider_id and job.status in (Status.SUBMITTED, Status.PROCESSING):
            emulator.wait_for_task(job.provider_id, timeout=60)
        poll.run(flow.deps)
        for j in flow.jobs():
            if j.status is Status.COMPLETED or (j.status is Status.FAILED and not j.error_key):
                deliver.on_job_change(j.job_id, flow.deps)
        flow.clock.advance(step)
    return flow.job(job_id)


def without_inputs(flow: Flow) -> None:
    """The list as a provider that ignores include_inputs answers it."""
    real = flow.deps.provider.list_predictions

    def listing(**kwargs: Any) -> PredictionPage:
        page = real(**kwargs)
        return replace(page, items=tuple(replace(p, input={}) for p in page.items))

    flow.deps.provider.list_predictions = listing  # type: ignore[method-assign]


def test_a_task_found_in_the_list_is_adopted_rendered_once_and_delivered(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a POST the provider took but never answered
    before = emulator.submission_count
    job = ambiguous_job(flow, "alice", send=True, monkeypatch=monkeypatch)
    assert emulator.submission_count - before == 1
    # When the poller looks for it in the provider's list
    done = run_until_settled(flow, emulator, job.job_id)
    # Then it found it by its input URLs, rendered it once and delivered it
    assert done.status is Status.DELIVERED, (done.status, done.failure, [h["note"] for h in done.history])
    assert done.reconciled_by == MATCH_INPUT_URLS and done.provider_id in emulator.tasks
    assert emulator.submission_count - before == 1
    assert flow.deps.store.task_holder(done.provider_id) == job.job_id
    assert flow.deps.store.guard_state(flow.clock()).in_flight == 0
    assert done.final_cost_usd == pytest.approx(done.estimated_cost_usd)


def test_without_inputs_in_the_list_the_only_task_in_the_window_is_adopted_as_the_weaker_match(
        alone: tuple[Flow, Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    flow, emulator = alone
    job = ambiguous_job(flow, "bob", send=True, monkeypatch=monkeypatch)
    without_inputs(flow)
    done = run_until_settled(flow, emulator, job.job_id)
    assert done.status is Status.DELIVERED, (done.status, done.failure)
    assert done.reconciled_by == MATCH_TIME_WINDOW
    assert any("reconciled by model and time window" in h["note"] for h in done.history)


def test_a_task_the_provider_never_made_fails_not_charged_and_refunds_its_reservation(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a POST lost on its way (the provider made no task)
    before = emulator.submission_count
    job = ambiguous_job(flow, "carol", send=False, monkeypatch=monkeypatch)
    assert flow.deps.store.guard_state(flow.clock()).spent_today_usd == pytest.approx(job.reserved_cost_usd)
    # When the list, read over the whole submit window, has no task for it, not even after the settle window
    flow.clock.advance(120)
    poll.run(flow.deps)
    assert flow.job(job.job_id).status is Status.SUBMITTING  # absent, but not yet settled
    done = run_until_settled(flow, emulator, job.job_id)
    # Then it fails saying it was not charged, nothing was sent again and its reservation is back
    assert done.status is Status.FAILED and done.failure, done
    assert (done.failure.stage, done.failure.code) == ("submit", "not_charged")
    assert "not charged" in done.failure.reason and "s2v retry" in done.failure.reason
    assert done.final_cost_usd == 0.0
    guard = flow.deps.store.guard_state(flow.clock())
    assert guard.in_flight == 0 and guard.spent_today_usd == pytest.approx(0.0)
    assert emulator.submission_count == before
    assert done.error_key.endswith("carol.error.json")


def test_when_the_list_is_down_the_job_fails_as_may_have_been_charged_with_the_evidence(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    job = ambiguous_job(flow, "dave", send=False, monkeypatch=monkeypatch)
    emulator.faults = Faults(list_500=10_000)
    done = run_until_settled(flow, emulator, job.job_id)
    assert done.status is Status.FAILED and done.failure, done
    assert (done.failure.stage, done.failure.code) == ("submit", "submit_outcome_unknown")
    assert "may have been started and charged" in done.failure.reason
    assert "list did not answer" in done.failure.reason, done.failure.reason
    assert done.final_cost_usd == pytest.approx(done.estimated_cost_usd)  # counted as possibly charged


def test_two_candidates_without_inputs_cannot_be_told_apart(
        alone: tuple[Flow, Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    flow, emulator = alone
    # Given two tasks of the model in the job's window and a list without inputs
    job = ambiguous_job(flow, "erin", send=True, monkeypatch=monkeypatch)
    other = put_pair(flow, "frank")
    with monkeypatch.context() as patch:  # a task made elsewhere (the website, another stack)
        patch.setattr(flow.deps.store, "task_holder", lambda _id: "")
        real = flow.deps.provider
        real.submit(_request_for(flow, other))
    without_inputs(flow)
    done = run_until_settled(flow, emulator, job.job_id)
    assert done.status is Status.FAILED and done.failure
    assert done.failure.code == "submit_outcome_unknown"
    assert "to tell them apart" in done.failure.reason


def _request_for(flow: Flow, audio_key: str) -> Any:
    from s2v.adapters.providers.wavespeed import SubmitRequest

    image_key = audio_key[:-4] + ".png"
    return SubmitRequest(image_url=flow.deps.objects.presign_get(image_key, 3600),
                         audio_url=flow.deps.objects.presign_get(audio_key, 3600))


def test_concurrent_reconcilers_of_one_job_adopt_its_task_once(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    job = ambiguous_job(flow, "gina", send=True, monkeypatch=monkeypatch)
    now = job.sent_at + 120
    barrier = threading.Barrier(6, timeout=30)

    def reconciler(_: int) -> str:
        barrier.wait()
        return reconcile_submit(job, flow.deps, now, ListBudget())  # all from the same stale read

    with ThreadPoolExecutor(6) as pool:
        outcomes = Counter(pool.map(reconciler, range(6)))
    assert outcomes["reconciled"] == 1, outcomes
    adopted = flow.job(job.job_id)
    assert adopted.status is Status.SUBMITTED and adopted.provider_id
    assert flow.deps.store.task_holder(adopted.provider_id) == job.job_id
    assert [h["status"] for h in adopted.history].count("SUBMITTED") == 1


def test_two_unsettled_jobs_and_one_task_by_time_alone_neither_adopts_it(
        alone: tuple[Flow, Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    flow, _ = alone
    # Given two ambiguous submits in the same window, only one of which reached the provider, and a
    # list without inputs: each job sees exactly one candidate, the same task
    first = ambiguous_job(flow, "hank", send=True, monkeypatch=monkeypatch)
    second = ambiguous_job(flow, "ivy", send=False, monkeypatch=monkeypatch)
    without_inputs(flow)
    now = max(first.sent_at, second.sent_at) + 120
    barrier = threading.Barrier(4, timeout=30)

    def reconciler(job: Job) -> str:
        barrier.wait()
        return reconcile_submit(job, flow.deps, now, ListBudget())

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(reconciler, [first, second, first, second]))
    # Then neither takes it: a time match cannot tell whose task it is, and the wrong job would
    # deliver another's video while the right one is told it was not charged
    assert [j.provider_id for j in (flow.job(first.job_id), flow.job(second.job_id))] == ["", ""], outcomes
    assert set(outcomes) == {"waiting"}, outcomes


def test_a_submitted_job_holds_its_task_so_no_ambiguous_job_can_take_it(
        alone: tuple[Flow, Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    flow, emulator = alone
    # Given a job submitted normally and, in the same window, an ambiguous one that never reached the provider
    normal = flow.job(flow.ingest(put_pair(flow, "jack")).job_id)
    assert normal.status is Status.SUBMITTED
    assert flow.deps.store.task_holder(normal.provider_id) == normal.job_id
    lost = ambiguous_job(flow, "kim", send=False, monkeypatch=monkeypatch)
    without_inputs(flow)
    # When the list (without inputs) shows only the other job's task
    done = run_until_settled(flow, emulator, lost.job_id)
    # Then the ambiguous job does not take it: the task is held, so this one was never made
    assert done.status is Status.FAILED and done.failure and done.failure.code == "not_charged", done
    assert flow.job(normal.job_id).provider_id == normal.provider_id


def test_the_unknown_outcome_is_recorded_even_when_the_poller_touched_the_job_during_the_post(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the poller touches the job (its next check) while the POST is on its way
    key = put_pair(flow, "raced")
    lost = unanswered(flow, send=True)

    def submit(request: Any, **kwargs: Any) -> Any:
        sending = next(j for j in flow.jobs() if j.stem == "raced")
        assert flow.deps.store.touch(sending, next_check_at=sending.next_check_at + 1) is not None
        flow.clock.advance(40)  # the POST times out
        return lost(request, **kwargs)

    monkeypatch.setattr(flow.deps.provider, "submit", submit)
    job = flow.job(flow.ingest(key).job_id)
    # Then the submitter's record of the unknown outcome is not lost to that write
    assert job.status is Status.SUBMITTING and not job.provider_id
    assert job.submit_note.startswith("WaveSpeed gave no answer"), job.submit_note
    assert job.sent_until == pytest.approx(job.sent_at + 40)


# --- models whose requests carry more than an image and an audio URL -------------------------------

SETS = {  # model -> the set's files (besides <stem>.png and <stem>.json)
    "infinitetalk-multi": {"left.wav": 0.6, "right.wav": 0.8},
    "infinitetalk": {"wav": 0.6, "mask.png": None},
}


def put_set(flow: Flow, stem: str, model: str) -> list[str]:
    keys = [f"inputs/m/{stem}.png"]
    flow.put(keys[0], samples.portrait_png(64, 80))
    for suffix, seconds in SETS[model].items():
        keys.append(f"inputs/m/{stem}.{suffix}")
        flow.put(keys[-1], samples.portrait_png(64, 80) if seconds is None else samples.speech_wav(seconds))
    keys.append(f"inputs/m/{stem}.json")
    flow.put(keys[-1], json.dumps({"model": model}).encode())
    return keys


def ingest_set(flow: Flow, keys: list[str]) -> Job:
    for key in keys:
        flow.ingest(key)
    stem = keys[0].rsplit("/", 1)[-1].split(".")[0]
    return next(j for j in flow.jobs() if j.stem == stem)


def submit_elsewhere(flow: Flow, stem: str, model: str) -> str:
    """A task of ``model`` made outside this stack (the website, another account user): no job holds it."""
    keys = put_set(flow, stem, model)
    roles = ["image", *(("left", "right") if model == "infinitetalk-multi" else ("audio", "mask"))]
    urls = {role: flow.deps.objects.presign_get(key, 3600) for role, key in zip(roles, keys, strict=False)}
    return str(flow.deps.provider.submit(SubmitRequest.for_model(CATALOG[model], urls)).id)


@pytest.mark.parametrize("model", list(SETS))
def test_an_ambiguous_submit_of_a_model_with_more_inputs_is_matched_by_every_url_it_sent(
        alone: tuple[Flow, Emulator], model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    flow, emulator = alone
    # Given a POST of a two-speaker (or masked) set the provider took but never answered ...
    with monkeypatch.context() as patch:
        patch.setattr(flow.deps.provider, "submit", unanswered(flow, send=True))
        job = ingest_set(flow, put_set(flow, "duo", model))
    assert job.status is Status.SUBMITTING and not job.provider_id, job
    fields = set(CATALOG[model].fields)
    assert set(job.sent_inputs) == fields, job.sent_inputs  # every input URL's digest, by request field
    # and each URL's host (what a re-hosted listing is told apart by), with nothing secret in it
    assert set(job.sent_input_hosts) == fields and all(
        host and not set("?=&/") & set(host) for host in job.sent_input_hosts.values()), job.sent_input_hosts
    # ... and, in the same window, another task of the same model that no job holds
    other = submit_elsewhere(flow, "rival", model)
    before = emulator.submission_count
    # When the poller reads the provider's list (which shows each task's input)
    listed = flow.deps.provider.list_predictions(page=1, page_size=100, model=CATALOG[model].path)
    assert all(fields <= set(p.input) for p in listed.items) and len(listed.items) == 2
    done = run_until_settled(flow, emulator, job.job_id)
    # Then the job takes its own task, matched on all its input URLs, not the other one by time
    assert done.status is Status.DELIVERED, (done.status, done.failure, [h["note"] for h in done.history])
    assert done.reconciled_by == MATCH_INPUT_URLS and done.provider_id != other
    assert emulator.tasks[done.provider_id]["input"]["image"].split("?")[0].endswith("/duo.png")
    assert emulator.submission_count == before  # nothing sent again


def test_two_speaker_tasks_without_inputs_in_the_list_fall_back_to_the_time_window_and_cannot_be_told_apart(
        alone: tuple[Flow, Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    # The same two tasks as above, with a list that shows no inputs: the only evidence left is the time
    flow, emulator = alone
    with monkeypatch.context() as patch:
        patch.setattr(flow.deps.provider, "submit", unanswered(flow, send=True))
        job = ingest_set(flow, put_set(flow, "duo", "infinitetalk-multi"))
    submit_elsewhere(flow, "rival", "infinitetalk-multi")
    without_inputs(flow)
    done = run_until_settled(flow, emulator, job.job_id)
    assert done.status is Status.FAILED and done.failure and done.failure.code == "submit_outcome_unknown"
    assert "to tell them apart" in done.failure.reason
