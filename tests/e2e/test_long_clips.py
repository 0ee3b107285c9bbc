"""Clips up to the provider's 10 minutes per call go through the whole local stack; with long talks
turned off (MaxTalkSeconds 0), longer ones fail before any money is spent, with the limit in the
reason (with them on, see test_long_talks.py). Every output crosses hosts: the
emulator serves videos from another origin than its API, as the real CDN does.

The clips are 8 kHz mono speech-like WAVs (16 kB per second) so a 590 s pair stays small, and the
emulator renders long clips at a low frame rate, so this file runs in well under a minute.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers.pipeline import keys_under, wait_for_job
from helpers.stacks import emulated_stack
from s2v.model import provider_facts
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
API_KEY = "e2e-long-clips-key"
FOLDER = "long"


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    # 150 s + 590 s at 480p is about $22: over the default daily budget ($20), which would keep the
    # second clip QUEUED until the next UTC day.
    with emulated_stack(API_KEY, env={"S2V_DAILY_BUDGET_USD": "100", "S2V_MAX_TALK_SECONDS": "0"}) as local:
        yield local


def upload(stack: Any, stem: str, seconds: float) -> None:
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.png", Body=samples.portrait_png(256, 320))
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.wav", Body=samples.speech_wav(seconds, 8000))


@pytest.mark.parametrize("seconds", [150.0, 590.0])
def test_a_long_clip_is_delivered_whole_from_the_output_host(stack: Any, seconds: float, tmp_path: Path) -> None:
    # Given a clip longer than the old 120 s limit, within the provider's 10 minutes
    stem = f"talk-{seconds:.0f}"
    upload(stack, stem, seconds)
    # When the pipeline runs
    job = wait_for_job(stack, FOLDER, stem, timeout=180)
    # Then it is delivered at full length, downloaded from the emulator's other origin
    assert job["status"] == "DELIVERED", job.get("failure")
    emulator = stack.emulator
    assert stack.environment["S2V_OUTPUT_ALLOWED_HOSTS"] == emulator.output_host  # not the API's host
    output = urlsplit(job["output_url"])
    assert output.hostname == emulator.output_host != urlsplit(emulator.base_url).hostname
    assert output.path == f"/predictions/{job['provider_id']}/1.mp4"
    video = tmp_path / f"{stem}.mp4"
    s3 = stack.client("s3")
    s3.download_file(stack.bucket, job["output_key"], str(video))
    media = probe_media(video)
    assert media.has_video and media.has_audio
    assert media.duration_seconds == pytest.approx(seconds, abs=0.5)
    # And it is priced as the provider bills it: whole seconds at 480p
    report = json.loads(s3.get_object(Bucket=stack.bucket, Key=job["report_key"])["Body"].read())
    expected = math.ceil(seconds) * provider_facts.PRICE_PER_SECOND["480p"]
    assert report["estimated_cost_usd"] == pytest.approx(expected)
    assert emulator.charges[job["provider_id"]] == pytest.approx(expected)


def test_a_clip_one_second_over_ten_minutes_fails_naming_the_limit(stack: Any) -> None:
    before = stack.emulator.submission_count
    upload(stack, "talk-601", 601.0)
    job = wait_for_job(stack, FOLDER, "talk-601", timeout=120)
    assert job["status"] == "FAILED"
    assert job["failure"]["code"] == "audio_too_long"
    reason = job["failure"]["reason"]
    assert "601.0 s long" in reason and "the limit is 600 s" in reason
    assert stack.emulator.submission_count == before  # refused before any money is spent
    assert f"outputs/{FOLDER}/talk-601.error.json" in keys_under(stack.client("s3"), stack.bucket, f"outputs/{FOLDER}/")
