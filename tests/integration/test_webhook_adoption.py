"""A callback may attach a task to a job only if the task's inputs are the URLs the job recorded
before sending. A job whose submit answer was lost has no provider id yet: a correctly signed
callback of someone else's task (another job's, a website render) must not become its video.
Real HTTP to the emulator; callbacks are signed here, independently of the code under test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_submit_reconcile import ambiguous_job, put_pair
from test_webhook_auth import signed, token, whsec

from helpers.flow import Flow, make_flow
from s2v.adapters.providers.wavespeed import SubmitRequest
from s2v.flows.webhook import handle_callback
from s2v.model.jobs import Status
from s2v_local.emulator import Emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0) as running:
        yield running


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_IN_FLIGHT_JOBS="10")


def callback_of(emulator: Emulator, task_id: str) -> bytes:
    """The body WaveSpeed posts for a finished task: the task object, its input included."""
    task = emulator.wait_for_task(task_id)
    return json.dumps(task).encode()


def foreign_tasks(flow: Flow, emulator: Emulator) -> dict[str, str]:
    """Finished tasks that are not the job's: another pair's render, one sharing its portrait, a website render."""
    other = put_pair(flow, "other")
    image_key = "inputs/r/victim.png"
    presign = flow.deps.objects.presign_get
    requests = {
        "another pair": SubmitRequest(image_url=presign(other[:-4] + ".png", 3600), audio_url=presign(other, 3600)),
        "same portrait, other audio": SubmitRequest(image_url=presign(image_key, 3600), audio_url=presign(other, 3600)),
    }
    found = {name: flow.deps.provider.submit(request).id for name, request in requests.items()}
    found["website render"] = next(iter(emulator.web_predictions))
    return found


def test_a_signed_callback_of_a_foreign_task_never_attaches_to_a_job_without_a_provider_id(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job whose submit was never answered (no provider id) and finished tasks that are not its own
    job = ambiguous_job(flow, "victim", send=False, monkeypatch=monkeypatch)
    secret = whsec(emulator)
    for name, task_id in foreign_tasks(flow, emulator).items():
        body = json.dumps(emulator.web_predictions[task_id]).encode() if name == "website render" \
            else callback_of(emulator, task_id)
        # When each arrives correctly signed, on the job's own callback URL (its token)
        answer = handle_callback(job.job_id, token(job.job_id), signed(body, secret), body, flow.deps)
        # Then it is refused and the job is untouched: no video of someone else's render
        assert (answer.status_code, name) == (401, name)
    after = flow.job(job.job_id)
    assert after.version == job.version and after.status is Status.SUBMITTING and not after.provider_id


def test_a_signed_callback_of_the_jobs_own_task_is_adopted_when_the_submit_answer_was_lost(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job whose submit reached the provider but whose answer was lost
    job = ambiguous_job(flow, "mine", send=True, monkeypatch=monkeypatch)
    [task_id] = [t for t, task in emulator.tasks.items() if _carries(task, "inputs/r/mine.wav")]
    body = callback_of(emulator, task_id)
    # When its own task's callback arrives
    answer = handle_callback(job.job_id, token(job.job_id), signed(body, whsec(emulator)), body, flow.deps)
    # Then the job takes that task, as the provider's list would have shown
    assert answer.status_code == 200
    adopted = flow.job(job.job_id)
    assert adopted.provider_id == task_id and adopted.status is Status.COMPLETED


def _carries(task: dict[str, Any], key: str) -> bool:
    return any(isinstance(url, str) and key in url for url in task.get("input", {}).values())
