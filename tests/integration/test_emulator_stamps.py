"""The emulator's renders at the provider's frame rate: whole frames covering the audio, each
stamped with its number and its render's tag, the audio track in sync with the input."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from helpers import av_sync
from helpers.provider_http import site
from helpers.provider_media import png
from helpers.stamps import read_stamps
from s2v.adapters.ffmpeg import probe_video
from s2v.adapters.providers.wavespeed import SUBMIT_PATH
from s2v.model import provider_facts
from s2v_local import samples
from s2v_local.emulator import Emulator

API_KEY = "stamps-test-key"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0.0, web_predictions=False) as running:
        yield running


def render(emulator: Emulator, seconds: float, tmp_path: Path) -> tuple[Path, Path]:
    audio = samples.speech_wav(seconds, 16000)
    with site({"/face.png": (png(320, 400), "image/png"), "/talk.wav": (audio, "audio/wav")}) as files:
        answer = requests.post(emulator.base_url + SUBMIT_PATH, json={"image": files.url("/face.png"),
                                                                      "audio": files.url("/talk.wav")},
                               headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
        task = emulator.wait_for_task(answer.json()["data"]["id"], timeout=60)
    assert task["status"] == "completed", task["error"]
    (tmp_path / "talk.wav").write_bytes(audio)
    return emulator.output_path(task["id"]), tmp_path / "talk.wav"


@pytest.mark.parametrize("seconds", [2.7, 3.0])
def test_frames_cover_the_audio_at_the_providers_rate_and_each_shows_its_number(
        emulator: Emulator, tmp_path: Path, seconds: float) -> None:
    video, _ = render(emulator, seconds, tmp_path)
    fps = provider_facts.OUTPUT_FRAMES_PER_SECOND
    assert probe_video(video).fps == fps == 16
    stamps = read_stamps(video)
    assert len(stamps) == provider_facts.output_frames(seconds) == math.ceil(seconds * fps)
    assert [s.frame for s in stamps] == list(range(len(stamps)))
    assert len({s.tag for s in stamps}) == 1


def test_each_render_has_its_own_tag_and_its_audio_in_sync(emulator: Emulator, tmp_path: Path) -> None:
    first, _ = render(emulator, 3.0, tmp_path)
    second, audio = render(emulator, 4.0, tmp_path)
    assert read_stamps(first)[0].tag != read_stamps(second)[0].tag
    assert [abs(lag) <= 0.001 for lag in av_sync.lags(second, audio, [1.0, 3.0], window=1.0)] == [True, True]
