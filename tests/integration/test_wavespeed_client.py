"""The WaveSpeed client over real HTTP: against the emulator, and against small loopback servers
that answer exactly the failure under test.

Submit is the paid call: each failure must land in the right class (not accepted / outcome
unknown / rejected) and the POST must never be sent twice. Reads retry with backoff; the API key
never shows in an error, a repr or a log line.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NameResolutionError

from helpers.provider_http import (
    LoopbackServer,
    Recorded,
    Reply,
    envelope,
    refusing_port,
    scripted,
    site,
    unresponsive_port,
)
from helpers.provider_media import png, tone_wav
from s2v.adapters.providers.wavespeed import MODEL, PredictionPage, SubmitRequest, WaveSpeedClient
from s2v.model.errors import ConfigError, ProviderError, SubmitNotAccepted, SubmitOutcomeUnknown
from s2v_local.emulator import Emulator, Faults

API_KEY = "sk-live-7d3e9b41-never-print-me"
WEBHOOK = "https://hooks.example.test/webhook/job-1?token=tok-5ec2e7"
TASK = {"id": "task-1", "model": MODEL, "status": "created", "outputs": [], "has_nsfw_contents": [],
        "urls": {"get": "https://api/predictions/task-1/result"}, "created_at": "2025-01-01T00:00:00.000Z",
        "error": "", "timings": {"inference": 0}}


class Sleeps(list[float]):
    """A fake ``sleep`` that records the delays asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class MaxJitter(random.Random):
    """Full jitter that always draws the top of its range, so backoff delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture(scope="module")
def inputs() -> Iterator[LoopbackServer]:
    with site({"/face.png": (png(), "image/png"), "/speech.wav": (tone_wav(1.0), "audio/wav")}) as server:
        yield server


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0.1) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults(emulator: Emulator) -> None:
    emulator.faults = Faults()


def client(base_url: str, **options: Any) -> WaveSpeedClient:
    options = {"timeout": 5.0, "sleep": Sleeps(), "rng": MaxJitter(), **options}
    return WaveSpeedClient(base_url, API_KEY, **options)


def request_for(inputs: LoopbackServer, **params: Any) -> SubmitRequest:
    return SubmitRequest(image_url=inputs.url("/face.png"), audio_url=inputs.url("/speech.wav"), **params)


# ------------------------------------------------------------------------------------- submit

def test_submit_to_the_emulator_returns_the_created_task_which_then_completes(
        emulator: Emulator, inputs: LoopbackServer) -> None:
    wavespeed = client(emulator.base_url)
    prediction = wavespeed.submit(request_for(inputs))
    assert prediction.status == "created" and prediction.model == MODEL
    assert prediction.urls_get == f"{emulator.base_url}/api/v3/predictions/{prediction.id}/result"
    emulator.wait_for_task(prediction.id)
    done = wavespeed.result(prediction.id)
    assert done.is_completed and done.outputs == (f"{emulator.output_base_url}/predictions/{prediction.id}/1.mp4",)
    assert done.inference_ms is not None and done.inference_ms >= 100


def test_submit_sends_the_documented_request_once() -> None:
    with scripted(Reply(json=envelope(TASK))) as server:
        prediction = client(server.base_url + "/").submit(
            SubmitRequest("https://in/face.png", "https://in/speech.wav", prompt="calm", resolution="720p", seed=42),
            webhook_url=WEBHOOK)
    assert prediction.id == "task-1"
    [sent] = server.received
    url = urlsplit(sent.path)
    assert sent.method == "POST" and url.path == "/api/v3/wavespeed-ai/wan-2.2/speech-to-video"
    assert parse_qs(url.query) == {"webhook": [WEBHOOK]}
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.json() == {"image": "https://in/face.png", "audio": "https://in/speech.wav", "prompt": "calm",
                           "resolution": "720p", "seed": 42}


def test_submit_without_a_webhook_sends_no_query() -> None:
    with scripted(Reply(json=envelope(TASK))) as server:
        client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert urlsplit(server.received[0].path).query == ""


@pytest.mark.parametrize("status", [429, 503])
def test_busy_answers_are_not_accepted_with_their_retry_after(status: int) -> None:
    with scripted(Reply(status, json=envelope(None, status, "slow down"), headers={"Retry-After": "7"})) as server, \
            pytest.raises(SubmitNotAccepted) as caught:
        client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert caught.value.status_code == status and caught.value.retry_after == 7.0 and caught.value.retryable
    assert len(server.received) == 1  # never retried inside the client


def test_an_http_date_retry_after_is_read_as_seconds() -> None:
    later = formatdate(time.time() + 120, usegmt=True)
    with scripted(Reply(429, json=envelope(None, 429, "busy"), headers={"Retry-After": later})) as server, \
            pytest.raises(SubmitNotAccepted) as caught:
        client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert caught.value.retry_after is not None and 100 < caught.value.retry_after <= 120


def test_the_emulators_429_is_not_accepted_and_creates_no_task(emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(submit_429=1, retry_after_seconds=3)
    before = emulator.submission_count
    with pytest.raises(SubmitNotAccepted) as caught:
        client(emulator.base_url).submit(request_for(inputs))
    assert caught.value.retry_after == 3.0
    assert emulator.submission_count == before
    assert client(emulator.base_url).submit(request_for(inputs)).status == "created"  # the fault was used up


def test_a_refused_connection_is_not_accepted() -> None:
    with refusing_port() as port, pytest.raises(SubmitNotAccepted) as caught:
        client(f"http://127.0.0.1:{port}").submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert "connection refused" in caught.value.message


def test_a_connect_timeout_is_not_accepted() -> None:
    with unresponsive_port() as port, pytest.raises(SubmitNotAccepted) as caught:
        client(f"http://127.0.0.1:{port}", timeout=0.5).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert "connect timeout" in caught.value.message


class FailingAdapter(HTTPAdapter):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def send(self, *args: Any, **kwargs: Any) -> requests.Response:
        raise self.error


def test_a_dns_failure_is_not_accepted() -> None:
    reason = NameResolutionError("api.wavespeed.ai", None, OSError("Name or service not known"))  # type: ignore[arg-type]
    session = requests.Session()
    session.mount("https://", FailingAdapter(requests.ConnectionError(MaxRetryError(None, "/", reason))))  # type: ignore[arg-type]
    with pytest.raises(SubmitNotAccepted) as caught:
        client("https://api.wavespeed.ai", session=session).submit(SubmitRequest("https://a", "https://b"))
    assert "host name not found" in caught.value.message


def test_a_read_timeout_after_sending_is_an_unknown_outcome() -> None:
    with scripted(Reply(json=envelope(TASK), delay=3.0)) as server, \
            pytest.raises(SubmitOutcomeUnknown) as caught:
        client(server.base_url, timeout=0.3).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert "read timeout" in caught.value.message and not caught.value.retryable
    assert len(server.received) == 1


def test_a_slow_emulator_accepts_the_task_the_client_could_not_hear_about(
        emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(submit_delay_seconds=2.0)
    before = emulator.submission_count
    with pytest.raises(SubmitOutcomeUnknown):
        client(emulator.base_url, timeout=0.3).submit(request_for(inputs))
    assert emulator.submission_count == before + 1  # it was accepted: resending would pay twice


def test_a_500_after_the_emulator_accepted_is_an_unknown_outcome(emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(submit_500_after_accept=1)
    before = emulator.submission_count
    with pytest.raises(SubmitOutcomeUnknown):
        client(emulator.base_url).submit(request_for(inputs))
    assert emulator.submission_count == before + 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_are_unknown_outcomes(status: int) -> None:
    with scripted(Reply(status, body=b"<html>upstream trouble</html>")) as server, \
            pytest.raises(SubmitOutcomeUnknown) as caught:
        client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert str(status) in caught.value.message and len(server.received) == 1


@pytest.mark.parametrize("reply", [
    Reply(json=envelope(TASK), drop="before_status"),
    Reply(json=envelope(TASK), drop="mid_body"),
    Reply(200, body=b"<html>not json</html>"),
    Reply(200, json=envelope({"status": "created"})),  # no task id
    Reply(200, json=envelope(None)),
    Reply(200, json=envelope(None, 5000, "internal error")),
], ids=["dropped-before-answer", "dropped-mid-body", "unparseable-2xx", "no-id", "no-data", "code-5000"])
def test_answers_that_leave_acceptance_unclear_are_unknown_outcomes(reply: Reply) -> None:
    with scripted(reply) as server, pytest.raises(SubmitOutcomeUnknown):
        client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert len(server.received) == 1


def test_invalid_parameters_are_rejected_for_good(emulator: Emulator, inputs: LoopbackServer) -> None:
    with pytest.raises(ProviderError) as caught:
        client(emulator.base_url).submit(request_for(inputs, resolution="1080p"))
    error = caught.value
    assert type(error) is ProviderError and error.status_code == 400 and not error.retryable
    assert "resolution" in error.message


def test_a_wrong_key_is_rejected_for_good(emulator: Emulator, inputs: LoopbackServer) -> None:
    with pytest.raises(ProviderError) as caught:
        WaveSpeedClient(emulator.base_url, "sk-wrong").submit(request_for(inputs))
    assert type(caught.value) is ProviderError and caught.value.status_code == 401 and not caught.value.retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_rejections(status: int) -> None:
    with scripted(Reply(status, json=envelope(None, status, "bad request"))) as server, \
            pytest.raises(ProviderError) as caught:
        client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert type(caught.value) is ProviderError
    assert caught.value.status_code == status and caught.value.provider_code == status and not caught.value.retryable


def test_an_error_envelope_inside_http_200_is_a_rejection() -> None:
    with scripted(Reply(200, json=envelope(None, 1401, "invalid parameter: seed"))) as server, \
            pytest.raises(ProviderError) as caught:
        client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
    assert type(caught.value) is ProviderError
    assert caught.value.provider_code == 1401 and "seed" in caught.value.message and not caught.value.retryable


def test_a_redirect_is_not_followed_so_the_paid_post_is_not_sent_twice() -> None:
    with scripted(Reply(json=envelope(TASK))) as target, \
            scripted(Reply(307, headers={"Location": target.url(f"/api/v3/{MODEL}")})) as server:
        with pytest.raises(ProviderError) as caught:
            client(server.base_url).submit(SubmitRequest("https://in/a.png", "https://in/a.wav"))
        assert caught.value.status_code == 307
        assert target.received == []


# ------------------------------------------------------------------------------------- result

def test_result_retries_busy_and_failing_reads_honouring_retry_after() -> None:
    sleeps = Sleeps()
    with scripted(Reply(429, json=envelope(None, 429, "busy"), headers={"Retry-After": "3"}),
                  Reply(503, body=b"unavailable"),
                  Reply(500, body=b"oops"),
                  Reply(json=envelope({**TASK, "status": "processing"}))) as server:
        prediction = client(server.base_url, sleep=sleeps).result("task-1")
    assert prediction.status == "processing"
    assert sleeps == [3.0, 1.0, 2.0]  # Retry-After, then full jitter capped at 0.5 × 2^attempt
    assert [r.path for r in server.received] == ["/api/v3/predictions/task-1/result"] * 4


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    sleeps = Sleeps()
    with scripted(Reply(502, body=b"bad gateway")) as server, pytest.raises(ProviderError):
        client(server.base_url, sleep=sleeps, rng=random.Random(7), max_read_retries=6, backoff_max=4.0).result("t")
    assert len(sleeps) == 6
    for attempt, delay in enumerate(sleeps):
        assert 0.0 <= delay <= min(4.0, 0.5 * 2 ** attempt)


def test_result_gives_up_retryably_after_the_configured_retries() -> None:
    sleeps = Sleeps()
    with scripted(Reply(503, body=b"unavailable")) as server, pytest.raises(ProviderError) as caught:
        client(server.base_url, sleep=sleeps, max_read_retries=2).result("task-1")
    assert caught.value.retryable and caught.value.status_code == 503
    assert len(server.received) == 3 and len(sleeps) == 2


def test_a_retry_after_longer_than_the_backoff_cap_is_handed_to_the_caller() -> None:
    sleeps = Sleeps()
    with scripted(Reply(429, body=b"busy", headers={"Retry-After": "60"})) as server, \
            pytest.raises(ProviderError) as caught:
        client(server.base_url, sleep=sleeps).result("task-1")
    assert caught.value.retryable and caught.value.retry_after == 60.0
    assert sleeps == [] and len(server.received) == 1


def test_result_retries_connection_failures() -> None:
    sleeps = Sleeps()
    with refusing_port() as port, pytest.raises(ProviderError) as caught:
        client(f"http://127.0.0.1:{port}", sleep=sleeps, max_read_retries=3).result("task-1")
    assert caught.value.retryable and len(sleeps) == 3


def test_result_retries_read_timeouts_and_dropped_answers() -> None:
    sleeps = Sleeps()
    with scripted(Reply(json=envelope(TASK), delay=2.0), Reply(json=envelope(TASK), drop="mid_body"),
                  Reply(json=envelope(TASK), drop="before_status"), Reply(200, body=b"{truncated"),
                  Reply(json=envelope(TASK))) as server:
        prediction = client(server.base_url, sleep=sleeps, timeout=0.3).result("task-1")
    assert prediction.id == "task-1" and len(sleeps) == 4 and len(server.received) == 5


def test_the_emulators_transient_faults_are_retried(emulator: Emulator, inputs: LoopbackServer) -> None:
    task = client(emulator.base_url).submit(request_for(inputs))
    emulator.faults = Faults(result_429=1, result_500=1, retry_after_seconds=2)
    sleeps = Sleeps()
    assert client(emulator.base_url, sleep=sleeps).result(task.id).id == task.id
    assert sleeps == [2.0, 1.0]  # Retry-After, then the second attempt's jitter cap


def test_an_unknown_prediction_is_a_404_without_retries(emulator: Emulator) -> None:
    sleeps = Sleeps()
    with pytest.raises(ProviderError) as caught:
        client(emulator.base_url, sleep=sleeps).result("no-such-task")
    assert caught.value.status_code == 404 and not caught.value.retryable and sleeps == []


def test_a_404_inside_http_200_is_a_404() -> None:
    with scripted(Reply(200, json=envelope(None, 404, "prediction not found"))) as server, \
            pytest.raises(ProviderError) as caught:
        client(server.base_url).result("gone")
    assert caught.value.status_code == 404 and caught.value.provider_code == 404 and not caught.value.retryable


def test_result_ids_are_escaped_into_the_path() -> None:
    with scripted(Reply(json=envelope(TASK))) as server:
        client(server.base_url).result("../../media/upload")
    assert server.received[0].path == "/api/v3/predictions/..%2F..%2Fmedia%2Fupload/result"


# ------------------------------------------------------------------------------- upload, secret

def test_upload_media_returns_a_url_serving_the_same_bytes(emulator: Emulator) -> None:
    audio = tone_wav(0.3)
    url = client(emulator.base_url).upload_media(audio, "speech.wav", "audio/wav")
    assert url.startswith(emulator.base_url)
    assert requests.get(url, timeout=5).content == audio


def test_upload_media_posts_a_multipart_file_field() -> None:
    with scripted(Reply(json=envelope({"download_url": "https://cdn/x.wav"}))) as server:
        url = client(server.base_url).upload_media(b"RIFF....WAVE", "speech.wav", "audio/wav")
    assert url == "https://cdn/x.wav"
    [sent] = server.received
    assert sent.path == "/api/v3/media/upload/binary"
    assert sent.headers["Content-Type"].startswith("multipart/form-data")
    assert b'name="file"; filename="speech.wav"' in sent.body and b"Content-Type: audio/wav" in sent.body


@pytest.mark.parametrize(("reply", "retryable"), [
    (Reply(500, body=b"oops"), True),
    (Reply(429, body=b"busy"), True),
    (Reply(413, json=envelope(None, 413, "too large")), False),
    (Reply(json=envelope({"url": "no download_url"})), True),
])
def test_upload_failures_say_whether_to_retry(reply: Reply, retryable: bool) -> None:
    with scripted(reply) as server, pytest.raises(ProviderError) as caught:
        client(server.base_url).upload_media(b"data", "a.wav", "audio/wav")
    assert caught.value.retryable is retryable and len(server.received) == 1


def test_the_webhook_secret_comes_back_as_given(emulator: Emulator) -> None:
    assert client(emulator.base_url).webhook_secret() == emulator.webhook_secret
    assert emulator.webhook_secret.startswith("whsec_")


@pytest.mark.parametrize("payload", [
    envelope({"secret": "whsec_abc"}), envelope("whsec_abc"), {"secret": "whsec_abc"},
    envelope({"webhook_secret": "whsec_abc"}),
])
def test_the_webhook_secret_is_found_in_any_plausible_shape(payload: dict[str, Any]) -> None:
    with scripted(Reply(json=payload)) as server:
        assert client(server.base_url).webhook_secret() == "whsec_abc"


def test_a_webhook_secret_answer_without_a_secret_is_an_error() -> None:
    with scripted(Reply(json=envelope({}))) as server, pytest.raises(ProviderError):
        client(server.base_url).webhook_secret()


# ------------------------------------------------------------------------------- list, delete, balance

LISTED = [
    {**TASK, "id": "task-3", "status": "completed", "created_at": "2025-05-19T06:09:15.948268264Z",
     "outputs": ["https://d1q70pf5vjeyhc.cloudfront.net/predictions/task-3/1.mp4"],
     "input": {"image": "https://in/a.png", "audio": "https://in/a.wav", "resolution": "480p"}},
    {**TASK, "id": "task-2", "model": "wavespeed-ai/flux-dev", "status": "failed", "error": "nsfw"},
    "not a task", {"status": "completed"},  # unreadable items are skipped
]


def test_list_predictions_posts_the_paging_body_and_reads_the_page() -> None:
    with scripted(Reply(json=envelope({"page": 2, "total": 57, "items": LISTED}))) as server:
        page = client(server.base_url).list_predictions(page=2, page_size=50)
    assert isinstance(page, PredictionPage) and page.page == 2 and page.total == 57
    assert [p.id for p in page.items] == ["task-3", "task-2"]
    newest = page.items[0]
    assert newest.input == {"image": "https://in/a.png", "audio": "https://in/a.wav", "resolution": "480p"}
    assert newest.created_at_epoch == pytest.approx(1747634955.948268264)
    assert page.items[1].input == {} and page.items[1].model == "wavespeed-ai/flux-dev"
    [sent] = server.received
    assert sent.method == "POST" and sent.path == "/api/v3/predictions"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.json() == {"page": 2, "page_size": 50, "include_inputs": True}


def test_list_predictions_sends_its_filters_as_iso_8601_utc() -> None:
    after = datetime(2025, 5, 19, 8, 0, tzinfo=timezone(timedelta(hours=2)))
    with scripted(Reply(json=envelope({"page": 1, "total": 0, "items": []}))) as server:
        page = client(server.base_url).list_predictions(
            model=MODEL, created_after=after, created_before="2025-05-20T00:00:00Z")
    assert page.items == () and page.total == 0 and page.page == 1
    assert server.received[0].json() == {
        "page": 1, "page_size": 100, "include_inputs": True, "model": MODEL,
        "created_after": "2025-05-19T06:00:00.000Z", "created_before": "2025-05-20T00:00:00Z"}


def test_a_list_answer_without_page_or_total_keeps_the_page_asked_for() -> None:
    with scripted(Reply(json=envelope({"items": LISTED[:1]}))) as server:
        page = client(server.base_url).list_predictions(page=3, page_size=1)
    assert page.page == 3 and page.total is None and len(page.items) == 1


@pytest.mark.parametrize(("page", "page_size"), [(0, 10), (-1, 10), (1, 0), (1, 101), (1.5, 10), (True, 10),
                                                 (1, "100")])
def test_list_paging_is_validated_before_anything_is_sent(page: Any, page_size: Any) -> None:
    with scripted(Reply(json=envelope({"items": []}))) as server, pytest.raises(ValueError):
        client(server.base_url).list_predictions(page=page, page_size=page_size)
    assert server.received == []


def test_list_retries_busy_failing_and_slow_answers() -> None:
    sleeps = Sleeps()
    with scripted(Reply(429, json=envelope(None, 429, "busy"), headers={"Retry-After": "2"}),
                  Reply(502, body=b"bad gateway"), Reply(json=envelope({"items": []}), delay=2.0),
                  Reply(200, json=envelope(None, 5003, "unavailable")),
                  Reply(json=envelope({"page": 1, "total": 1, "items": LISTED[:1]}))) as server:
        page = client(server.base_url, sleep=sleeps, timeout=0.3).list_predictions(page_size=10)
    assert [p.id for p in page.items] == ["task-3"]
    assert sleeps == [2.0, 1.0, 2.0, 4.0] and len(server.received) == 5
    assert {r.json()["page_size"] for r in server.received} == {10}


@pytest.mark.parametrize(("reply", "retryable", "status"), [
    (Reply(401, json=envelope(None, 401, "invalid api key")), False, 401),
    (Reply(200, json=envelope(None, 1401, "invalid parameter: page_size")), False, 200),
    (Reply(500, body=b"oops"), True, 500),
    (Reply(json=envelope({"page": 1})), True, None),  # no items
])
def test_list_failures_say_whether_to_retry(reply: Reply, retryable: bool, status: int | None) -> None:
    with scripted(reply) as server, pytest.raises(ProviderError) as caught:
        client(server.base_url, max_read_retries=1).list_predictions()
    assert caught.value.retryable is retryable and caught.value.status_code == status


def test_delete_sends_a_delete_and_returns_the_deleted_task() -> None:
    with scripted(Reply(json=envelope({"id": "task-1", "status": "deleted"}))) as server:
        deleted = client(server.base_url).delete_prediction("task-1")
    assert deleted.id == "task-1" and deleted.status == "deleted" and deleted.is_failed
    [sent] = server.received
    assert sent.method == "DELETE" and sent.path == "/api/v3/predictions/task-1" and sent.body == b""
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"


def test_a_delete_answer_without_a_task_still_names_the_deleted_id() -> None:
    with scripted(Reply(json=envelope({}))) as server:
        deleted = client(server.base_url).delete_prediction("a/b")
    assert deleted.id == "a/b" and deleted.status == "deleted"
    assert server.received[0].path == "/api/v3/predictions/a%2Fb"


def test_delete_is_retried_because_deleting_twice_is_harmless() -> None:
    sleeps = Sleeps()
    with scripted(Reply(503, body=b"unavailable"), Reply(json=envelope(TASK), drop="before_status"),
                  Reply(json=envelope({"id": "task-1", "status": "deleted"}))) as server:
        deleted = client(server.base_url, sleep=sleeps).delete_prediction("task-1")
    assert deleted.status == "deleted" and len(sleeps) == 2
    assert [r.method for r in server.received] == ["DELETE"] * 3


@pytest.mark.parametrize("reply", [Reply(404, json=envelope(None, 404, "prediction not found")),
                                   Reply(200, json=envelope(None, 404, "prediction not found"))])
def test_deleting_an_unknown_prediction_is_a_404_without_retries(reply: Reply) -> None:
    sleeps = Sleeps()
    with scripted(reply) as server, pytest.raises(ProviderError) as caught:
        client(server.base_url, sleep=sleeps).delete_prediction("gone")
    assert caught.value.status_code == 404 and not caught.value.retryable
    assert sleeps == [] and len(server.received) == 1


def test_delete_without_an_id_sends_nothing() -> None:
    with scripted(Reply(json=envelope({}))) as server, pytest.raises(ProviderError):
        client(server.base_url).delete_prediction("")
    assert server.received == []


@pytest.mark.parametrize("data", [{"balance": 12.5, "currency": "USD"}, {"balance": "12.5"}, {"balance": 12.5}])
def test_balance_reads_data_balance_in_usd(data: dict[str, Any]) -> None:
    with scripted(Reply(json=envelope(data))) as server:
        assert client(server.base_url).balance() == 12.5
    [sent] = server.received
    assert sent.method == "GET" and sent.path == "/api/v3/account/balance"


def test_balance_retries_transient_failures() -> None:
    sleeps = Sleeps()
    with scripted(Reply(500, body=b"oops"), Reply(429, body=b"busy"), Reply(json=envelope({"balance": 0}))) as server:
        assert client(server.base_url, sleep=sleeps).balance() == 0.0
    assert len(server.received) == 3 and sleeps == [0.5, 1.0]


@pytest.mark.parametrize("reply", [Reply(503, body=b"unavailable"), Reply(json=envelope({"currency": "USD"})),
                                   Reply(json=envelope({"balance": "lots"})), Reply(json=envelope({"balance": True}))])
def test_balance_failures_are_retryable_provider_errors(reply: Reply) -> None:
    with scripted(reply) as server, pytest.raises(ProviderError) as caught:
        client(server.base_url, max_read_retries=1).balance()
    assert caught.value.retryable


def test_a_refused_key_on_balance_is_not_retried() -> None:
    with scripted(Reply(401, json=envelope(None, 401, "invalid api key"))) as server, \
            pytest.raises(ProviderError) as caught:
        client(server.base_url).balance()
    assert caught.value.status_code == 401 and not caught.value.retryable and len(server.received) == 1


def test_against_the_emulator_the_list_finds_a_task_with_its_input_and_delete_and_balance_work(
        inputs: LoopbackServer) -> None:
    with Emulator(api_key=API_KEY, render_seconds=0.1, balance=5.0) as own:  # no other test's renders
        wavespeed = client(own.base_url)
        assert wavespeed.balance() == 5.0
        task = wavespeed.submit(request_for(inputs, prompt="listed"))
        own.wait_for_task(task.id)
        page = wavespeed.list_predictions(model=MODEL, page_size=100)
        assert [p.id for p in page.items] == [task.id] and page.total == 1 and page.page == 1
        [found] = page.items
        assert found.is_completed and found.input["prompt"] == "listed"
        assert found.input["audio"] == inputs.url("/speech.wav")
        assert found.created_at_epoch is not None and abs(found.created_at_epoch - time.time()) < 60
        assert len(wavespeed.list_predictions().items) > 1  # web predictions of other models too
        assert wavespeed.balance() == pytest.approx(5.0 - 3 * 0.03)  # 1 s of audio bills the 3 s minimum
        deleted = wavespeed.delete_prediction(task.id)
        assert deleted.id == task.id and deleted.status == "deleted"
        assert wavespeed.result(task.id).is_failed  # "deleted" is terminal, as in the SDK
        with pytest.raises(ProviderError) as caught:
            wavespeed.delete_prediction("no-such-task")
        assert caught.value.status_code == 404


def test_the_emulators_list_delete_and_balance_faults_are_retried(emulator: Emulator, inputs: LoopbackServer) -> None:
    task = client(emulator.base_url).submit(request_for(inputs))
    emulator.wait_for_task(task.id)
    emulator.faults = Faults(list_500=1, list_timeout=1, delete_500=1, balance_500=1, balance_timeout=1,
                             hang_seconds=1.0)
    sleeps = Sleeps()
    wavespeed = client(emulator.base_url, sleep=sleeps, timeout=0.4)
    assert wavespeed.list_predictions(page_size=5).items
    assert wavespeed.delete_prediction(task.id).status == "deleted"
    assert isinstance(wavespeed.balance(), float)
    assert len(sleeps) == 5  # one retry per injected fault


# ------------------------------------------------------------------------------- hygiene

class RecordingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[Any] = []

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.timeouts.append(kwargs.get("timeout"))
        return super().request(*args, **kwargs)


def test_every_call_has_a_connect_and_a_read_timeout(emulator: Emulator, inputs: LoopbackServer) -> None:
    session = RecordingSession()
    wavespeed = WaveSpeedClient(emulator.base_url, API_KEY, timeout=12.0, connect_timeout=3.0, session=session)
    task = wavespeed.submit(request_for(inputs))
    wavespeed.result(task.id)
    wavespeed.upload_media(b"x", "a.wav", "audio/wav")
    wavespeed.webhook_secret()
    assert session.timeouts == [(3.0, 12.0)] * 4


def test_the_api_key_can_come_from_a_callable_resolved_per_call(emulator: Emulator) -> None:
    calls: list[int] = []

    def key() -> str:
        calls.append(1)
        return API_KEY

    wavespeed = WaveSpeedClient(emulator.base_url, key)
    assert calls == []
    wavespeed.webhook_secret()
    wavespeed.webhook_secret()
    assert len(calls) == 2


def test_a_base_url_that_is_not_http_fails_at_construction() -> None:
    with pytest.raises(ConfigError):
        WaveSpeedClient("api.wavespeed.ai", API_KEY)


def echo_authorization(status: int, **extra: Any) -> Reply:
    return Reply(status, body=f"denied for Authorization: Bearer {API_KEY}".encode(), **extra)


def everything_said(error: BaseException) -> str:
    return "".join([str(error), repr(error), *traceback.format_exception(error)])


def test_the_api_key_and_callback_token_never_appear_in_errors_reprs_or_logs(
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level("DEBUG", logger="s2v")  # our loggers; urllib3's DEBUG lines carry URLs by design
    request = SubmitRequest("https://in/a.png", "https://in/a.wav")
    errors: list[BaseException] = []

    def collect(call: Any) -> None:
        with pytest.raises(ProviderError) as caught:
            call()
        errors.append(caught.value)

    def echo(request_: Recorded) -> Reply:
        return echo_authorization(400)

    with LoopbackServer(echo) as server:
        collect(lambda: client(server.base_url).submit(request, webhook_url=WEBHOOK))
    for status in (429, 500):
        with scripted(echo_authorization(status)) as server:
            collect(lambda: client(server.base_url).submit(request, webhook_url=WEBHOOK))
            collect(lambda: client(server.base_url, max_read_retries=1).result("task-1"))
            collect(lambda: client(server.base_url).upload_media(b"x", "a.wav", "audio/wav"))
            collect(lambda: client(server.base_url, max_read_retries=1).webhook_secret())
            collect(lambda: client(server.base_url, max_read_retries=1).list_predictions())
            collect(lambda: client(server.base_url, max_read_retries=1).delete_prediction("task-1"))
            collect(lambda: client(server.base_url, max_read_retries=1).balance())
    with refusing_port() as port:
        collect(lambda: client(f"http://127.0.0.1:{port}").submit(request, webhook_url=WEBHOOK))
    with scripted(Reply(json=envelope(TASK), delay=2.0)) as server:
        collect(lambda: client(server.base_url, timeout=0.2).submit(request, webhook_url=WEBHOOK))
    with scripted(Reply(json=envelope(TASK), drop="before_status")) as server:
        collect(lambda: client(server.base_url).submit(request, webhook_url=WEBHOOK))

    assert len(errors) == 18
    said = "".join(everything_said(error) for error in errors)
    out, err = capfd.readouterr()
    said += caplog.text + out + err + repr(client("http://127.0.0.1:1"))
    assert "denied for Authorization" in said  # the provider's message is kept...
    assert API_KEY not in said  # ...without the key
    assert "tok-5ec2e7" not in said  # nor the callback token in the submit URL
