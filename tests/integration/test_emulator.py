"""The WaveSpeed emulator over real HTTP: the documented API, real MP4s checked with ffmpeg, signed
webhooks, every fault mode, and the official ``wavespeed`` SDK working against it unchanged."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from helpers.provider_http import LoopbackServer, Recorded, refusing_port, site
from helpers.provider_media import png, probe, tone_wav, wav_seconds
from s2v.adapters.providers.wavespeed import MODEL, iso_to_epoch, verify_webhook
from s2v.model import provider_facts
from s2v_local.emulator import Emulator, Faults

API_KEY = "emulator-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAV = tone_wav(2.7)
DOCUMENTED_FIELDS = {"id", "model", "outputs", "urls", "has_nsfw_contents", "status", "created_at", "error",
                     "timings"}


@pytest.fixture(scope="module")
def inputs() -> Iterator[LoopbackServer]:
    files = {"/face.png": (png(320, 400), "image/png"), "/speech.wav": (WAV, "audio/wav"),
             "/odd.png": (png(1001, 1999), "image/png"), "/wide.png": (png(2000, 1000), "image/png"),
             "/note.png": (b"this is a text file with the wrong name", "image/png")}
    with site(files) as server:
        yield server


@pytest.fixture(scope="module")
def hooks() -> Iterator[LoopbackServer]:
    with site() as server:
        yield server


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0.3) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults(emulator: Emulator) -> None:
    emulator.faults = Faults()


def submit(emulator: Emulator, body: dict[str, Any], *, webhook: str | None = None,
           headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{emulator.base_url}/api/v3/{MODEL}", json=body, headers=AUTH if headers is None else headers,
                         params={"webhook": webhook} if webhook else None, timeout=30)


def pair(inputs: LoopbackServer, image: str = "/face.png", **params: Any) -> dict[str, Any]:
    return {"image": inputs.url(image), "audio": inputs.url("/speech.wav"), **params}


def result(emulator: Emulator, task_id: str) -> requests.Response:
    return requests.get(f"{emulator.base_url}/api/v3/predictions/{task_id}/result", headers=AUTH, timeout=10)


def accepted(emulator: Emulator, body: dict[str, Any], **options: Any) -> str:
    response = submit(emulator, body, **options)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["id"])


def render(emulator: Emulator, body: dict[str, Any], **options: Any) -> dict[str, Any]:
    task_id = accepted(emulator, body, **options)
    emulator.wait_for_task(task_id)
    return dict(result(emulator, task_id).json()["data"])


def hooks_for(hooks: LoopbackServer, task_id: str, count: int) -> list[Recorded]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = [r for r in hooks.received if r.method == "POST" and json.loads(r.body)["id"] == task_id]
        if len(mine) >= count:
            return mine
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} webhooks for {task_id}")


# ------------------------------------------------------------------------------- lifecycle

def test_a_task_is_created_processes_and_completes_with_a_playable_mp4(
        emulator: Emulator, inputs: LoopbackServer, tmp_path: Path) -> None:
    response = submit(emulator, pair(inputs, prompt="a calm talk", seed=7))
    assert response.status_code == 200
    answer = response.json()
    assert (answer["code"], answer["message"]) == (200, "success")
    created = answer["data"]
    assert set(created) == DOCUMENTED_FIELDS
    assert created["status"] == "created" and created["model"] == MODEL
    assert created["outputs"] == [] and created["error"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created["created_at"])
    assert created["urls"]["get"] == f"{emulator.base_url}/api/v3/predictions/{created['id']}/result"

    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "completed" not in seen:
        seen.add(result(emulator, created["id"]).json()["data"]["status"])
        time.sleep(0.02)
    assert {"processing", "completed"} <= seen

    done = result(emulator, created["id"]).json()["data"]
    assert done["outputs"] == [emulator.output_url(created["id"])]
    assert done["has_nsfw_contents"] == [False]
    assert isinstance(done["timings"]["inference"], int) and done["timings"]["inference"] >= 300
    video = requests.get(done["outputs"][0], timeout=10)
    assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
    assert int(video.headers["Content-Length"]) == len(video.content) > 1000
    media = probe(video.content)
    assert media.video_codec == "h264" and media.audio_codec == "aac" and media.pixel_format == "yuv420p"
    assert media.duration_seconds == pytest.approx(wav_seconds(WAV), abs=0.2)
    assert (media.width, media.height) == (320, 400)


@pytest.mark.parametrize(("image", "resolution", "short_side", "long_side"), [
    ("/odd.png", "480p", 480, 854), ("/wide.png", "720p", 720, 1280), ("/wide.png", "480p", 480, 854),
])
def test_large_images_are_scaled_down_to_the_resolution_with_even_sides(
        emulator: Emulator, inputs: LoopbackServer, image: str, resolution: str, short_side: int,
        long_side: int) -> None:
    done = render(emulator, pair(inputs, image, resolution=resolution))
    media = probe(emulator.output_path(done["id"]))
    assert media.width % 2 == 0 and media.height % 2 == 0
    assert min(media.width, media.height) <= short_side and max(media.width, media.height) <= long_side
    assert min(media.width, media.height) >= short_side * 0.9 or max(media.width, media.height) >= long_side * 0.9


def test_a_sync_mode_submit_answers_with_the_finished_task(emulator: Emulator, inputs: LoopbackServer) -> None:
    response = submit(emulator, pair(inputs, enable_sync_mode=True))
    data = response.json()["data"]
    assert data["status"] == "completed" and data["outputs"]


def test_a_sync_mode_timeout_looks_like_the_real_one(
        emulator: Emulator, inputs: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator, "sync_timeout_seconds", 0.1)
    data = submit(emulator, pair(inputs, enable_sync_mode=True)).json()["data"]
    assert data["status"] in ("created", "processing") and data["code"] == 5004
    assert "Sync mode timed out" in data["error"]
    assert emulator.wait_for_task(data["id"])["status"] == "completed"  # the task keeps running


def test_tasks_beyond_the_concurrency_wait_as_created(inputs: LoopbackServer) -> None:
    with Emulator(api_key=API_KEY, render_seconds=1.0, concurrency=1) as single:
        first, second = accepted(single, pair(inputs)), accepted(single, pair(inputs))
        time.sleep(0.3)
        assert (single.tasks[first]["status"], single.tasks[second]["status"]) == ("processing", "created")
        assert single.submission_count == 2


def test_stop_does_not_wait_for_a_slow_render(inputs: LoopbackServer) -> None:
    emulator = Emulator(api_key=API_KEY, render_seconds=60)
    emulator.start()
    accepted(emulator, pair(inputs))
    started = time.monotonic()
    emulator.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{emulator.base_url}/api/v3/webhook/secret", headers=AUTH, timeout=2)


# ------------------------------------------------------------------------------- envelopes

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                                     {"Authorization": f"Basic {API_KEY}"}])
def test_every_api_call_needs_the_bearer_key(emulator: Emulator, inputs: LoopbackServer,
                                             headers: dict[str, str]) -> None:
    calls = [
        lambda: submit(emulator, pair(inputs), headers=headers),
        lambda: requests.get(f"{emulator.base_url}/api/v3/predictions/x/result", headers=headers, timeout=5),
        lambda: requests.get(f"{emulator.base_url}/api/v3/webhook/secret", headers=headers, timeout=5),
        lambda: requests.post(f"{emulator.base_url}/api/v3/media/upload/binary", headers=headers,
                              files={"file": ("a.wav", b"x", "audio/wav")}, timeout=5),
    ]
    before = emulator.submission_count
    for call in calls:
        response = call()
        assert response.status_code == 401
        assert response.json() == {"code": 401, "message": response.json()["message"], "data": None}
        assert "API key" in response.json()["message"]
    assert emulator.submission_count == before


@pytest.mark.parametrize(("body", "mentions"), [
    ({"audio": "https://a/b.wav"}, "image"),
    ({"image": "", "audio": "https://a/b.wav"}, "image"),
    ({"image": "https://a/b.png"}, "audio"),
    ({"image": "https://a/b.png", "audio": 5}, "audio"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "resolution": "1080p"}, "resolution"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "seed": 2147483648}, "seed"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "seed": -2}, "seed"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "seed": "5"}, "seed"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "seed": True}, "seed"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "seed": 1.5}, "seed"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "prompt": 5}, "prompt"),
    ({"image": "https://a/b.png", "audio": "https://a/b.wav", "enable_sync_mode": "yes"}, "enable_sync_mode"),
    (["https://a/b.png", "https://a/b.wav"], "JSON object"),
])
def test_invalid_parameters_get_a_400_envelope_naming_the_problem(emulator: Emulator, body: Any,
                                                                  mentions: str) -> None:
    before = emulator.submission_count
    response = submit(emulator, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == 400 and answer["data"] is None and mentions in answer["message"]
    assert emulator.submission_count == before


def test_the_boundary_seeds_are_valid(emulator: Emulator, inputs: LoopbackServer) -> None:
    for seed in (-1, 0, 2147483647):
        assert submit(emulator, pair(inputs, seed=seed)).status_code == 200


def test_a_webhook_that_is_not_http_is_rejected(emulator: Emulator, inputs: LoopbackServer) -> None:
    response = submit(emulator, pair(inputs), webhook="ftp://hooks/x")
    assert response.status_code == 400 and "webhook" in response.json()["message"]


def test_a_body_that_is_not_json_is_rejected(emulator: Emulator) -> None:
    response = requests.post(f"{emulator.base_url}/api/v3/{MODEL}", data=b"image=x", headers=AUTH, timeout=5)
    assert response.status_code == 400 and response.json()["code"] == 400


def test_unknown_predictions_and_models_are_404_envelopes(emulator: Emulator) -> None:
    missing = result(emulator, "0123456789abcdef")
    assert missing.status_code == 404
    assert missing.json()["code"] == 404 and missing.json()["data"] is None
    other = requests.post(f"{emulator.base_url}/api/v3/wavespeed-ai/flux-dev", json={}, headers=AUTH, timeout=5)
    assert other.status_code == 404 and other.json()["code"] == 404


# ------------------------------------------------------------------------------- failures in tasks

def test_an_unreachable_input_fails_the_task_with_media_access_failed(
        emulator: Emulator, inputs: LoopbackServer) -> None:
    missing = render(emulator, pair(inputs, "/missing.png"))
    assert missing["status"] == "failed" and missing["outputs"] == []
    assert "media access failed" in missing["error"] and "image" in missing["error"] and "404" in missing["error"]
    with refusing_port() as port:
        refused = render(emulator, {"image": inputs.url("/face.png"), "audio": f"http://127.0.0.1:{port}/a.wav"})
    assert refused["status"] == "failed" and "media access failed" in refused["error"] and "audio" in refused["error"]


def test_an_image_that_is_not_an_image_fails_the_task(emulator: Emulator, inputs: LoopbackServer) -> None:
    done = render(emulator, pair(inputs, "/note.png"))
    assert done["status"] == "failed" and "image could not be decoded" in done["error"]


def test_audio_over_the_limit_fails_the_task(emulator: Emulator, inputs: LoopbackServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator, "max_audio_seconds", 2.0)
    done = render(emulator, pair(inputs))
    assert done["status"] == "failed" and "2.7 s" in done["error"]


def test_fail_renders_fails_tasks_with_the_given_message(emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(fail_renders=True, fail_message="task execution failed (1403): GPU fell over")
    done = render(emulator, pair(inputs))
    assert done["status"] == "failed" and done["error"] == "task execution failed (1403): GPU fell over"
    assert done["outputs"] == []


def test_nsfw_flags_the_output(emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(nsfw=True)
    done = render(emulator, pair(inputs))
    assert done["status"] == "completed" and done["has_nsfw_contents"] == [True]


# ------------------------------------------------------------------------------- request faults

def test_submit_429_refuses_the_next_submits_with_retry_after(emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(submit_429=2, retry_after_seconds=4)
    before = emulator.submission_count
    for _ in range(2):
        refused = submit(emulator, pair(inputs))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "4"
        assert refused.json()["code"] == 429
    assert emulator.submission_count == before
    assert submit(emulator, pair(inputs)).status_code == 200


def test_submit_500_after_accept_keeps_the_task(emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(submit_500_after_accept=1)
    before = set(emulator.tasks)
    response = submit(emulator, pair(inputs))
    assert response.status_code == 500 and response.json()["code"] == 500
    [task_id] = set(emulator.tasks) - before
    assert emulator.wait_for_task(task_id)["status"] == "completed"


def test_slow_answers_are_slow(emulator: Emulator, inputs: LoopbackServer) -> None:
    emulator.faults = Faults(submit_delay_seconds=0.5, result_delay_seconds=0.5)
    started = time.monotonic()
    task_id = accepted(emulator, pair(inputs))
    assert result(emulator, task_id).status_code == 200
    assert time.monotonic() - started >= 1.0


def test_result_429_and_500_faults_count_down(emulator: Emulator, inputs: LoopbackServer) -> None:
    task_id = accepted(emulator, pair(inputs))
    emulator.faults = Faults(result_429=1, result_500=1, retry_after_seconds=2)
    busy = result(emulator, task_id)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "2" and busy.json()["code"] == 429
    assert result(emulator, task_id).status_code == 500
    assert result(emulator, task_id).status_code == 200


def test_broken_output_downloads(emulator: Emulator, inputs: LoopbackServer) -> None:
    done = render(emulator, pair(inputs))
    full = requests.get(done["outputs"][0], timeout=10).content
    emulator.faults = Faults(output_404=True)
    assert requests.get(done["outputs"][0], timeout=10).status_code == 404
    emulator.faults = Faults(output_truncate_at=1000)
    with requests.get(done["outputs"][0], timeout=10, stream=True) as response:
        assert response.status_code == 200 and int(response.headers["Content-Length"]) == len(full)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            b"".join(response.iter_content(4096))


# ------------------------------------------------------------------------------- webhooks

def test_a_completed_task_is_posted_to_the_webhook_signed_and_after_the_result_says_so(
        emulator: Emulator, inputs: LoopbackServer, hooks: LoopbackServer) -> None:
    task_id = accepted(emulator, pair(inputs, prompt="hello"), webhook=hooks.url("/hook/job-1?token=t0k"))
    [callback] = hooks_for(hooks, task_id, 1)
    assert callback.path == "/hook/job-1?token=t0k"
    assert callback.headers["Content-Type"] == "application/json"
    assert callback.headers["webhook-signature"].startswith("v3,")
    assert verify_webhook(callback.headers, callback.body, emulator.webhook_secret, now=time.time())
    assert not verify_webhook(callback.headers, callback.body, "whsec_other", now=time.time())
    task = callback.json()
    assert "code" not in task and task["id"] == task_id and task["status"] == "completed"  # the bare task
    assert task["input"] == {"image": inputs.url("/face.png"), "audio": inputs.url("/speech.wav"),
                             "prompt": "hello", "resolution": "480p", "seed": -1}
    assert task["outputs"] == result(emulator, task_id).json()["data"]["outputs"]
    [delivery] = [d for d in emulator.wait_for_webhooks(1) if d.task_id == task_id]
    assert (delivery.status_code, delivery.task_status) == (200, "completed")


def test_a_failed_task_is_posted_too(emulator: Emulator, inputs: LoopbackServer, hooks: LoopbackServer) -> None:
    emulator.faults = Faults(fail_renders=True)
    task_id = accepted(emulator, pair(inputs), webhook=hooks.url("/hook"))
    [callback] = hooks_for(hooks, task_id, 1)
    assert callback.json()["status"] == "failed" and callback.json()["error"] == Faults().fail_message
    assert verify_webhook(callback.headers, callback.body, emulator.webhook_secret, now=time.time())


def test_the_webhook_url_may_come_in_the_body(emulator: Emulator, inputs: LoopbackServer,
                                              hooks: LoopbackServer) -> None:
    task_id = accepted(emulator, pair(inputs, webhook_url=hooks.url("/body-hook")))
    assert hooks_for(hooks, task_id, 1)[0].path == "/body-hook"


def test_webhook_mode_none_sends_nothing(emulator: Emulator, inputs: LoopbackServer, hooks: LoopbackServer) -> None:
    emulator.faults = Faults(webhook_mode="none")
    task_id = accepted(emulator, pair(inputs), webhook=hooks.url("/hook"))
    emulator.wait_for_task(task_id)
    time.sleep(0.5)
    assert not [r for r in hooks.received if r.method == "POST" and r.json()["id"] == task_id]


def test_webhook_mode_twice_redelivers_the_same_event(emulator: Emulator, inputs: LoopbackServer,
                                                      hooks: LoopbackServer) -> None:
    emulator.faults = Faults(webhook_mode="twice")
    first, second = hooks_for(hooks, accepted(emulator, pair(inputs), webhook=hooks.url("/hook")), 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
    assert all(verify_webhook(h.headers, h.body, emulator.webhook_secret, now=time.time()) for h in (first, second))


def test_webhook_mode_out_of_order_sends_a_stale_processing_event_last(
        emulator: Emulator, inputs: LoopbackServer, hooks: LoopbackServer) -> None:
    emulator.faults = Faults(webhook_mode="out_of_order")
    final, stale = hooks_for(hooks, accepted(emulator, pair(inputs), webhook=hooks.url("/hook")), 2)
    assert (final.json()["status"], stale.json()["status"]) == ("completed", "processing")
    assert stale.json()["outputs"] == [] and final.headers["webhook-id"] != stale.headers["webhook-id"]
    assert verify_webhook(stale.headers, stale.body, emulator.webhook_secret, now=time.time())


def test_webhook_mode_late_arrives_after_the_delay_signed_at_completion(
        emulator: Emulator, inputs: LoopbackServer, hooks: LoopbackServer) -> None:
    emulator.faults = Faults(webhook_mode="late", webhook_delay_seconds=1.5)
    task_id = accepted(emulator, pair(inputs), webhook=hooks.url("/hook"))
    emulator.wait_for_task(task_id)
    completed_at = time.time()
    [callback] = hooks_for(hooks, task_id, 1)
    arrived_at = time.time()
    assert arrived_at - completed_at >= 1.2
    assert int(callback.headers["webhook-timestamp"]) <= completed_at + 0.5
    assert verify_webhook(callback.headers, callback.body, emulator.webhook_secret, now=arrived_at)
    assert not verify_webhook(callback.headers, callback.body, emulator.webhook_secret, now=arrived_at,
                              tolerance_seconds=0)


def test_a_skewed_webhook_timestamp_falls_outside_the_replay_window(
        emulator: Emulator, inputs: LoopbackServer, hooks: LoopbackServer) -> None:
    emulator.faults = Faults(webhook_timestamp_skew_seconds=-600)
    [callback] = hooks_for(hooks, accepted(emulator, pair(inputs), webhook=hooks.url("/hook")), 1)
    assert not verify_webhook(callback.headers, callback.body, emulator.webhook_secret, now=time.time())
    signed_at = int(callback.headers["webhook-timestamp"])
    assert verify_webhook(callback.headers, callback.body, emulator.webhook_secret, now=signed_at)


def test_an_unknown_webhook_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook_mode"):
        Faults(webhook_mode="sometimes")


# ------------------------------------------------------------------------------- media and secret

def test_binary_upload_serves_the_bytes_and_works_as_a_task_input(emulator: Emulator, inputs: LoopbackServer) -> None:
    upload = requests.post(f"{emulator.base_url}/api/v3/media/upload/binary", headers=AUTH, timeout=10,
                           files={"file": ("speech clip.wav", WAV, "audio/wav")})
    assert upload.status_code == 200 and upload.json()["code"] == 200
    url = upload.json()["data"]["download_url"]
    served = requests.get(url, timeout=10)
    assert served.content == WAV and served.headers["Content-Type"].startswith("audio/wav")
    done = render(emulator, {"image": inputs.url("/face.png"), "audio": url})
    assert done["status"] == "completed"


@pytest.mark.parametrize(("filename", "content_type", "kind"), [
    ("speech.wav", "audio/wav", "audio"), ("face.png", "image/png", "image"), ("clip.mp4", "video/mp4", "video"),
    ("speech.mp3", "application/octet-stream", "audio"), ("notes.bin", "application/octet-stream", "file"),
])
def test_upload_answers_carry_the_documented_type(emulator: Emulator, filename: str, content_type: str,
                                                   kind: str) -> None:
    binary = requests.post(f"{emulator.base_url}/api/v3/media/upload/binary", headers=AUTH, timeout=10,
                           files={"file": (filename, b"data", content_type)}).json()
    assert binary["code"] == 200 and binary["data"]["type"] == kind
    assert set(binary["data"]) == {"type", "download_url", "filename", "size"}
    ticket = requests.post(f"{emulator.base_url}/api/v3/media/uploads", headers=AUTH, timeout=10,
                           json={"filename": filename, "size": 4, "content_type": content_type}).json()
    assert ticket["data"]["type"] == kind


def test_binary_upload_needs_the_file_field(emulator: Emulator) -> None:
    response = requests.post(f"{emulator.base_url}/api/v3/media/upload/binary", headers=AUTH, timeout=10,
                             files={"upload": ("a.wav", b"x", "audio/wav")})
    assert response.status_code == 400 and "file" in response.json()["message"]


def test_the_webhook_secret_endpoint_returns_the_signing_secret(emulator: Emulator) -> None:
    response = requests.get(f"{emulator.base_url}/api/v3/webhook/secret", headers=AUTH, timeout=5)
    assert response.json() == {"code": 200, "message": "success", "data": {"secret": emulator.webhook_secret}}
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", emulator.webhook_secret)


# ------------------------------------------------------------------------------- outputs, like the CDN

class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_outputs_come_from_another_origin_at_the_cdn_path(emulator: Emulator, inputs: LoopbackServer) -> None:
    done = render(emulator, pair(inputs))
    [url] = done["outputs"]
    api, output = urlsplit(emulator.base_url), urlsplit(url)
    assert output.hostname == emulator.output_host == "localhost" != api.hostname
    assert output.port != api.port
    assert output.path == f"/predictions/{done['id']}/1.mp4"
    assert requests.get(url, timeout=10).status_code == 200
    assert requests.get(emulator.base_url + output.path, timeout=10).status_code == 404  # the API does not serve it


def test_an_emulator_on_localhost_serves_outputs_under_127_0_0_1(inputs: LoopbackServer) -> None:
    with Emulator(api_key=API_KEY, render_seconds=0, host="localhost") as on_localhost:
        assert on_localhost.output_host == "127.0.0.1"
        done = render(on_localhost, pair(inputs))
        assert urlsplit(done["outputs"][0]).hostname == "127.0.0.1"


def test_predictions_and_outputs_expire_after_seven_days(inputs: LoopbackServer) -> None:
    clock = Clock()
    with Emulator(api_key=API_KEY, render_seconds=0, clock=clock, web_predictions=False) as aging:
        done = render(aging, pair(inputs))
        created = iso_to_epoch(done["created_at"])
        assert created is not None and abs(created - clock.now) < 0.01
        clock.now += provider_facts.RETENTION_SECONDS - 60
        assert requests.get(done["outputs"][0], timeout=10).status_code == 200
        assert [t["id"] for t in listed(aging)["items"]] == [done["id"]]
        clock.now += 120
        gone = requests.get(done["outputs"][0], timeout=10)
        assert gone.status_code == 403 and b"AccessDenied" in gone.content  # as S3 behind CloudFront answers
        assert result(aging, done["id"]).status_code == 404
        assert listed(aging)["items"] == []


# ------------------------------------------------------------------------------- list

def listed(emulator: Emulator, **body: Any) -> dict[str, Any]:
    response = list_call(emulator, **{"page": 1, "page_size": 100, **body})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["code"], answer["message"]) == (200, "success")
    return dict(answer["data"])


def list_call(emulator: Emulator, **body: Any) -> requests.Response:
    return requests.post(f"{emulator.base_url}/api/v3/predictions", json=body, headers=AUTH, timeout=10)


@pytest.fixture(scope="module")
def history(inputs: LoopbackServer) -> Iterator[tuple[Emulator, Clock, list[str]]]:
    """An emulator with five of our tasks a minute apart (the newest last) beside its web predictions."""
    clock = Clock()
    with Emulator(api_key=API_KEY, render_seconds=0, clock=clock) as running:
        ids = []
        for n in range(5):
            clock.now += 60
            ids.append(accepted(running, pair(inputs, prompt=f"talk {n}")))
        for task_id in ids:
            running.wait_for_task(task_id)
        yield running, clock, ids


def test_the_list_is_newest_first_mixes_in_web_predictions_and_sees_seven_days(
        history: tuple[Emulator, Clock, list[str]]) -> None:
    emulator, _, ids = history
    data = listed(emulator)
    items = data["items"]
    assert data["page"] == 1 and data["total"] == len(items) == 5 + 3  # the 8-day-old web prediction is out
    created = [iso_to_epoch(item["created_at"]) for item in items]
    assert created == sorted(created, reverse=True)  # type: ignore[type-var]
    ours = [item["id"] for item in items if item["model"] == MODEL]
    assert ours == ids[::-1]
    web = [item for item in items if item["model"] != MODEL]
    assert {item["model"] for item in web} == {"wavespeed-ai/flux-dev", "wavespeed-ai/wan-2.2/i2v-480p"}
    assert all(urlsplit(url).hostname == provider_facts.OTHER_MODEL_CDN_HOST for item in web for url in item["outputs"])
    assert all(set(item) == DOCUMENTED_FIELDS | {"executionTime"} for item in items)  # no inputs unless asked for


def test_the_list_pages(history: tuple[Emulator, Clock, list[str]]) -> None:
    emulator, _, ids = history
    pages = [listed(emulator, model=MODEL, page=page, page_size=2) for page in (1, 2, 3, 4)]
    assert [[item["id"] for item in page["items"]] for page in pages] == [ids[4:2:-1], ids[2:0:-1], ids[:1], []]
    assert {page["total"] for page in pages} == {5} and [page["page"] for page in pages] == [1, 2, 3, 4]


def test_the_list_filters_by_model_and_creation_time(history: tuple[Emulator, Clock, list[str]]) -> None:
    emulator, _, ids = history
    second = emulator.tasks[ids[1]]["created_at"]
    fourth = emulator.tasks[ids[3]]["created_at"]
    window = listed(emulator, model=MODEL, created_after=second, created_before=fourth)
    assert [item["id"] for item in window["items"]] == ids[3:0:-1] and window["total"] == 3
    assert listed(emulator, model="wavespeed-ai/flux-dev")["total"] == 2
    assert listed(emulator, model="wavespeed-ai/none")["items"] == []


def test_list_items_carry_their_input_when_asked(history: tuple[Emulator, Clock, list[str]],
                                                 inputs: LoopbackServer) -> None:
    emulator, _, ids = history
    [newest] = listed(emulator, model=MODEL, page_size=1, include_inputs=True)["items"]
    assert newest["id"] == ids[-1]
    assert newest["input"] == {"image": inputs.url("/face.png"), "audio": inputs.url("/speech.wav"),
                               "prompt": "talk 4", "resolution": "480p", "seed": -1}


@pytest.mark.parametrize(("body", "problem"), [
    ({"page_size": 10}, "page"), ({"page": 1}, "page_size"), ({"page": 0, "page_size": 10}, "page"),
    ({"page": 1, "page_size": 101}, "at most 100"), ({"page": 1, "page_size": 0}, "page_size"),
    ({"page": "1", "page_size": 10}, "page"), ({"page": 1, "page_size": 10, "created_after": "yesterday"},
                                               "created_after"),
])
def test_invalid_list_requests_get_a_400_envelope(emulator: Emulator, body: dict[str, Any], problem: str) -> None:
    response = list_call(emulator, **body)
    assert response.status_code == 400 and response.json()["code"] == 400 and problem in response.json()["message"]


def test_list_faults(emulator: Emulator) -> None:
    emulator.faults = Faults(list_500=1, list_429=1, list_timeout=1, hang_seconds=0.5, retry_after_seconds=2)
    started = time.monotonic()
    busy = list_call(emulator, page=1, page_size=1)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "2"
    assert time.monotonic() - started >= 0.5  # the hang came first
    assert list_call(emulator, page=1, page_size=1).status_code == 500
    assert list_call(emulator, page=1, page_size=1).status_code == 200


# ------------------------------------------------------------------------------- delete

def delete_call(emulator: Emulator, task_id: str) -> requests.Response:
    return requests.delete(f"{emulator.base_url}/api/v3/predictions/{task_id}", headers=AUTH, timeout=10)


def test_deleting_a_processing_task_stops_it_and_no_completion_follows(
        inputs: LoopbackServer, hooks: LoopbackServer) -> None:
    with Emulator(api_key=API_KEY, render_seconds=30, concurrency=1) as slow:
        before = slow.balance
        task_id = accepted(slow, pair(inputs), webhook=hooks.url("/hook/deleted"))
        slow.wait_for_task(task_id, ("processing",))
        answer = delete_call(slow, task_id)
        assert answer.status_code == 200 and answer.json()["data"] == {"id": task_id, "status": "deleted"}
        # the slot frees at once: a task behind it runs (the 30 s render of the first would block it)
        slow.render_seconds = 0
        behind = accepted(slow, pair(inputs))
        assert slow.wait_for_task(behind, timeout=15)["status"] == "completed"
        time.sleep(0.3)
        gone = result(slow, task_id).json()["data"]
        assert gone["status"] == "deleted" and gone["outputs"] == []
        assert task_id not in slow.charges and task_id not in slow.finished_at
        assert slow.balance == pytest.approx(before - slow.charges[behind])
        assert not any(d.task_id == task_id for d in slow.webhook_deliveries)
        assert delete_call(slow, task_id).json()["data"]["status"] == "deleted"  # twice is harmless


def test_deleting_a_queued_task_means_it_never_runs(inputs: LoopbackServer) -> None:
    with Emulator(api_key=API_KEY, render_seconds=1, concurrency=1) as busy:
        first = accepted(busy, pair(inputs))
        queued = accepted(busy, pair(inputs))
        assert delete_call(busy, queued).status_code == 200
        busy.wait_for_task(first)
        time.sleep(0.3)
        assert busy.tasks[queued]["status"] == "deleted" and queued not in busy.charges


def test_deleting_a_completed_task_removes_its_output(emulator: Emulator, inputs: LoopbackServer) -> None:
    done = render(emulator, pair(inputs))
    assert delete_call(emulator, done["id"]).status_code == 200
    assert requests.get(done["outputs"][0], timeout=10).status_code == 403
    deleted = [item for item in listed(emulator)["items"] if item["id"] == done["id"]]
    assert [item["status"] for item in deleted] == ["deleted"]


def test_deleting_an_unknown_prediction_is_a_404(emulator: Emulator) -> None:
    response = delete_call(emulator, "no-such-task")
    assert response.status_code == 404 and response.json()["code"] == 404


def test_the_bulk_delete_ignores_unknown_ids(emulator: Emulator, inputs: LoopbackServer) -> None:
    task_id = render(emulator, pair(inputs))["id"]
    response = requests.post(f"{emulator.base_url}/api/v3/predictions/delete", headers=AUTH, timeout=10,
                             json={"ids": [task_id, "unknown"]})
    assert response.status_code == 200 and response.json()["data"] == {"ids": [task_id]}
    assert emulator.tasks[task_id]["status"] == "deleted"


def test_delete_faults(emulator: Emulator, inputs: LoopbackServer) -> None:
    task_id = render(emulator, pair(inputs))["id"]
    emulator.faults = Faults(delete_500=1)
    assert delete_call(emulator, task_id).status_code == 500
    assert emulator.tasks[task_id]["status"] == "completed"
    assert delete_call(emulator, task_id).status_code == 200


# ------------------------------------------------------------------------------- balance

def balance_call(emulator: Emulator) -> requests.Response:
    return requests.get(f"{emulator.base_url}/api/v3/account/balance", headers=AUTH, timeout=10)


def test_each_completed_render_is_charged_by_the_billing_rule(inputs: LoopbackServer) -> None:
    with Emulator(api_key=API_KEY, render_seconds=0, balance=10.0) as billing:
        answer = balance_call(billing).json()
        assert answer["code"] == 200 and answer["data"] == {"balance": 10.0, "currency": "USD"}
        short = render(billing, pair(inputs))  # 2.7 s bills as the 3 s minimum
        long = render(billing, pair(inputs, resolution="720p"))
        assert billing.charges == {short["id"]: pytest.approx(3 * 0.03), long["id"]: pytest.approx(3 * 0.06)}
        assert balance_call(billing).json()["data"]["balance"] == pytest.approx(10.0 - 0.09 - 0.18)
        billing.faults = Faults(fail_renders=True)
        assert render(billing, pair(inputs))["status"] == "failed"
        assert len(billing.charges) == 2  # a failed render costs nothing
        billing.balance = 1.5
        assert balance_call(billing).json()["data"]["balance"] == 1.5


def test_the_billing_rule_rounds_up_to_whole_seconds() -> None:
    assert provider_facts.billed_seconds(2.7) == 3 and provider_facts.billed_seconds(3.001) == 4
    assert provider_facts.billed_seconds(590.0) == 590 and provider_facts.billed_seconds(3.0000001) == 3
    assert provider_facts.price_usd(590.2, "480p") == pytest.approx(math.ceil(590.2) * 0.03)


def test_balance_faults(emulator: Emulator) -> None:
    emulator.faults = Faults(balance_500=1, balance_timeout=1, hang_seconds=0.3)
    started = time.monotonic()
    assert balance_call(emulator).status_code == 500
    assert time.monotonic() - started >= 0.3
    assert balance_call(emulator).status_code == 200
    assert requests.get(f"{emulator.base_url}/api/v3/balance", headers=AUTH, timeout=10).status_code == 200


def test_list_delete_and_balance_need_the_bearer_key(emulator: Emulator) -> None:
    wrong = {"Authorization": "Bearer nope"}
    for response in (requests.post(f"{emulator.base_url}/api/v3/predictions", json={"page": 1, "page_size": 1},
                                   headers=wrong, timeout=5),
                     requests.delete(f"{emulator.base_url}/api/v3/predictions/x", headers=wrong, timeout=5),
                     requests.get(f"{emulator.base_url}/api/v3/account/balance", headers=wrong, timeout=5)):
        assert response.status_code == 401 and response.json()["code"] == 401 and response.json()["data"] is None


# ------------------------------------------------------------------------------- long clips

def test_a_590_second_clip_renders_quickly_at_full_length(emulator: Emulator) -> None:
    from s2v_local import samples

    speech = samples.speech_wav(590.0, 8000)
    with site({"/face.png": (png(256, 320), "image/png"), "/long.wav": (speech, "audio/wav")}) as files:
        started = time.monotonic()
        task_id = accepted(emulator, {"image": files.url("/face.png"), "audio": files.url("/long.wav")})
        done = emulator.wait_for_task(task_id, timeout=60)
        took = time.monotonic() - started
    assert done["status"] == "completed", done["error"]
    media = probe(emulator.output_path(task_id))
    assert media.duration_seconds == pytest.approx(590.0, abs=0.5)
    assert emulator.charges[task_id] == pytest.approx(590 * 0.03)
    assert took < 45, f"a 590 s clip took {took:.1f} s to render"


def test_audio_over_ten_minutes_fails_the_task_naming_the_limit(emulator: Emulator) -> None:
    from s2v_local import samples

    assert emulator.max_audio_seconds == provider_facts.MAX_SECONDS_PER_CALL == 600
    speech = samples.silent_wav(601.0, 8000)
    with site({"/face.png": (png(), "image/png"), "/long.wav": (speech, "audio/wav")}) as files:
        task_id = accepted(emulator, {"image": files.url("/face.png"), "audio": files.url("/long.wav")})
        done = emulator.wait_for_task(task_id, timeout=60)
    assert done["status"] == "failed" and "601.0 s" in done["error"] and "at most 600 s" in done["error"]


# ------------------------------------------------------------------------------- the official SDK

def test_the_official_sdk_runs_a_task_against_the_emulator_unchanged(
        emulator: Emulator, inputs: LoopbackServer, tmp_path: Path) -> None:
    import wavespeed

    sdk = wavespeed.Client(api_key=API_KEY, base_url=emulator.base_url)
    output = sdk.run(MODEL, pair(inputs, prompt="sdk"), timeout=30, poll_interval=0.1)
    [url] = output["outputs"]
    media = probe(requests.get(url, timeout=10).content)
    assert media.video_codec == "h264" and media.audio_codec == "aac"
    synced = sdk.run(MODEL, pair(inputs), enable_sync_mode=True, timeout=30)
    assert synced["outputs"][0].startswith(f"{emulator.output_base_url}/predictions/")


def test_the_official_sdk_uploads_through_the_ticket_flow(emulator: Emulator, tmp_path: Path) -> None:
    import wavespeed

    path = tmp_path / "speech.wav"
    path.write_bytes(WAV)
    url = wavespeed.Client(api_key=API_KEY, base_url=emulator.base_url).upload(str(path))
    assert requests.get(url, timeout=10).content == WAV


def test_the_official_sdk_sees_a_failed_render_as_a_failure(emulator: Emulator, inputs: LoopbackServer) -> None:
    import wavespeed

    emulator.faults = Faults(fail_renders=True, fail_message="task execution failed (1403): emulated")
    sdk = wavespeed.Client(api_key=API_KEY, base_url=emulator.base_url)
    with pytest.raises(RuntimeError, match="emulated"):
        sdk.run(MODEL, pair(inputs), timeout=30, poll_interval=0.1)
