"""End to end on the local stack (versioned bucket, as template.yaml declares it): a pair waits
in the queue after validation, its audio key is overwritten with a minute of audio, and the first
job is still rendered, billed and delivered from the second it validated; the overwrite is a job of
its own. Real HTTP to the emulator; the video checked with ffmpeg."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.pipeline import jobs_for, keys_under
from s2v.flows.submission import forget_balance
from s2v.model.provider_facts import price_usd
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
API_KEY = "e2e-pinned-key"


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    with Emulator(api_key=API_KEY, render_seconds=0.3, balance=0.0) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, api_key=API_KEY,
        poll_interval_seconds=1, queue_delay_seconds=1,
    ) as local:
        local.emulator = emulator
        yield local


def wait_for(stack: Any, predicate: Any, what: str, timeout: float = 150.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = jobs_for(stack, "pin", "talk")
        if predicate(jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"{what}: {[(j['status'], j.get('failure')) for j in jobs_for(stack, 'pin', 'talk')]}")


def test_an_input_overwritten_while_its_job_waits_is_rendered_billed_and_delivered_as_validated(
        stack: Any, tmp_path: Path) -> None:
    s3 = stack.client("s3")
    assert s3.get_bucket_versioning(Bucket=stack.bucket)["Status"] == "Enabled"
    # Given a validated 1 s pair waiting for the provider account to be topped up
    s3.put_object(Bucket=stack.bucket, Key="inputs/pin/talk.png", Body=samples.portrait_png(128, 160))
    s3.put_object(Bucket=stack.bucket, Key="inputs/pin/talk.wav", Body=samples.speech_wav(1.0))
    [first] = wait_for(stack, lambda jobs: any(j["status"] == "QUEUED" for j in jobs), "the pair never queued")
    assert set(first["input_versions"]) == {"image", "audio"}
    # When its audio key is overwritten with a minute, and then the account is topped up
    s3.put_object(Bucket=stack.bucket, Key="inputs/pin/talk.wav", Body=samples.silent_wav(60.0))
    wait_for(stack, lambda jobs: len(jobs) == 2 and all(j["status"] == "QUEUED" for j in jobs),
             "the overwrite was not queued as a job of its own")
    stack.emulator.balance = 100.0
    forget_balance()
    jobs = wait_for(stack, lambda jobs: len(jobs) == 2 and all(j["status"] == "DELIVERED" for j in jobs),
                    "the jobs were not delivered")
    # Then each job was billed and rendered for the bytes it validated
    by_length = sorted(jobs, key=lambda j: float(j["audio_seconds"]))
    charges = [stack.emulator.charges[j["provider_id"]] for j in by_length]
    assert charges == [pytest.approx(price_usd(1.0, "480p")), pytest.approx(price_usd(60.0, "480p"))]
    # The two share an output name (who takes the plain name is the outputs owner's rule): found by job id
    videos = {s3.head_object(Bucket=stack.bucket, Key=key)["Metadata"].get("s2v-job-id"): key
              for key in keys_under(s3, stack.bucket, "outputs/pin/") if key.endswith(".mp4")}
    video = tmp_path / "first.mp4"
    s3.download_file(stack.bucket, videos[first["job_id"]], str(video))
    assert probe_media(video).duration_seconds == pytest.approx(1.0, abs=0.2)
