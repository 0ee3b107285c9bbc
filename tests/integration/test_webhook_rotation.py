"""When the provider rotates its webhook signing secret, callbacks keep working without a cold
start: a callback with a valid per-job token and a bad signature makes the webhook ask the provider
again (at most once a minute), the old secret verifies for a grace period, and every such failure
is counted in a metric. Real HTTP to the emulator (which signs with whatever secret it holds now)."""

from __future__ import annotations

import json
import secrets as token_bytes
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from test_webhook_auth import signed, submitted_job, task_body, token, whsec
from test_webhook_bytes import FUNCTIONS, http_event

from helpers.flow import Flow, make_flow
from s2v.adapters.secrets import SIGNING_GRACE_SECONDS, SIGNING_REFETCH_SECONDS
from s2v.flows.webhook import handle_callback
from s2v_local.emulator import Emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=30) as em:
        yield em


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url)


@pytest.fixture
def secret_reads(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time the webhook asks the provider for its secret (a real HTTP GET)."""
    reads: list[str] = []
    real = flow.deps.provider.webhook_secret
    monkeypatch.setattr(flow.deps.provider, "webhook_secret", lambda: reads.append("read") or real())
    return reads


def rotate(emulator: Emulator) -> str:
    emulator.webhook_secret = f"whsec_{token_bytes.token_hex(24)}"
    return emulator.webhook_secret


def callback(flow: Flow, job: Any, secret: str, status: str = "processing") -> int:
    body = task_body(job.provider_id, status)
    return handle_callback(job.job_id, token(job.job_id), signed(body, secret, ts=flow.clock()), body,
                           flow.deps).status_code


def test_after_a_rotation_new_callbacks_verify_and_old_ones_only_within_the_grace_period(
        flow: Flow, emulator: Emulator, secret_reads: list[str]) -> None:
    job = submitted_job(flow, "rotated")
    old = whsec(emulator)
    assert callback(flow, job, old) == 200  # the secret is cached now
    # When the provider rotates its secret and signs the next callback with the new one
    new = rotate(emulator)
    assert callback(flow, job, new) == 200  # no cold start needed
    assert len(secret_reads) == 2  # the first read, and one after the bad signature
    # Then a callback signed just before the rotation still verifies, within the grace period only
    assert callback(flow, job, old) == 200
    flow.clock.advance(SIGNING_GRACE_SECONDS + 1)
    assert callback(flow, job, old) == 401
    assert callback(flow, job, new) == 200


def test_bad_signatures_with_a_valid_token_ask_the_provider_at_most_once_a_minute(
        flow: Flow, emulator: Emulator, secret_reads: list[str]) -> None:
    job = submitted_job(flow, "flood")
    forged = "whsec_" + "0" * 48
    assert callback(flow, job, whsec(emulator)) == 200
    reads = len(secret_reads)
    # A flood of bad signatures, with our token, within one minute: one extra provider call
    assert {callback(flow, job, forged) for _ in range(20)} == {401}
    assert len(secret_reads) == reads + 1
    # A minute later the next one may ask again
    flow.clock.advance(SIGNING_REFETCH_SECONDS + 1)
    assert callback(flow, job, forged) == 401
    assert len(secret_reads) == reads + 2
    # A wrong token never asks the provider anything
    body = task_body(job.provider_id, "processing")
    flow.clock.advance(SIGNING_REFETCH_SECONDS + 1)
    assert handle_callback(job.job_id, "0" * 64, signed(body, forged, ts=flow.clock()), body,
                           flow.deps).status_code == 401
    assert len(secret_reads) == reads + 2


def test_a_rotation_found_by_one_callback_is_stored_for_the_next_cold_start(
        moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    sm_flow = make_flow(moto_endpoint, unique, emulator.base_url, WAVESPEED_WEBHOOK_SECRET_ID=f"whsec-{unique}")
    sm = sm_flow.deps.secrets._client()
    sm.create_secret(Name=f"whsec-{unique}", SecretString=whsec(emulator))
    job = submitted_job(sm_flow, "stored")
    new = rotate(emulator)
    assert callback(sm_flow, job, new) == 200
    assert sm.get_secret_value(SecretId=f"whsec-{unique}")["SecretString"] == new


def test_the_handler_counts_each_bad_signature_in_a_metric(
        flow: Flow, emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    import os

    job = submitted_job(flow, "metric")
    env = {"S2V_BUCKET": flow.bucket, "S2V_JOBS_TABLE": flow.table, "POWERTOOLS_METRICS_NAMESPACE": "s2v",
           "POWERTOOLS_SERVICE_NAME": "s2v"}
    with mock.patch.dict(os.environ, env):
        spec = importlib.util.spec_from_file_location("webhook_metric_app", FUNCTIONS / "webhook" / "app.py")
        assert spec and spec.loader
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
    app.deps = flow.deps
    context = mock.Mock(function_name="webhook", memory_limit_in_mb=128, aws_request_id="r",
                        invoked_function_arn="arn:aws:lambda:us-east-1:1:function:webhook")
    body = task_body(job.provider_id, "processing")

    def metric_after(secret: str) -> float:
        capsys.readouterr()
        event = http_event(job.job_id, token(job.job_id), signed(body, secret), body.decode(), b64=False)
        app.handler(event, context)
        emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
        values = [doc.get("WebhookSignatureFailures", 0) for doc in emitted]
        return sum(sum(v) if isinstance(v, list) else float(v) for v in values)

    assert metric_after("whsec_" + "1" * 48) == 1
    assert metric_after(whsec(emulator)) == 0
