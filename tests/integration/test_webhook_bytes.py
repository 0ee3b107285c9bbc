"""The webhook handler authenticates on bytes before decoding anything: whatever a caller sends as
token, headers or body (non-ASCII, lone surrogates, base64 that is not UTF-8 or not base64 at all),
the answer is a 4xx, never a 500. Runs the real handler against moto and the emulator."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_webhook_auth import submitted_job, task_body, token, whsec

from helpers.flow import Flow, make_flow
from s2v.adapters.providers.wavespeed import sign_webhook
from s2v_local.emulator import Emulator

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
# Every code point, lone surrogates included: a query string or header can carry any of them.
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None), max_size=80)
PATH_IDS = ANY_TEXT.filter(bool)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=30) as em:
        yield em


@pytest.fixture(scope="module")
def flow(moto_endpoint: str, emulator: Emulator) -> Flow:
    return make_flow(moto_endpoint, "webhookbytes", emulator.base_url)


@pytest.fixture(scope="module")
def app(flow: Flow) -> ModuleType:
    # As template.yaml's Globals set them: the handler emits metrics
    env = {"S2V_BUCKET": flow.bucket, "S2V_JOBS_TABLE": flow.table, "POWERTOOLS_METRICS_NAMESPACE": "s2v",
           "POWERTOOLS_SERVICE_NAME": "s2v"}
    with mock.patch.dict(os.environ, env):
        spec = importlib.util.spec_from_file_location("webhook_bytes_app", FUNCTIONS / "webhook" / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    module.deps = flow.deps  # the flow's moto, emulator and clock
    return module


@pytest.fixture(scope="module")
def job(flow: Flow) -> Any:
    return submitted_job(flow, "bytes")


def http_event(job_id: str, tok: str, headers: dict[str, str], body: str, *, b64: bool) -> dict[str, Any]:
    # As a client must send it: percent-encoded (a request line holds no control characters or spaces)
    raw_path = "/webhook/" + quote(job_id.encode("utf-8", "surrogatepass"), safe="")
    return {
        "version": "2.0", "routeKey": "POST /webhook/{job_id}", "rawPath": raw_path,
        "rawQueryString": "token=x", "headers": headers, "queryStringParameters": {"token": tok},
        "pathParameters": {"job_id": job_id}, "body": body, "isBase64Encoded": b64,
        "requestContext": {"http": {"method": "POST", "path": raw_path, "protocol": "HTTP/1.1",
                                    "sourceIp": "198.51.100.7", "userAgent": "x"},
                           "routeKey": "POST /webhook/{job_id}", "stage": "$default", "requestId": "r",
                           "accountId": "1", "apiId": "a", "domainName": "d", "domainPrefix": "d",
                           "time": "06/Dec/2026:00:00:00 +0000", "timeEpoch": 0},
    }


def answer(app: ModuleType, event: dict[str, Any]) -> int:
    context = mock.Mock(function_name="webhook", memory_limit_in_mb=128, aws_request_id="r",
                        invoked_function_arn="arn:aws:lambda:us-east-1:1:function:webhook")
    try:
        return int(app.handler(event, context)["statusCode"])
    except Exception:  # escaping the handler is what API Gateway answers with a 500
        return 500


bodies = st.one_of(
    st.binary(max_size=200).map(lambda raw: (base64.b64encode(raw).decode(), True)),  # any bytes, base64
    ANY_TEXT.map(lambda text: (text, True)),  # claims base64 and may not be
    ANY_TEXT.map(lambda text: (text, False)),
)
headers = st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x-any"]),
                          ANY_TEXT, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tok=ANY_TEXT, job_id=PATH_IDS, sent=headers, body=bodies)
def test_any_token_path_headers_or_body_is_refused_with_a_4xx_never_a_500(
        app: ModuleType, job: Any, tok: str, job_id: str, sent: dict[str, str], body: tuple[str, bool]) -> None:
    for path_id in (job_id, job.job_id):  # an unknown job, and the real one with a wrong token
        assert answer(app, http_event(path_id, tok, sent, body[0], b64=body[1])) == 401


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=headers, body=bodies)
def test_with_the_right_token_any_unsigned_headers_or_body_get_a_4xx_never_a_500(
        app: ModuleType, job: Any, sent: dict[str, str], body: tuple[str, bool]) -> None:
    assert answer(app, http_event(job.job_id, token(job.job_id), sent, body[0], b64=body[1])) in (400, 401)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_a_correctly_signed_body_that_is_not_a_task_is_a_400_whatever_its_bytes(
        app: ModuleType, job: Any, emulator: Emulator, raw: bytes) -> None:
    # Signed over the raw bytes (not UTF-8, not JSON): authenticated, then refused as malformed
    headers = sign_webhook(raw, whsec(emulator), webhook_id=f"msg_{raw.hex()[:40]}", timestamp=int(time.time()))
    assert answer(app, http_event(job.job_id, token(job.job_id), headers, base64.b64encode(raw).decode(),
                                  b64=True)) == 400


def test_invalid_base64_with_the_right_token_is_a_400_and_a_base64_task_is_applied(
        app: ModuleType, job: Any, emulator: Emulator) -> None:
    secret = whsec(emulator)
    body = task_body(job.provider_id, "processing")
    signed = sign_webhook(body, secret, webhook_id="msg_b64", timestamp=int(time.time()))
    assert answer(app, http_event(job.job_id, token(job.job_id), signed, "not base64!", b64=True)) == 400
    assert answer(app, http_event(job.job_id, token(job.job_id), signed, base64.b64encode(body).decode(),
                                  b64=True)) == 200
    assert answer(app, http_event(job.job_id, token(job.job_id), sign_webhook(
        body, secret, webhook_id="msg_text", timestamp=int(time.time())), body.decode(), b64=False)) == 200
    assert json.loads(body)["id"] == job.provider_id
