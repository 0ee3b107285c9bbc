"""Long talks (issue 16) driven step by step against moto's server and the WaveSpeed emulator.

``drive`` plays the triggers by hand, in the order the stack would (the stream wakes the long-form
function and deliver, the schedule runs the poller), so a test can crash any step and re-run it,
as a stream redelivery or the poller's watch would. The guarantees checked:

- a talk becomes one parent and one segment job per planned segment, each submitted once;
- one video under outputs/ (the original audio, the planned length), with a report listing the
  segments; nothing under outputs/ until it is whole;
- a segment that fails for a render reason is re-rendered as a linked job at most twice; then the
  parent fails naming each failed segment and its time range; ``s2v retry`` renders only those.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import pytest

import s2v.flows.outputs
from helpers.crash import Crash, crash_after
from helpers.flow import Flow, make_flow
from s2v.adapters.store import JobStore
from s2v.flows import deliver, longform, poll
from s2v.flows.ingest import retry_failed
from s2v.model.jobs import TERMINAL, Job, Status
from s2v.model.outputs import REPORT
from s2v_local import samples
from s2v_local.emulator import Emulator, Faults
from s2v_local.probe import probe_media

pytestmark = pytest.mark.usefixtures("healthy_provider")  # faults reset around each test
FOLDER = "lectures"
TALK_SECONDS = 50.0
SEGMENT_SECONDS = 15  # a 50 s talk: 4 segments, cut at pauses


@pytest.fixture
def flow_env() -> dict[str, str]:
    return {"S2V_MAX_IN_FLIGHT_JOBS": "2", "S2V_DAILY_BUDGET_USD": "100"}


def upload_talk(flow: Flow, stem: str = "lecture", seconds: float = TALK_SECONDS,
                segment_seconds: float = SEGMENT_SECONDS) -> bytes:
    audio = samples.speech_wav(seconds, 8000)
    flow.put(f"inputs/{FOLDER}/{stem}.png", samples.portrait_png(64, 80))
    flow.put(f"inputs/{FOLDER}/{stem}.json", json.dumps({"segment_seconds": segment_seconds}).encode())
    flow.put(f"inputs/{FOLDER}/{stem}.wav", audio)
    return audio


def parents(flow: Flow) -> list[Job]:
    return [j for j in flow.jobs() if not j.is_segment]


def segments_of(flow: Flow, parent_id: str) -> list[Job]:
    return sorted((j for j in flow.jobs() if j.parent_id == parent_id), key=lambda j: (j.segment_index, j.attempt))


def drive(flow: Flow, *, steps: int = 80, crash: Callable[[], AbstractContextManager[Any]] = nullcontext) -> Job:
    """Run the triggers until every parent has ended. A ``Crash`` inside a step is what a dead
    invocation does: the step is simply run again by the next round (stream retry / poller)."""
    crashes = 0
    for _ in range(steps):
        for job in flow.jobs():
            try:
                with crash():
                    if job.status in (Status.SPLITTING, Status.STITCHING) or (
                            job.is_segment and job.is_terminal and not job.segment_settled):
                        longform.on_job_change(job.job_id, flow.deps)
                    if job.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
                        deliver.on_job_change(job.job_id, flow.deps)
            except Crash:
                crashes += 1
        try:
            with crash():
                poll.run(flow.deps)
        except Crash:
            crashes += 1
        flow.clock.advance(30)
        done = parents(flow)
        if done and all(p.is_terminal and (p.status is not Status.FAILED or p.error_key) for p in done):
            return done[0]
    raise AssertionError(f"talk not finished: {[(j.job_id[:8], j.status, j.parent_id[:8]) for j in flow.jobs()]}")


def outputs(flow: Flow) -> list[str]:
    pages = flow.s3.get_paginator("list_objects_v2").paginate(Bucket=flow.bucket, Prefix="outputs/")
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def test_a_talk_becomes_segments_that_render_once_each_and_one_stitched_video(
        flow: Flow, emulator: Emulator, tmp_path: Any) -> None:
    # Given a 50 s talk whose params ask for segments of at most 15 s
    before = emulator.submission_count
    upload_talk(flow)
    # When it is ingested
    result = flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    # Then it is a parent job, splitting, with one seed drawn for all its segments
    parent = flow.job(result.job_id)
    assert parent.status is Status.SPLITTING and parent.is_parent
    assert 0 <= parent.params["seed"] <= 2_147_483_647
    # And when the triggers run, it ends as one delivered video
    final = drive(flow)
    assert final.status is Status.DELIVERED, final.failure
    segments = segments_of(flow, final.job_id)
    assert len(segments) == final.segment_count == len(final.segments) >= 4
    assert emulator.submission_count - before == len(segments)  # each segment submitted exactly once
    assert {s.params["seed"] for s in segments} == {parent.params["seed"]}
    assert all(s.image == parent.image for s in segments)
    # Every cut but the last ends at a pause (speech-like audio has one in each window's last quarter)
    assert [s["cut"] for s in final.segments][:-1] == ["pause"] * (len(segments) - 1)
    # One video and one report in outputs/; the working files stay under work/
    assert outputs(flow) == [f"outputs/{FOLDER}/lecture.json", f"outputs/{FOLDER}/lecture.mp4"]
    video = tmp_path / "talk.mp4"
    flow.s3.download_file(flow.bucket, f"outputs/{FOLDER}/lecture.mp4", str(video))
    assert probe_media(video).duration_seconds == pytest.approx(TALK_SECONDS, abs=0.1)
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key=f"outputs/{FOLDER}/lecture.json")["Body"].read())
    talk = report["talk"]
    assert [r["index"] for r in talk["segments"]] == list(range(len(segments)))
    assert talk["segments"][0]["start"] == 0 and talk["segments"][-1]["end"] == pytest.approx(TALK_SECONDS, abs=0.01)
    assert all(r["provider_id"] and r["cut"] in ("pause", "hard", "end") for r in talk["segments"])
    assert talk["total_cost_usd"] == pytest.approx(sum(s.final_cost_usd or 0 for s in segments))
    assert talk["wall_seconds"] > 0 and "render_seconds_sum" in talk
    # Each segment was fitted when it rendered, and the stitch only joined the fits (no second encode)
    fits = [k for k in work_keys(flow, final.job_id) if "/fit-" in k]
    assert len(fits) == len(segments)
    assert report["stitch"]["crossfade_frames"] == 0 and "joined without encoding again" in report["stitch"]["notes"][0]
    assert report["stitch"]["segment_frames"] == [round(s.segment_end * 16) - round(s.segment_start * 16)
                                                  for s in segments]


def work_keys(flow: Flow, parent_id: str) -> list[str]:
    listed = flow.s3.list_objects_v2(Bucket=flow.bucket, Prefix=f"work/{parent_id}/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_short_talk_with_a_crossfade_is_stitched_in_one_pass_without_fits(
        moto_endpoint: str, unique: str, emulator: Emulator, tmp_path: Any) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_IN_FLIGHT_JOBS="2",
                     S2V_DAILY_BUDGET_USD="100", S2V_CROSSFADE_MS="200")
    upload_talk(flow, seconds=40.0)
    flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    final = drive(flow)
    assert final.status is Status.DELIVERED, final.failure
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key=f"outputs/{FOLDER}/lecture.json")["Body"].read())
    assert report["stitch"]["crossfade_frames"] == 3  # 200 ms at 16 fps
    assert not [k for k in work_keys(flow, final.job_id) if "/fit-" in k]
    video = tmp_path / "talk.mp4"
    flow.s3.download_file(flow.bucket, f"outputs/{FOLDER}/lecture.mp4", str(video))
    assert probe_media(video).duration_seconds == pytest.approx(40.0, abs=0.1)


def test_a_segment_whose_video_cannot_be_read_fails_the_talk_naming_it(flow: Flow, emulator: Emulator) -> None:
    # Given a talk whose second segment's delivered video is not a video (a corrupt render)
    upload_talk(flow, seconds=40.0)
    flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    real_fit = longform._fit

    def corrupt_then_fit(segment: Job, deps: Any, folder: Any, **kwargs: Any) -> Any:
        if segment.segment_index == 1:
            flow.s3.put_object(Bucket=flow.bucket, Key=segment.output_key, Body=b"not a video")
        return real_fit(segment, deps, folder, **kwargs)

    longform._fit = corrupt_then_fit  # type: ignore[assignment]
    try:
        final = drive(flow)
    finally:
        longform._fit = real_fit  # type: ignore[assignment]
    # Then the talk fails, naming the segment and why, and nothing is delivered
    assert final.status is Status.FAILED
    assert "1" in final.failed_segments and final.failed_segments["1"]["code"] == "unusable_video"
    assert "could not be read" in final.failed_segments["1"]["reason"]
    assert outputs(flow) == [f"outputs/{FOLDER}/lecture.error.json"]


CRASH_POINTS = {
    "split: segment audio uploaded": (lambda flow: (flow.deps.objects, "upload_file"),
                                      lambda r, path, key, **k: "/audio-" in key),
    "split: segment job created": (lambda flow: (flow.deps.store, "create"), lambda r, job, **k: job.is_segment),
    "split: parent moved to RENDERING": (lambda flow: (flow.deps.store, "transition"),
                                         lambda r, job, event, **k: r is not None and r.status is Status.RENDERING),
    "segment fitted": (lambda flow: (flow.deps.objects, "upload_file"), lambda r, path, key, **k: "/fit-" in key),
    "last segment counted": (lambda flow: (flow.deps.store, "settle_segment"), lambda r, *a, **k: bool(r)),
    "stitch: video staged": (lambda flow: (s2v.flows.outputs, "stage_file"), lambda r, *a, **k: True),
    "stitch: video placed": (lambda flow: (s2v.flows.outputs, "place_video"), lambda r, *a, **k: True),
    "stitch: report written": (lambda flow: (s2v.flows.outputs, "place_document"),
                               lambda r, job, deps, kind, *rest: kind is REPORT),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_a_crash_at_any_step_still_gives_exactly_one_video_and_no_duplicate_submission(
        flow: Flow, emulator: Emulator, point: str) -> None:
    # Given a talk, and a process that dies right after the side effect at ``point`` (twice)
    target, when = CRASH_POINTS[point]
    obj, name = target(flow)
    before = emulator.submission_count
    upload_talk(flow, seconds=40.0)
    flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    seen_outputs: list[list[str]] = []
    injections = Counter[str]()

    @contextmanager
    def counting() -> Iterator[None]:
        injections["rounds"] += 1
        seen_outputs.append(outputs(flow))
        if injections["rounds"] > 40:
            yield
            return
        with crash_after(obj, name, when=when, times=1) as injection:
            try:
                yield
            finally:
                injections["crashes"] += injection.fired

    # When the triggers run again after each crash (stream redelivery, the poller's watch)
    final = drive(flow, crash=counting, steps=120)
    assert injections["crashes"] >= 1, f"no crash at {point}"
    # Then the talk is delivered once, each segment submitted once, and outputs/ never held a partial video
    assert final.status is Status.DELIVERED, final.failure
    segments = [s for s in segments_of(flow, final.job_id)]
    assert len({s.segment_index for s in segments}) == len(segments) == final.segment_count
    assert emulator.submission_count - before == final.segment_count
    assert outputs(flow) == [f"outputs/{FOLDER}/lecture.json", f"outputs/{FOLDER}/lecture.mp4"]
    for listing in seen_outputs:
        assert set(listing) <= {f"outputs/{FOLDER}/lecture.mp4", f"outputs/{FOLDER}/lecture.json"}
    head = flow.s3.head_object(Bucket=flow.bucket, Key=f"outputs/{FOLDER}/lecture.mp4")
    assert head["Metadata"]["s2v-job-id"] == final.job_id
    assert len(parents(flow)) == 1


def failing_segments(flow: Flow, emulator: Emulator, indexes: set[int]) -> None:
    """Renders of the segments at ``indexes`` fail at the provider (a render reason)."""
    provider = flow.deps.provider
    original = getattr(provider, "_real_submit", provider.submit)
    provider._real_submit = original
    one_at_a_time = threading.Lock()  # a split submits 4 at once: each POST must see its own fault

    def submit(request: Any, **kwargs: Any) -> Any:
        urls = " ".join((request.audio_url, *request.media.values()))  # the model's fields when set
        bad = any(f"-{i:04d}.flac" in urls for i in indexes)  # audio-0002.flac, left-0002.flac, ...
        with one_at_a_time:  # the emulator copies its faults when it accepts the task
            emulator.faults = Faults(fail_renders=bad)
            return original(request, **kwargs)

    provider.submit = submit


def test_a_segment_that_fails_once_is_rendered_again_as_a_linked_job(flow: Flow, emulator: Emulator) -> None:
    # Given a talk whose second segment fails at its first render only
    upload_talk(flow, seconds=40.0)
    flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    failing_segments(flow, emulator, {1})
    real_create = flow.deps.store.create
    made: list[Job] = []

    def create(job: Job) -> Job:
        stored = real_create(job)
        made.append(stored)
        if job.is_segment and job.attempt == 1:
            failing_segments(flow, emulator, set())  # the retry renders
        return stored

    flow.deps.store.create = create  # type: ignore[method-assign]
    # When the talk runs
    final = drive(flow)
    # Then it is delivered, and segment 1 took two linked jobs
    assert final.status is Status.DELIVERED, final.failure
    second = [s for s in segments_of(flow, final.job_id) if s.segment_index == 1]
    assert [(s.status, s.attempt) for s in second] == [(Status.FAILED, 0), (Status.DELIVERED, 1)]
    assert second[1].retry_of == second[0].job_id
    assert final.rendered["1"] == second[1].job_id


@pytest.mark.parametrize("failed_retries", [0, 1], ids=["retry", "retry of a failed retry"])
def test_a_segment_failing_three_times_fails_the_talk_naming_it_and_retry_renders_only_it(
        flow: Flow, emulator: Emulator, failed_retries: int) -> None:
    # Given a talk whose third segment always fails at the provider
    upload_talk(flow, seconds=40.0)
    flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    failing_segments(flow, emulator, {2})
    # When the talk runs
    failed = drive(flow)
    # Then segment 3 was tried three times (two automatic retries), and the talk failed naming it
    assert failed.status is Status.FAILED
    third = [s for s in segments_of(flow, failed.job_id) if s.segment_index == 2]
    assert [s.attempt for s in third] == [0, 1, 2] and all(s.status is Status.FAILED for s in third)
    assert failed.failure is not None and failed.failure.code == "segments_failed"
    start, end = failed.segments[2]["start"], failed.segments[2]["end"]
    error_key = f"outputs/{FOLDER}/lecture.error.json"
    error = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key=error_key)["Body"].read())
    [named] = error["failed_segments"]
    assert (named["segment"], named["start"], named["end"], named["attempts"]) == (3, start, end, 3)
    assert "segment 3" in error["reason"] and f"s2v retry {failed.job_id}" in error["reason"]
    assert outputs(flow) == [f"outputs/{FOLDER}/lecture.error.json"]  # no partial video
    first = failed
    for _ in range(failed_retries):  # a retry while the provider still fails: it fails again, the same way
        failed = drive_until(flow, retry_failed(failed.job_id, flow.deps).job_id)
        assert failed.status is Status.FAILED and failed.failure and failed.failure.code == "segments_failed"
    # When the operator retries the talk (the provider is fine again)
    failing_segments(flow, emulator, set())
    submitted = emulator.submission_count
    retry = retry_failed(failed.job_id, flow.deps)
    # Then only the failed segment renders again (a retry of a retry too), and the talk is delivered
    assert retry.status is Status.RENDERING and retry.retry_of == failed.job_id
    final = drive_until(flow, retry.job_id)
    assert final.status is Status.DELIVERED, final.failure
    assert emulator.submission_count - submitted == 1
    assert [s.segment_index for s in segments_of(flow, retry.job_id)] == [2]
    assert final.rendered["0"] == first.rendered["0"]


def drive_until(flow: Flow, job_id: str, steps: int = 60) -> Job:
    for _ in range(steps):
        drive_round(flow)
        job = flow.job(job_id)
        if job.status in TERMINAL:
            return job
    raise AssertionError(f"{job_id} did not end: {flow.job(job_id).status}")


def drive_round(flow: Flow) -> None:
    for job in flow.jobs():
        if job.status in (Status.SPLITTING, Status.STITCHING) or (
                job.is_segment and job.is_terminal and not job.segment_settled):
            longform.on_job_change(job.job_id, flow.deps)
        if job.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            deliver.on_job_change(job.job_id, flow.deps)
    poll.run(flow.deps)
    flow.drain_ingest()  # orphaned jobs (and retries) the poller sent back to ingest
    flow.clock.advance(30)


def test_a_talk_over_the_stack_limit_fails_before_any_money_is_spent(
        moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_TALK_SECONDS="30")
    before = emulator.submission_count
    upload_talk(flow, seconds=31.0)
    result = flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    job = flow.job(result.job_id)
    assert job.status is Status.FAILED and job.failure is not None
    assert job.failure.code == "audio_too_long" and "MaxTalkSeconds" in job.failure.reason
    assert emulator.submission_count == before


def test_settling_a_segment_twice_counts_it_once(flow: Flow) -> None:
    store: JobStore = flow.deps.store
    upload_talk(flow, seconds=40.0)
    flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    parent = parents(flow)[0]
    longform.on_job_change(parent.job_id, flow.deps)
    [first, *_] = segments_of(flow, parent.job_id)
    done = store.transition(first, __import__("s2v.model.jobs", fromlist=["Event"]).Event.FAIL, note="test")
    assert done is not None
    assert store.settle_segment(done, "failed", failure={"start": 0, "end": 1}) is True
    assert store.settle_segment(done, "failed", failure={"start": 0, "end": 1}) is False
    assert flow.job(parent.job_id).segments_failed == 1


def test_cancelling_a_talk_cancels_its_segments_and_delivers_nothing(flow: Flow, emulator: Emulator) -> None:
    from s2v.flows.cancel import cancel

    # Given a talk whose segments are rendering (2 in flight, 2 waiting)
    upload_talk(flow, seconds=40.0)
    result = flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    longform.on_job_change(result.job_id, flow.deps)
    assert flow.job(result.job_id).status is Status.RENDERING
    # When the operator cancels the talk
    outcome = cancel(result.job_id, flow.deps, by="test")
    # Then the talk and every segment are cancelled, and nothing is ever delivered
    assert outcome.job.status is Status.CANCELLED
    drive_round(flow)
    drive_round(flow)
    assert {s.status for s in segments_of(flow, result.job_id)} == {Status.CANCELLED}
    assert not [k for k in outputs(flow) if k.endswith(".mp4")]


def upload_two_speaker_talk(flow: Flow, stem: str, left_seconds: float, right_seconds: float,
                            **params: Any) -> None:
    flow.put(f"inputs/{FOLDER}/{stem}.png", samples.portrait_png(80, 64))
    flow.put(f"inputs/{FOLDER}/{stem}.json", json.dumps(params).encode())
    flow.put(f"inputs/{FOLDER}/{stem}.left.wav", samples.speech_wav(left_seconds, 8000))
    flow.put(f"inputs/{FOLDER}/{stem}.right.wav", samples.speech_wav(right_seconds, 8000))
    for name in ("png", "json", "left.wav", "right.wav"):
        flow.ingest(f"inputs/{FOLDER}/{stem}.{name}")


def test_a_two_speaker_talk_retries_a_failing_segment_with_both_its_cuts_and_retry_renders_only_it(
        flow: Flow, emulator: Emulator) -> None:
    # Given a two-speaker talk (order meanwhile) whose third segment always fails at the provider
    upload_two_speaker_talk(flow, "panel", 40.0, 31.0, order="meanwhile", segment_seconds=SEGMENT_SECONDS)
    failing_segments(flow, emulator, {2})
    failed = drive(flow)
    # Then each attempt of segment 3 carried that segment's left and right cuts, and the talk failed naming it
    assert failed.status is Status.FAILED and failed.failure and failed.failure.code == "segments_failed"
    third = [s for s in segments_of(flow, failed.job_id) if s.segment_index == 2]
    assert [s.attempt for s in third] == [0, 1, 2]
    for attempt in third:
        assert attempt.audio is None and attempt.params["model"] == "infinitetalk-multi"
        assert (attempt.extra_inputs["left"].key.rsplit("/", 1)[-1],
                attempt.extra_inputs["right"].key.rsplit("/", 1)[-1]) == ("left-0002.flac", "right-0002.flac")
    # When the operator retries it, only that segment renders again and one video is stitched
    failing_segments(flow, emulator, set())
    submitted = emulator.submission_count
    retry = retry_failed(failed.job_id, flow.deps)
    assert retry.status is Status.RENDERING
    final = drive_until(flow, retry.job_id)
    assert final.status is Status.DELIVERED, final.failure
    assert emulator.submission_count - submitted == 1
    assert {f"outputs/{FOLDER}/panel.json", f"outputs/{FOLDER}/panel.mp4"} <= set(outputs(flow))
    assert final.stitch["audio_key"] == failed.stitch["audio_key"]  # over the first split's mix


def test_two_speakers_in_turn_longer_than_one_call_are_refused_saying_how_to_render_them(
        moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_AUDIO_SECONDS="20")
    before = emulator.submission_count
    upload_two_speaker_talk(flow, "turns", 12.0, 11.0, order="left_right")
    [job] = parents(flow)
    assert job.status is Status.FAILED and job.failure is not None and job.failure.code == "audio_too_long"
    reason = job.failure.reason
    assert "order left_right plays the tracks one after the other, a 23.0 s video" in reason
    assert "one call renders at most 20 s" in reason
    assert "the right speaker's track starting with silence as long as the left speaker's part" in reason
    assert '"order": "meanwhile"' in reason
    assert emulator.submission_count == before


def test_a_talk_with_an_output_name_is_stitched_under_that_name(flow: Flow, emulator: Emulator) -> None:
    # A talk's params may name its output (a folder's defaults, a manifest row, its sidecar), as any job's.
    flow.put(f"inputs/{FOLDER}/lecture.png", samples.portrait_png(64, 80))
    flow.put(f"inputs/{FOLDER}/lecture.json",
             json.dumps({"segment_seconds": SEGMENT_SECONDS, "output_name": "{stem}-full"}).encode())
    flow.put(f"inputs/{FOLDER}/lecture.wav", samples.speech_wav(40.0, 8000))
    flow.ingest(f"inputs/{FOLDER}/lecture.wav")
    final = drive(flow)
    assert final.status is Status.DELIVERED, final.failure
    assert outputs(flow) == [f"outputs/{FOLDER}/lecture-full.json", f"outputs/{FOLDER}/lecture-full.mp4"]
    assert final.output_key == f"outputs/{FOLDER}/lecture-full.mp4"


@pytest.mark.parametrize("cancel_after", ["stage_file", "place_video"])
def test_a_talk_cancelled_while_its_stitch_runs_gets_no_video_and_no_delivered_report(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, cancel_after: str) -> None:
    from s2v.flows.cancel import cancel

    # Given a talk whose segments have all rendered: it is STITCHING
    upload_talk(flow, seconds=25.0)
    parent_id = flow.ingest(f"inputs/{FOLDER}/lecture.wav").job_id
    for _ in range(60):
        if flow.job(parent_id).status is Status.STITCHING:
            break
        drive_round(flow)
    assert flow.job(parent_id).status is Status.STITCHING
    # When the operator cancels it while the stitched video is being staged or placed
    real = getattr(s2v.flows.outputs, cancel_after)

    def then_cancelled(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        cancel(parent_id, flow.deps, by="test")
        return result

    monkeypatch.setattr(s2v.flows.outputs, cancel_after, then_cancelled)
    longform.on_job_change(parent_id, flow.deps)
    monkeypatch.undo()
    deliver.on_job_change(parent_id, flow.deps)  # the CANCELLED record's entry (and withdrawal)
    # Then the talk is cancelled, with its entry and nothing else under outputs/
    assert flow.job(parent_id).status is Status.CANCELLED
    assert outputs(flow) == [f"outputs/{FOLDER}/lecture.cancelled.json"]
