"""Talks longer than one call on the whole local stack (issue 16): one upload, one stitched video.

The long-form function runs from template.yaml like every other function: the jobs table's stream
wakes it to split a talk, to count each segment that ended, and to stitch. The talk is an 8 kHz
speech-like WAV (words with pauses), so 25 minutes stay a 24 MB upload.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import av_sync
from helpers.pipeline import jobs_for, keys_under
from helpers.stacks import emulated_stack
from helpers.stamps import read_stamps
from s2v.flows.longform import OUTPUT_FPS
from s2v.model.segments import frame_count, parse_silencedetect
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
API_KEY = "e2e-long-talks-key"
FOLDER = "lectures"
TALK_MINUTES = 25


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    # 25 minutes at 480p is $45: over the default daily budget ($20).
    with emulated_stack(API_KEY, env={"S2V_DAILY_BUDGET_USD": "200", "S2V_MAX_IN_FLIGHT_JOBS": "4"}) as local:
        yield local


def upload_talk(stack: Any, stem: str, seconds: float, params: dict[str, Any] | None = None) -> bytes:
    s3 = stack.client("s3")
    audio = samples.speech_wav(seconds, 8000)
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.png", Body=samples.portrait_png(256, 320))
    if params:
        s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.json", Body=json.dumps(params).encode())
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.wav", Body=audio)
    return audio


def wait_for_talk(stack: Any, stem: str, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        last = [j for j in jobs_for(stack, FOLDER, stem) if not j.get("parent_id")]
        for job in last:
            if job["status"] == "DELIVERED" or (job["status"] == "FAILED" and job.get("error_key")):
                return job
        time.sleep(0.5)
    seen = [(j["status"], j.get("segments_rendered")) for j in last]
    raise AssertionError(f"talk {stem} did not end in {timeout} s: {seen}")


def test_a_25_minute_talk_becomes_one_video_cut_at_pauses(stack: Any, tmp_path: Path) -> None:
    # Given a 25-minute talk (longer than one 10-minute call), dropped like any pair
    seconds = TALK_MINUTES * 60.0
    audio = upload_talk(stack, "keynote", seconds)
    # When the stack runs it
    talk = wait_for_talk(stack, "keynote", timeout=300)
    # Then one video is delivered, as long as the audio, with the original audio track
    assert talk["status"] == "DELIVERED", talk.get("failure")
    s3 = stack.client("s3")
    assert keys_under(s3, stack.bucket, f"outputs/{FOLDER}/keynote") == [
        f"outputs/{FOLDER}/keynote.json", f"outputs/{FOLDER}/keynote.mp4"]
    video = tmp_path / "keynote.mp4"
    s3.download_file(stack.bucket, f"outputs/{FOLDER}/keynote.mp4", str(video))
    media = probe_media(video)
    assert media.has_video and media.has_audio
    frame = 1 / OUTPUT_FPS
    assert media.duration_seconds == pytest.approx(seconds, abs=frame)
    # And it was rendered as segments of at most one call, every cut inside a pause of the upload
    report = json.loads(s3.get_object(Bucket=stack.bucket, Key=f"outputs/{FOLDER}/keynote.json")["Body"].read())
    summary = report["talk"]
    rows = summary["segments"]
    assert len(rows) == talk["segment_count"] >= 3
    assert all(r["seconds"] <= 600 and r["provider_id"] for r in rows)
    pauses = detected_pauses(audio, tmp_path)
    for row in rows[:-1]:
        assert row["cut"] == "pause"
        assert any(p.start <= row["end"] <= p.end for p in pauses), row
    assert rows[-1]["end"] == pytest.approx(seconds, abs=0.01)
    assert summary["total_cost_usd"] > 0 and summary["wall_seconds"] > 0
    # And the audio track is the upload, in sync at the start, at every join and at the end
    original = tmp_path / "upload.wav"
    original.write_bytes(audio)
    joins = [r["end"] for r in rows[:-1]]
    checked = [5.0, *joins, seconds - 5.0]
    assert max(abs(lag) for lag in av_sync.lags(video, original, checked)) <= 0.001
    # And the video has exactly the frames of the talk's length at the provider's frame rate
    assert video_frames(video) == round(seconds * OUTPUT_FPS)
    # And no frame is missing or repeated at any join (the emulator stamps each render's frames with
    # their numbers): each segment shows its own render's frames 0, 1, 2 ... in order, exactly its
    # span's share of frames; only a render a frame short repeats its last frame, at its very end
    read = read_stamps(video)
    at = 0
    for row in rows:
        part = read[at:at + frame_count(row["start"], row["end"], OUTPUT_FPS)]
        at += len(part)
        numbers = [stamp.frame for stamp in part]
        shown = len(set(numbers))
        assert len({stamp.tag for stamp in part}) == 1, row
        assert numbers == [*range(shown), *[shown - 1] * (len(numbers) - shown)], row
        assert len(numbers) - shown <= 1, row
    assert at == len(read) and len({read[0].tag, read[-1].tag}) == 2
    # And the segments were ordinary jobs, each submitted once, their files kept out of outputs/
    segment_jobs = [j for j in jobs_for(stack, FOLDER, "keynote") if j.get("parent_id") == talk["job_id"]]
    assert sorted(j["segment_index"] for j in segment_jobs) == list(range(len(rows)))
    assert all(j["output_key"].startswith("work/") for j in segment_jobs)


def video_frames(video: Path) -> int:
    import re
    import subprocess

    import imageio_ffmpeg

    log = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(video), "-map",
                          "0:v:0", "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    return int(re.findall(r"frame=\s*(\d+)", log)[-1])


def detected_pauses(audio: bytes, folder: Path) -> list[Any]:
    import subprocess

    import imageio_ffmpeg

    path = folder / "talk.wav"
    path.write_bytes(audio)
    log = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-af",
                          "silencedetect=n=-35dB:d=0.3", "-f", "null", "-"], capture_output=True, text=True).stderr
    return parse_silencedetect(log)
