"""The webhook endpoint's core against moto and the emulator: nobody can forge, replay or
enumerate, and a callback is only a hint until the result endpoint confirms it.

Signatures and tokens are computed here, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from helpers.flow import Flow, make_flow
from s2v.flows.webhook import handle_callback
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator

TOKEN_KEY = b"flow-token-key"  # the Flow's S2V_WEBHOOK_TOKEN_KEY


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=1.5) as em:
        yield em


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url)


def whsec(emulator: Emulator) -> str:
    resp = requests.get(f"{emulator.base_url}/api/v3/webhook/secret",
                        headers={"Authorization": "Bearer flow-test-key"}, timeout=5)
    return resp.json()["data"]["secret"]


def token(job_id: str) -> str:
    return hmac.new(TOKEN_KEY, job_id.encode(), hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str, *, ts: float | None = None, msg_id: str | None = None,
           scheme: str = "v3") -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(ts if ts is not None else time.time()))
    key = secret.removeprefix("whsec_").encode()
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": f"{scheme},{digest}"}


def task_body(provider_id: str, status: str) -> bytes:
    return json.dumps({"id": provider_id, "model": "wavespeed-ai/wan-2.2/speech-to-video", "status": status,
                       "outputs": ["http://127.0.0.1:1/fake.mp4"] if status == "completed" else [],
                       "has_nsfw_contents": [], "error": "", "created_at": "2026-11-25T00:00:00Z"}).encode()


def submitted_job(flow: Flow, stem: str) -> Any:
    flow.put(f"inputs/w/{stem}.png", samples.portrait_png(96, 96))
    flow.put(f"inputs/w/{stem}.wav", samples.speech_wav(0.6))
    job = flow.job(flow.ingest(f"inputs/w/{stem}.wav").job_id)
    assert job.status is Status.SUBMITTED and job.provider_id
    return job


def call(flow: Flow, job_id: str, tok: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    result = handle_callback(job_id, tok, headers, body, flow.deps)
    return result.status_code, result.message


def test_a_validly_signed_completed_claim_is_not_trusted_until_the_provider_confirms(
    flow: Flow, emulator: Emulator,
) -> None:
    job = submitted_job(flow, "early")
    body = task_body(job.provider_id, "completed")
    assert call(flow, job.job_id, token(job.job_id), signed(body, whsec(emulator)), body)[0] == 200
    assert flow.job(job.job_id).status in (Status.SUBMITTED, Status.PROCESSING)  # still rendering
    emulator.wait_for_task(job.provider_id)
    assert call(flow, job.job_id, token(job.job_id), signed(body, whsec(emulator)), body)[0] == 200
    done = flow.job(job.job_id)
    assert done.status is Status.COMPLETED
    assert done.output_url.startswith(emulator.output_base_url)  # from the result endpoint, not the body


def test_forged_stale_and_misdirected_callbacks_all_get_the_same_bare_401(flow: Flow, emulator: Emulator) -> None:
    job, other = submitted_job(flow, "target"), submitted_job(flow, "other")
    secret = whsec(emulator)
    body = task_body(job.provider_id, "completed")
    good = signed(body, secret)
    cases = {
        "no signature": {k: v for k, v in good.items() if k != "webhook-signature"},
        "wrong secret": signed(body, "whsec_" + "0" * 48),
        "tampered body": signed(task_body(job.provider_id, "failed"), secret),
        # Relative to the clock the webhook checks against (the flow's, set when it was made).
        "stale timestamp": signed(body, secret, ts=flow.clock() - 302),
        "future timestamp": signed(body, secret, ts=flow.clock() + 302),
        "v1 scheme": signed(body, secret, scheme="v1"),
    }
    answers = {name: call(flow, job.job_id, token(job.job_id), headers, body) for name, headers in cases.items()}
    answers["wrong token"] = call(flow, job.job_id, "0" * 64, good, body)
    answers["another job's token"] = call(flow, job.job_id, token(other.job_id), good, body)
    answers["unknown job"] = call(flow, "f" * 32, token("f" * 32), good, body)
    answers["other job's provider id"] = call(
        flow, job.job_id, token(job.job_id), signed(task_body(other.provider_id, "completed"), secret),
        task_body(other.provider_id, "completed"))
    assert set(answers.values()) == {(401, "unauthorized")}, answers
    assert flow.job(job.job_id).version == job.version  # nothing was written


def test_oversized_and_malformed_bodies_are_refused(flow: Flow, emulator: Emulator) -> None:
    job = submitted_job(flow, "sizes")
    huge = b"{" + b" " * (64 * 1024) + b"}"
    assert call(flow, job.job_id, token(job.job_id), signed(huge, whsec(emulator)), huge)[0] == 413
    broken = b'{"id": "unterminated'
    assert call(flow, job.job_id, token(job.job_id), signed(broken, whsec(emulator)), broken)[0] == 400


def test_duplicate_and_out_of_order_callbacks_never_write_twice_or_move_back(
    flow: Flow, emulator: Emulator,
) -> None:
    job = submitted_job(flow, "order")
    emulator.wait_for_task(job.provider_id)
    secret = whsec(emulator)
    body = task_body(job.provider_id, "completed")
    headers = signed(body, secret, msg_id="msg_fixed")
    assert call(flow, job.job_id, token(job.job_id), headers, body) == (200, "ok")
    completed = flow.job(job.job_id)
    assert completed.status is Status.COMPLETED
    assert call(flow, job.job_id, token(job.job_id), headers, body) == (200, "duplicate")
    late = task_body(job.provider_id, "processing")
    assert call(flow, job.job_id, token(job.job_id), signed(late, secret), late)[0] == 200
    after = flow.job(job.job_id)
    assert after.status is Status.COMPLETED and after.version == completed.version


def test_a_callback_that_loses_a_race_to_another_write_is_applied_to_the_fresh_job(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a finished render and a concurrent write (a poll's touch) landing just before the callback's
    job = submitted_job(flow, "raced")
    emulator.wait_for_task(job.provider_id)
    store = flow.deps.store
    real_transition = store.transition
    raced: list[bool] = []

    def touched_first(current: Any, event: Any, **fields: Any) -> Any:
        if not raced:
            raced.append(True)
            store.touch(current, check_count=current.check_count + 1)  # bumps the version under the callback
        return real_transition(current, event, **fields)

    monkeypatch.setattr(store, "transition", touched_first)
    body = task_body(job.provider_id, "completed")
    # When the callback arrives
    assert call(flow, job.job_id, token(job.job_id), signed(body, whsec(emulator)), body)[0] == 200
    # Then it is applied on the re-read job, not dropped until the next poll
    assert raced and flow.job(job.job_id).status is Status.COMPLETED
