"""The whole local stack over real HTTP: files in, a playable MP4 out, checked with ffmpeg."""

from __future__ import annotations

import hashlib
import json
import wave
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from helpers.pipeline import jobs_for, keys_under, wait_for_job
from helpers.stacks import emulated_stack
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
API_KEY = "e2e-secret-key-do-not-log"


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    with emulated_stack(API_KEY) as local:
        yield local


def wav_seconds(data: bytes) -> float:
    with wave.open(BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


def upload_pair(stack: Any, folder: str, stem: str, *, seconds: float = 2.0,
                image: bytes | None = None, audio: bytes | None = None) -> tuple[bytes, bytes]:
    s3 = stack.client("s3")
    png = image if image is not None else samples.portrait_png(256, 320)
    wav = audio if audio is not None else samples.speech_wav(seconds)
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{folder}/{stem}.png", Body=png)
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{folder}/{stem}.wav", Body=wav)
    return png, wav


def digest(s3: Any, bucket: str, key: str) -> str:
    return hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def test_a_dropped_pair_becomes_a_playable_video_with_a_report(stack: Any, tmp_path: Path) -> None:
    png, wav = upload_pair(stack, "talks", "alice", seconds=2.5)
    job = wait_for_job(stack, "talks", "alice")
    assert job["status"] == "DELIVERED", job.get("failure")
    s3 = stack.client("s3")
    video = tmp_path / "alice.mp4"
    s3.download_file(stack.bucket, "outputs/talks/alice.mp4", str(video))
    media = probe_media(video)
    assert media.video_codec == "h264"
    assert media.audio_codec == "aac"
    assert media.duration_seconds == pytest.approx(wav_seconds(wav), abs=0.2)
    report = json.loads(s3.get_object(Bucket=stack.bucket, Key="outputs/talks/alice.json")["Body"].read())
    assert report["job_id"] == job["job_id"]
    assert report["inputs"]["image"]["key"] == "inputs/talks/alice.png"
    assert report["provider"]["id"] and report["output"]["bytes"] == video.stat().st_size
    assert [h["status"] for h in report["history"]][-1] == "DELIVERED"
    assert report["estimated_cost_usd"] == pytest.approx(0.09)  # 2.5 s → 3 billed seconds at 480p
    # Inputs untouched, outputs only under outputs/.
    assert hashlib.sha256(png).hexdigest() == digest(s3, stack.bucket, "inputs/talks/alice.png")
    assert hashlib.sha256(wav).hexdigest() == digest(s3, stack.bucket, "inputs/talks/alice.wav")
    assert keys_under(s3, stack.bucket, "inputs/talks/alice") == ["inputs/talks/alice.png", "inputs/talks/alice.wav"]
    head = s3.head_object(Bucket=stack.bucket, Key="outputs/talks/alice.mp4")
    assert head["Metadata"]["s2v-job-id"] == job["job_id"]


def test_keys_with_spaces_and_non_ascii_characters_pair_and_deliver(stack: Any) -> None:
    upload_pair(stack, "équipe 1", "Zoë + Ñandú", seconds=1.0)
    job = wait_for_job(stack, "équipe 1", "Zoë + Ñandú")
    assert job["status"] == "DELIVERED", job.get("failure")
    assert job["output_key"] == "outputs/équipe 1/Zoë + Ñandú.mp4"
    assert keys_under(stack.client("s3"), stack.bucket, "outputs/équipe 1/") == [
        "outputs/équipe 1/Zoë + Ñandú.json", "outputs/équipe 1/Zoë + Ñandú.mp4"]


def test_duplicate_events_and_identical_reuploads_submit_once(stack: Any) -> None:
    before = stack.emulator.submission_count
    png, wav = upload_pair(stack, "dup", "bob", seconds=1.0)
    first = wait_for_job(stack, "dup", "bob")
    assert first["status"] == "DELIVERED"
    # The same bytes again (same ETags), and a replayed S3 event for the pair.
    upload_pair(stack, "dup", "bob", image=png, audio=wav)
    stack.invoke("IngestFunction", {"Records": [{
        "messageId": "replay-1", "receiptHandle": "r", "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ingest",
        "body": json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": stack.bucket}, "object": {"key": "inputs/dup/bob.wav"}}}]}),
    }]})
    import time

    time.sleep(3)
    assert len(jobs_for(stack, "dup", "bob")) == 1
    assert stack.emulator.submission_count - before == 1


def test_bad_input_fails_with_an_error_report_and_spends_nothing(stack: Any) -> None:
    before = stack.emulator.submission_count
    text = b"this is not an image, it is a note someone saved with the wrong name\n"
    upload_pair(stack, "bad", "carol", image=text, seconds=1.0)
    job = wait_for_job(stack, "bad", "carol")
    assert job["status"] == "FAILED"
    assert job["failure"]["stage"] == "validate"
    s3 = stack.client("s3")
    error = json.loads(s3.get_object(Bucket=stack.bucket, Key="outputs/bad/carol.error.json")["Body"].read())
    assert error["reason"] == job["failure"]["reason"]
    assert "inputs/bad/carol.png" in error["reason"]
    assert stack.emulator.submission_count == before
    assert s3.get_object(Bucket=stack.bucket, Key="inputs/bad/carol.png")["Body"].read() == text
    assert keys_under(s3, stack.bucket, "outputs/bad/") == ["outputs/bad/carol.error.json"]


def test_no_secret_value_appears_in_any_log_line(stack: Any, capfd: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)

    logger = logging.getLogger("s2v")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        upload_pair(stack, "secrets", "dave", seconds=1.0)
        job = wait_for_job(stack, "secrets", "dave")
    finally:
        logger.setLevel(level)
    assert job["status"] == "DELIVERED"
    out, err = capfd.readouterr()
    records = "\n".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    everything = out + err + records
    assert job["job_id"] in everything  # the handlers did log this job, with their extra fields
    assert API_KEY not in everything
