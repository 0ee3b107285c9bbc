"""More models on the whole local stack: InfiniteTalk with a mask, and two people talking in one video.

Files in, a playable MP4 and a report naming the model and its cost out; each bad set fails with
a precise reason before anything is sent to the provider.
"""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from helpers.pipeline import jobs_for, wait_for_job
from helpers.stacks import emulated_stack
from s2v.model.models import INFINITETALK, INFINITETALK_MULTI
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
API_KEY = "e2e-models-key"
SET_WAIT_SECONDS = 3


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    with emulated_stack(API_KEY, render_seconds=0.2,
                        env={"S2V_INCOMPLETE_SET_WAIT_SECONDS": str(SET_WAIT_SECONDS)}) as local:
        yield local


def put(stack: Any, key: str, body: bytes) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket, Key=f"inputs/{key}", Body=body)


def params(stack: Any, key: str, **values: Any) -> None:
    put(stack, key, json.dumps(values).encode())


def wav_seconds(data: bytes) -> float:
    with wave.open(BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


def report_of(stack: Any, key: str) -> dict[str, Any]:
    body = stack.client("s3").get_object(Bucket=stack.bucket, Key=f"outputs/{key}")["Body"].read()
    return dict(json.loads(body))


def video_seconds(stack: Any, key: str, tmp_path: Path) -> float:
    target = tmp_path / key.replace("/", "_")
    stack.client("s3").download_file(stack.bucket, f"outputs/{key}", str(target))
    media = probe_media(target)
    assert (media.video_codec, media.audio_codec) == ("h264", "aac")
    return float(media.duration_seconds)


def task_of(stack: Any, job: dict[str, Any]) -> dict[str, Any]:
    return dict(stack.emulator.tasks[job["provider_id"]])


def test_an_infinitetalk_pair_with_a_mask_renders_and_reports_model_and_cost(stack: Any, tmp_path: Path) -> None:
    # Given a portrait, its mask (same size), a 2.5 s clip and a params file choosing InfiniteTalk
    wav = samples.speech_wav(2.5)
    params(stack, "it/ann.json", model="infinitetalk", resolution="720p")
    put(stack, "it/ann.png", samples.portrait_png(256, 320))
    put(stack, "it/ann.mask.png", samples.portrait_png(256, 320))
    put(stack, "it/ann.wav", wav)
    # When the set is rendered
    job = wait_for_job(stack, "it", "ann")
    # Then the video is as long as the clip, and the report names the model and its price: InfiniteTalk
    # bills at least 5 s (2.5 s → 5 s) at 720p's $0.06/s.
    assert job["status"] == "DELIVERED", job.get("failure")
    assert video_seconds(stack, "it/ann.mp4", tmp_path) == pytest.approx(wav_seconds(wav), abs=0.2)
    report = report_of(stack, "it/ann.json")
    assert report["model"] == {"name": "infinitetalk", "title": INFINITETALK.title, "path": "wavespeed-ai/infinitetalk"}
    assert report["params"]["model"] == "infinitetalk"
    assert report["inputs"]["mask"]["key"] == "inputs/it/ann.mask.png"
    assert report["estimated_cost_usd"] == pytest.approx(0.30)
    # The provider got the mask as mask_image at the model's own path, and charged what we estimated.
    task = task_of(stack, job)
    assert task["model"] == "wavespeed-ai/infinitetalk"
    assert set(task["input"]) >= {"image", "audio", "mask_image"} and task["input"]["resolution"] == "720p"
    assert stack.emulator.charges[job["provider_id"]] == pytest.approx(report["estimated_cost_usd"])


def test_a_mask_alone_chooses_infinitetalk_without_a_params_file(stack: Any) -> None:
    put(stack, "it/bo.png", samples.portrait_png(200, 200))
    put(stack, "it/bo.mask.png", samples.portrait_png(200, 200))
    put(stack, "it/bo.wav", samples.speech_wav(1.5))
    job = wait_for_job(stack, "it", "bo")
    assert job["status"] == "DELIVERED", job.get("failure")
    assert job["params"]["model"] == "infinitetalk"
    assert job["estimated_cost_usd"] == pytest.approx(0.15)  # 1.5 s bills InfiniteTalk's 5 s minimum at 480p


@pytest.mark.parametrize(("stem", "order", "played"), [("duo", "left_right", "sum"), ("chat", "meanwhile", "longest")])
def test_a_two_speaker_set_becomes_one_video_laid_out_by_order(stack: Any, tmp_path: Path, stem: str, order: str,
                                                               played: str) -> None:
    # Given an image of two people, one track per speaker (arriving right first) and an order
    left, right = samples.speech_wav(3.0), samples.speech_wav(2.2)
    params(stack, f"two/{stem}.json", order=order)
    put(stack, f"two/{stem}.right.wav", right)
    put(stack, f"two/{stem}.png", samples.portrait_png(320, 240))
    put(stack, f"two/{stem}.left.wav", left)
    # When the set is rendered
    job = wait_for_job(stack, "two", stem)
    assert job["status"] == "DELIVERED", job.get("failure")
    # Then the two-speaker model was chosen, the video's length follows the order, and the cost
    # is the sum of both tracks (3.0 + 2.2 → 6 billed seconds at $0.03).
    expected = wav_seconds(left) + wav_seconds(right) if played == "sum" else max(wav_seconds(left), wav_seconds(right))
    assert video_seconds(stack, f"two/{stem}.mp4", tmp_path) == pytest.approx(expected, abs=0.25)
    report = report_of(stack, f"two/{stem}.json")
    assert report["model"]["name"] == "infinitetalk-multi" and report["params"]["order"] == order
    assert report["inputs"]["audio"] is None
    assert (report["inputs"]["left"]["key"], report["inputs"]["right"]["key"]) == (
        f"inputs/two/{stem}.left.wav", f"inputs/two/{stem}.right.wav")
    assert report["estimated_cost_usd"] == pytest.approx(0.18)
    assert report["audio_seconds"] == pytest.approx(expected, abs=0.01)
    task = task_of(stack, job)
    assert task["model"] == INFINITETALK_MULTI.path and task["input"]["order"] == order
    assert {"image", "left_audio", "right_audio"} <= set(task["input"]) and "audio" not in task["input"]
    assert stack.emulator.charges[job["provider_id"]] == pytest.approx(0.18)
    # One job for the three files, however many events they made.
    assert len(jobs_for(stack, "two", stem)) == 1


def failed(stack: Any, folder: str, stem: str, *, timeout: float = 60.0) -> tuple[dict[str, Any], dict[str, Any]]:
    job = wait_for_job(stack, folder, stem, timeout=timeout)
    assert job["status"] == "FAILED", job
    assert not job.get("provider_id") and not job.get("sent_at")  # nothing was sent, nothing spent
    return job, report_of(stack, f"{folder}/{stem}.error.json")


def test_bad_sets_fail_precisely_before_anything_is_sent(stack: Any) -> None:
    before = stack.emulator.submission_count
    # A mask of another size than the portrait.
    put(stack, "bad/mask.png", samples.portrait_png(256, 320))
    put(stack, "bad/mask.mask.png", samples.portrait_png(128, 128))
    put(stack, "bad/mask.wav", samples.speech_wav(1.0))
    # A model nobody serves.
    params(stack, "bad/model.json", model="infinitetalk-pro")
    put(stack, "bad/model.png", samples.portrait_png(200, 200))
    put(stack, "bad/model.wav", samples.speech_wav(1.0))
    # An order that is not one of the provider's.
    params(stack, "bad/order.json", order="left_first")
    put(stack, "bad/order.png", samples.portrait_png(200, 200))
    put(stack, "bad/order.left.wav", samples.speech_wav(1.0))
    put(stack, "bad/order.right.wav", samples.speech_wav(1.0))

    _, error = failed(stack, "bad", "mask")
    assert error["code"] == "mask_size_mismatch"
    assert "mask.mask.png is 128x128 pixels but mask.png is 256x320" in error["reason"]
    _, error = failed(stack, "bad", "model")
    assert error["code"] == "unknown_model"
    assert "model \"infinitetalk-pro\" is not known (did you mean 'infinitetalk'?)" in error["reason"]
    assert '"wan-2.2-s2v", "infinitetalk", "infinitetalk-multi"' in error["reason"]
    _, error = failed(stack, "bad", "order")
    assert error["code"] == "invalid_order"
    assert 'order must be one of "meanwhile", "left_right", "right_left"' in error["reason"]
    assert '"left_first"' in error["reason"]
    assert stack.emulator.submission_count == before


def test_a_missing_right_track_fails_after_the_wait_and_the_left_one_is_never_paired_alone(stack: Any) -> None:
    before = stack.emulator.submission_count
    # Given an image and the left speaker's track only
    put(stack, "half/talk.png", samples.portrait_png(200, 200))
    put(stack, "half/talk.left.wav", samples.speech_wav(1.0))
    # Then nothing renders while the set waits for its right track ...
    time.sleep(SET_WAIT_SECONDS / 2)
    assert jobs_for(stack, "half", "talk") == []
    # ... and after the wait the set fails, saying which file is missing.
    job, error = failed(stack, "half", "talk", timeout=SET_WAIT_SECONDS + 30)
    assert error["code"] == "incomplete_set"
    assert "no right speaker's track (talk.right.<" in error["reason"]
    assert "talk.png" in error["reason"] and "talk.left.wav" in error["reason"]
    assert stack.emulator.submission_count == before
    # When the right track comes after all, the complete set renders as a new job.
    put(stack, "half/talk.right.wav", samples.speech_wav(1.0))
    done = wait_for_job(stack, "half", "talk", statuses=("DELIVERED",))
    assert done["params"]["model"] == "infinitetalk-multi" and done["job_id"] != job["job_id"]


# --- long talks with these models (issue 16 with issue 19) ------------------------------------------

def talk_of(stack: Any, folder: str, stem: str, *, timeout: float = 240.0) -> dict[str, Any]:
    """The talk's parent job once it ended (its segments are jobs of the same stem)."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = [j for j in jobs_for(stack, folder, stem) if not j.get("parent_id")]
        for job in seen:
            if job["status"] == "DELIVERED" or (job["status"] == "FAILED" and job.get("error_key")):
                return job
        time.sleep(0.5)
    raise AssertionError(f"talk {folder}/{stem} did not end in {timeout} s: {[j['status'] for j in seen]}")


def segments_of(stack: Any, folder: str, stem: str, parent_id: str) -> list[dict[str, Any]]:
    return sorted((j for j in jobs_for(stack, folder, stem) if j.get("parent_id") == parent_id),
                  key=lambda j: j["segment_index"])


def delayed(wav: bytes, seconds: float) -> bytes:
    """``wav`` starting ``seconds`` later (silence first): the other speaker's pauses fall elsewhere."""
    with wave.open(BytesIO(wav)) as source:
        rate, width, frames = source.getframerate(), source.getsampwidth(), source.readframes(source.getnframes())
    out = BytesIO()
    with wave.open(out, "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(width)
        target.setframerate(rate)
        target.writeframes(b"\0" * (round(seconds * rate) * width) + frames)
    return out.getvalue()


def test_a_two_speaker_talk_longer_than_one_call_is_cut_where_both_pause_and_stitched_over_their_mix(
        stack: Any, tmp_path: Path) -> None:
    from helpers.av_sync import lags
    from s2v.flows.longform import OUTPUT_FPS
    from s2v.model.segments import Pause, parse_silencedetect

    # Given two speakers on one timeline (order meanwhile): the left talks 32 s, the right 22 s,
    # starting 0.15 s later; segments of at most 10 s (one "call" here)
    left = samples.speech_wav(32.0, 8000)
    right = delayed(samples.speech_wav(22.0, 8000), 0.15)
    params(stack, "long2/panel.json", order="meanwhile", segment_seconds=10)
    put(stack, "long2/panel.png", samples.portrait_png(320, 240))
    put(stack, "long2/panel.left.wav", left)
    put(stack, "long2/panel.right.wav", right)
    # When the stack runs it
    talk = talk_of(stack, "long2", "panel")
    # Then one video is delivered, as long as the timeline (the longer track) within one frame
    assert talk["status"] == "DELIVERED", talk.get("failure")
    timeline = wav_seconds(left)
    frame = 1 / OUTPUT_FPS
    assert video_seconds(stack, "long2/panel.mp4", tmp_path) == pytest.approx(timeline, abs=frame)
    # And every cut lies in a pause of both tracks (the right one is silent after its end)
    report = report_of(stack, "long2/panel.json")
    rows = report["talk"]["segments"]
    assert len(rows) >= 3 and all(r["seconds"] <= 10 for r in rows)

    def pauses(audio: bytes, name: str) -> list[Pause]:
        import subprocess

        import imageio_ffmpeg

        path = tmp_path / name
        path.write_bytes(audio)
        log = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-af",
                              "silencedetect=n=-35dB:d=0.3", "-f", "null", "-"], capture_output=True, text=True).stderr
        return parse_silencedetect(log)

    left_pauses = pauses(left, "left.wav")
    right_pauses = [*pauses(right, "right.wav"), Pause(wav_seconds(right), timeline)]
    for row in rows[:-1]:
        assert row["cut"] == "pause", rows
        assert any(p.start <= row["end"] <= p.end for p in left_pauses), (row, left_pauses)
        assert any(p.start <= row["end"] <= p.end for p in right_pauses), (row, right_pauses)
    assert rows[-1]["end"] == pytest.approx(timeline, abs=0.01)
    # And each segment was a two-speaker job with its own left and right cut, rendered meanwhile
    segments = segments_of(stack, "long2", "panel", talk["job_id"])
    assert len(segments) == len(rows)
    for segment in segments:
        assert not segment.get("audio") and {"left", "right"} <= set(segment["extra_inputs"])
        task = task_of(stack, segment)
        assert task["model"] == INFINITETALK_MULTI.path and task["input"]["order"] == "meanwhile"
        assert {"left_audio", "right_audio"} <= set(task["input"])
    # And the audio under the video is both speakers mixed on their timeline, in sync at every join
    s3 = stack.client("s3")
    video = tmp_path / "panel.mp4"
    s3.download_file(stack.bucket, "outputs/long2/panel.mp4", str(video))
    mix = tmp_path / "mix.flac"
    s3.download_file(stack.bucket, f"work/{talk['job_id']}/talk-mix.flac", str(mix))
    assert probe_media(mix).duration_seconds == pytest.approx(timeline, abs=0.01)
    checked = [2.0, *(r["end"] for r in rows[:-1]), timeline - 2.0]
    assert max(abs(lag) for lag in lags(video, mix, checked)) <= 0.001


def test_a_masked_infinitetalk_talk_renders_every_segment_with_the_mask(stack: Any, tmp_path: Path) -> None:
    # Given an InfiniteTalk talk (a mask beside the portrait) longer than its segments
    audio = samples.speech_wav(20.0, 8000)
    params(stack, "long1/lesson.json", model="infinitetalk", segment_seconds=8)
    put(stack, "long1/lesson.png", samples.portrait_png(256, 320))
    put(stack, "long1/lesson.mask.png", samples.portrait_png(256, 320))
    put(stack, "long1/lesson.wav", audio)
    talk = talk_of(stack, "long1", "lesson")
    assert talk["status"] == "DELIVERED", talk.get("failure")
    # Then every segment went to InfiniteTalk with the mask, and the video is as long as the talk
    segments = segments_of(stack, "long1", "lesson", talk["job_id"])
    assert len(segments) >= 3
    for segment in segments:
        assert segment["params"]["model"] == "infinitetalk"
        assert segment["extra_inputs"]["mask"]["key"] == "inputs/long1/lesson.mask.png"
        task = task_of(stack, segment)
        assert task["model"] == "wavespeed-ai/infinitetalk" and "mask_image" in task["input"]
        # billed by InfiniteTalk's rule: what the emulator charged is what was estimated
        assert stack.emulator.charges[segment["provider_id"]] == pytest.approx(segment["estimated_cost_usd"])
    from s2v.flows.longform import OUTPUT_FPS

    assert video_seconds(stack, "long1/lesson.mp4", tmp_path) == pytest.approx(wav_seconds(audio), abs=1 / OUTPUT_FPS)
