"""Every model of the table on the emulator over real HTTP: its path, its fields and validation
errors, its output length (two speakers: by ``order``) and its price, and the official SDK
(pinned wavespeed==2.0.5) running each one unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from helpers.provider_http import LoopbackServer, site
from helpers.provider_media import png, probe, tone_wav, wav_seconds
from s2v.model.models import CATALOG, INFINITETALK, INFINITETALK_MULTI, Model
from s2v_local.emulator import Emulator

API_KEY = "emulator-models-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LEFT, RIGHT = tone_wav(2.7), tone_wav(1.6)
TRACK_FILES = {"audio": "/left.wav", "left": "/left.wav", "right": "/right.wav"}


@pytest.fixture(scope="module")
def inputs() -> Iterator[LoopbackServer]:
    files = {"/face.png": (png(320, 400), "image/png"), "/mask.png": (png(320, 400), "image/png"),
             "/left.wav": (LEFT, "audio/wav"), "/right.wav": (RIGHT, "audio/wav")}
    with site(files) as server:
        yield server


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0.1) as running:
        yield running


def body_for(model: Model, inputs: LoopbackServer, **params: Any) -> dict[str, Any]:
    files = {"image": "/face.png", "mask": "/mask.png", **TRACK_FILES}
    return {name: inputs.url(files[role]) for name, role in model.fields.items()} | params


def submit(emulator: Emulator, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{emulator.base_url}/api/v3/{path}", json=body, headers=AUTH, timeout=30)


def tracks(model: Model) -> dict[str, float]:
    lengths = {"/left.wav": wav_seconds(LEFT), "/right.wav": wav_seconds(RIGHT)}
    return {role: lengths[TRACK_FILES[role]] for role in model.audio_roles}


@pytest.mark.parametrize("model", CATALOG.models, ids=lambda m: m.name)
def test_the_official_sdk_runs_every_model_against_the_emulator(emulator: Emulator, inputs: LoopbackServer,
                                                                 model: Model) -> None:
    import wavespeed

    sdk = wavespeed.Client(api_key=API_KEY, base_url=emulator.base_url)
    output = sdk.run(model.path, body_for(model, inputs, prompt="sdk"), timeout=60, poll_interval=0.1)
    [url] = output["outputs"]
    media = probe(requests.get(url, timeout=10).content)
    assert media.video_codec == "h264" and media.audio_codec == "aac"
    assert media.duration_seconds == pytest.approx(model.output_seconds(tracks(model)), abs=0.2)
    task_id = url.split("/predictions/")[1].split("/")[0]
    assert emulator.tasks[task_id]["model"] == model.path
    assert emulator.charges[task_id] == pytest.approx(model.price_usd(tracks(model), "480p"))


@pytest.mark.parametrize(("order", "seconds"), [
    ("left_right", wav_seconds(LEFT) + wav_seconds(RIGHT)),
    ("right_left", wav_seconds(LEFT) + wav_seconds(RIGHT)),
    ("meanwhile", max(wav_seconds(LEFT), wav_seconds(RIGHT))),
])
def test_two_speakers_render_as_long_as_their_order_says_and_bill_both_tracks(
        emulator: Emulator, inputs: LoopbackServer, order: str, seconds: float) -> None:
    response = submit(emulator, INFINITETALK_MULTI.path, body_for(INFINITETALK_MULTI, inputs, order=order,
                                                                  resolution="720p"))
    assert response.status_code == 200, response.text
    done = emulator.wait_for_task(response.json()["data"]["id"], timeout=60)
    assert done["status"] == "completed", done["error"]
    media = probe(requests.get(done["outputs"][0], timeout=10).content)
    assert media.duration_seconds == pytest.approx(seconds, abs=0.2)
    # Billed: both tracks summed (2.7 + 1.6 → 5 s) at 720p, whatever the order.
    assert emulator.charges[done["id"]] == pytest.approx(5 * 0.06)
    assert done["input"]["order"] == order


@pytest.mark.parametrize(("model", "change", "message"), [
    (INFINITETALK_MULTI, {"right_audio": None}, "missing required parameter: right_audio"),
    (INFINITETALK_MULTI, {"order": "left_first"}, "order must be one of meanwhile, left_right, right_left"),
    (INFINITETALK_MULTI, {"left_audio": 3}, "left_audio must be a string"),
    (INFINITETALK, {"audio": None}, "missing required parameter: audio"),
    (INFINITETALK, {"resolution": "1080p"}, "resolution must be one of 480p, 720p"),
    (INFINITETALK, {"mask_image": 7}, "mask_image must be a string"),
])
def test_each_model_refuses_a_bad_body_naming_the_field(emulator: Emulator, inputs: LoopbackServer, model: Model,
                                                        change: dict[str, Any], message: str) -> None:
    before = emulator.submission_count
    body = {k: v for k, v in {**body_for(model, inputs), **change}.items() if v is not None}
    response = submit(emulator, model.path, body)
    assert response.status_code == 400 and message in response.json()["message"]
    assert emulator.submission_count == before


def test_a_mask_is_optional_for_infinitetalk(emulator: Emulator, inputs: LoopbackServer) -> None:
    body = {k: v for k, v in body_for(INFINITETALK, inputs).items() if k != "mask_image"}
    response = submit(emulator, INFINITETALK.path, body)
    assert response.status_code == 200, response.text
    done = emulator.wait_for_task(response.json()["data"]["id"], timeout=60)
    assert done["status"] == "completed" and done["model"] == INFINITETALK.path


def test_a_fetch_failure_of_the_mask_fails_the_task_as_media_access(emulator: Emulator, inputs: LoopbackServer) -> None:
    with site({}) as empty:
        body = body_for(INFINITETALK, inputs) | {"mask_image": empty.url("/gone.png")}
        response = submit(emulator, INFINITETALK.path, body)
        done = emulator.wait_for_task(response.json()["data"]["id"], timeout=60)
    assert done["status"] == "failed"
    assert "media access failed (1402)" in done["error"] and "mask_image" in done["error"]
