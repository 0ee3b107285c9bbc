"""Long talks' pure decisions (model/longform.py) and how the CLI shows a talk."""

from __future__ import annotations

import pytest
from rich.console import Console

from s2v.model.jobs import Failure, InputObject, Job, Status
from s2v.model.longform import (
    check_segment_seconds,
    estimate,
    is_talk,
    new_segment,
    plan_records,
    progress,
    retryable,
    rough_plan,
    segment_job_id,
    span,
    talk_audio_key,
    talk_failure,
    talk_max_segment_seconds,
    talk_report,
    talk_tracks,
)
from s2v.model.models import CATALOG
from s2v.model.segments import Pause, Segment, shared_pauses, silent_tail
from s2v_cli import views

IMAGE = InputObject("inputs/t/a.png", "e1", 10)
AUDIO = InputObject("inputs/t/a.wav", "e2", 20)


def parent(**changes: object) -> Job:
    job = Job(job_id="p" * 32, status=Status.RENDERING, version=3, folder="t", stem="a", image=IMAGE, audio=AUDIO,
              created_at=1000.0, updated_at=1000.0, params={"prompt": "", "resolution": "480p", "seed": 7},
              segments=plan_records([Segment(0, 0, 300, "pause"), Segment(1, 300, 610, "pause"),
                                     Segment(2, 610, 700, "end")]), segment_count=3, estimated_cost_usd=21.03)
    return job.with_changes(**changes)


def test_audio_longer_than_one_call_or_than_the_chosen_segments_is_a_talk() -> None:
    assert is_talk(601, requested=0, max_audio_seconds=600, stack_default=0)
    assert not is_talk(600, requested=0, max_audio_seconds=600, stack_default=0)
    assert is_talk(61, requested=60, max_audio_seconds=600, stack_default=0)
    assert is_talk(61, requested=0, max_audio_seconds=600, stack_default=60)
    assert not is_talk(59, requested=60, max_audio_seconds=600, stack_default=0)
    # the params file's choice beats the stack default, and no segment is longer than one call
    assert talk_max_segment_seconds(60, max_audio_seconds=600, stack_default=120) == 60
    assert talk_max_segment_seconds(0, max_audio_seconds=600, stack_default=120) == 120
    assert talk_max_segment_seconds(900, max_audio_seconds=600, stack_default=0) == 600


@pytest.mark.parametrize(("requested", "ok"), [(0, True), (6, True), (600, True), (5.9, False), (601, False)])
def test_segment_seconds_must_allow_two_billable_segments_and_fit_one_call(requested: float, ok: bool) -> None:
    problem = check_segment_seconds(requested, max_audio_seconds=600)
    assert (problem == "") is ok
    if not ok:
        assert "from 6 to 600 s" in problem


def test_the_estimate_bills_each_segment_on_its_own() -> None:
    # 25 minutes in 3 hard-cut segments of at most 600 s: 600 + 600 + 300 billed seconds
    plan = rough_plan(1500.0, 600)
    assert [s.seconds for s in plan] == [600, 600, 300]
    assert estimate(plan, 0.03) == pytest.approx(45.0)
    # a 0.2 s tail is billed 3 s on its own: the planner never leaves one shorter than that
    assert min(s.seconds for s in rough_plan(600.2, 300)) >= 3


def test_a_segment_id_names_its_parent_index_and_attempt_and_nothing_else() -> None:
    talk = parent()
    ids = {segment_job_id(talk, i, a) for i in range(3) for a in range(3)}
    assert len(ids) == 9
    assert segment_job_id(talk, 1, 0) == segment_job_id(talk.with_changes(audio=None), 1, 0)
    assert segment_job_id(talk, 1, 0) != segment_job_id(talk.with_changes(job_id="q" * 32), 1, 0)


def test_a_segment_takes_its_parents_portrait_params_and_seed_and_its_own_span() -> None:
    talk = parent()
    audio = InputObject("work/p/audio-0001.flac", "x", 5)
    job = new_segment(talk, talk.segments[1], {"audio": audio}, 2000.0, price_per_second=0.03, due_in=120)
    assert (job.status, job.parent_id, job.segment_index, job.image, job.audio) == (
        Status.RECEIVED, talk.job_id, 1, IMAGE, audio)
    assert job.params == talk.params and (job.segment_start, job.segment_end, job.segment_cut) == (300, 610, "pause")
    assert job.estimated_cost_usd == pytest.approx(310 * 0.03) and job.next_check_at == 2120.0
    assert job.is_segment and not job.is_parent


MASK = InputObject("inputs/t/a.mask.png", "e3", 30)
LEFT, RIGHT = InputObject("inputs/t/a.left.wav", "e4", 40), InputObject("inputs/t/a.right.wav", "e5", 50)


def test_a_segment_of_an_infinitetalk_talk_carries_the_mask_and_the_model_and_bills_by_the_model() -> None:
    # Given an InfiniteTalk talk with a mask
    talk = parent(extra_inputs={"mask": MASK}, params={"resolution": "480p", "seed": 7, "model": "infinitetalk"})
    cut = InputObject("work/p/audio-0002.flac", "x", 5)
    # When its last, short segment (90 s) and a 4 s one are made
    job = new_segment(talk, talk.segments[2], {"audio": cut}, 2000.0, price_per_second=0.03, due_in=0)
    short = new_segment(talk, {"index": 3, "start": 700, "end": 704, "cut": "end"}, {"audio": cut}, 2000.0,
                        price_per_second=0.03, due_in=0)
    # Then each renders with the mask, its own cut, and the talk's model; InfiniteTalk bills at least 5 s
    assert job.inputs == {"image": IMAGE, "audio": cut, "mask": MASK} and job.model_name == "infinitetalk"
    assert job.estimated_cost_usd == pytest.approx(90 * 0.03)
    assert short.estimated_cost_usd == pytest.approx(5 * 0.03)
    plan = [Segment(0, 0, 4, "pause"), Segment(1, 4, 8, "end")]
    assert estimate(plan, 0.03, model=CATALOG["infinitetalk"]) == pytest.approx(2 * 5 * 0.03)
    assert estimate(plan, 0.03) == pytest.approx(8 * 0.03)  # Wan 2.2 S2V's rule: 3 s minimum
    assert talk_audio_key(talk, "work/") == AUDIO.key  # the stitch lays the upload under the video


def test_a_segment_of_a_two_speaker_talk_carries_both_cuts_and_the_stitch_reads_their_mix() -> None:
    talk = parent(audio=None, extra_inputs={"left": LEFT, "right": RIGHT},
                  params={"resolution": "480p", "seed": 7, "model": "infinitetalk-multi", "order": "meanwhile"})
    assert talk_tracks(talk) == {"left": LEFT, "right": RIGHT}
    cuts = {"left": InputObject("work/p/left-0001.flac", "l", 5),
            "right": InputObject("work/p/right-0001.flac", "r", 5)}
    job = new_segment(talk, talk.segments[1], cuts, 2000.0, price_per_second=0.03, due_in=0)
    assert job.audio is None and job.inputs == {"image": IMAGE, **cuts}
    assert job.params["order"] == "meanwhile" and job.audio_seconds == 310
    # the two-speaker model bills both tracks (assumed: the sum), each as long as the segment, up to its cap
    assert job.estimated_cost_usd == pytest.approx(600 * 0.03)
    last = new_segment(talk, talk.segments[2], cuts, 2000.0, price_per_second=0.03, due_in=0)
    assert last.estimated_cost_usd == pytest.approx(2 * 90 * 0.03)
    assert estimate([Segment(0, 0, 90, "end")], 0.03, model=CATALOG["infinitetalk-multi"],
                    roles=("left", "right")) == pytest.approx(2 * 90 * 0.03)
    assert talk_audio_key(talk, "work/") == f"work/{talk.job_id}/talk-mix.flac"


def test_two_speakers_are_cut_only_where_both_pause() -> None:
    left = [Pause(1.0, 2.0), Pause(5.0, 6.0), Pause(9.0, 9.4)]
    right = [Pause(1.5, 3.0), Pause(6.0, 7.0), Pause(8.0, 10.0)]
    assert shared_pauses(left, right) == [Pause(1.5, 2.0), Pause(9.0, 9.4)]  # touching at 6.0 is no pause
    assert shared_pauses(left) == left and shared_pauses() == []
    # the shorter track is silent after its end: the other's pauses there are shared
    assert shared_pauses(left, silent_tail(4.0, 10.0)) == [Pause(5.0, 6.0), Pause(9.0, 9.4)]
    assert silent_tail(10.0, 10.0) == []


def failed(code: str, *, attempt: int = 0, stage: str = "render") -> Job:
    return parent(status=Status.FAILED, parent_id="p" * 32, segments=(), segment_count=0, attempt=attempt,
                  failure=Failure(stage=stage, code=code, reason="x"))


def test_only_render_failures_are_retried_and_at_most_twice() -> None:
    assert retryable(failed("provider_failed"), max_retries=2)
    assert retryable(failed("no_output", attempt=1), max_retries=2)
    assert not retryable(failed("provider_failed", attempt=2), max_retries=2)
    assert not retryable(failed("nsfw"), max_retries=2)  # the same inputs would be flagged again
    # a submit whose outcome was unknown may have been charged: never sent again by itself
    assert not retryable(failed("submit_outcome_unknown", stage="submit"), max_retries=2)
    assert not retryable(failed("stuck"), max_retries=2)


def test_a_failed_talk_names_each_failed_segment_and_its_time_range() -> None:
    talk = parent(failed_segments={"1": {"start": 300, "end": 610, "reason": "WaveSpeed failed it"}},
                  segments_failed=1, segments_rendered=2)
    failure = talk_failure(talk)
    assert failure.code == "segments_failed"
    assert "1 of 3 segments failed" in failure.reason
    assert "segment 2 (5:00.0-10:10.0): WaveSpeed failed it" in failure.reason
    assert f"s2v retry {talk.job_id}" in failure.reason
    assert span(3725.5, 3731) == "1:02:05.5-1:02:11.0"


def test_progress_reads_as_rendered_of_total() -> None:
    assert progress(parent(segments_rendered=2)) == "2 of 3 rendered"
    assert progress(parent(segments_rendered=1, segments_failed=1)) == "1 of 3 rendered, 1 failed"


def test_the_report_lists_segments_total_cost_and_wall_time_against_render_time() -> None:
    talk = parent()
    rows = [(Segment(i, s["start"], s["end"], s["cut"]),
             parent(job_id=f"{i}" * 32, provider_id=f"task-{i}", final_cost_usd=1.5, render_seconds=100.0, segments=()))
            for i, s in enumerate(talk.segments)]
    report = talk_report(talk, rows, wall_seconds=150.0)
    assert [r["provider_id"] for r in report["segments"]] == ["task-0", "task-1", "task-2"]
    assert [r["cut"] for r in report["segments"]] == ["pause", "pause", "end"]
    assert report["total_cost_usd"] == pytest.approx(4.5)
    assert (report["render_seconds_sum"], report["wall_seconds"], report["parallel_speedup"]) == (300.0, 150.0, 2.0)


def render(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_the_cli_shows_a_talk_with_its_progress_and_its_segments() -> None:
    talk = parent(segments_rendered=2)
    cuts = [{"audio": InputObject(f"work/p/audio-{i}.flac", "x", 5)} for i in range(3)]
    segments = [new_segment(talk, r, cuts[i], 1000.0, price_per_second=0.03, due_in=0).with_changes(
        status=Status.DELIVERED, provider_id=f"task-{i}") for i, r in enumerate(talk.segments)]
    # the jobs table: the talk's state with its progress; a segment says which one it is
    table = render(views.jobs_table([talk, segments[1]], now=1100.0))
    assert "RENDERING (2 of 3 rendered)" in table
    assert "t/a segment 2" in table
    # a talk costs what its segments cost: it is not counted twice
    assert not views.is_charged(talk) and views.is_charged(segments[0])
    # s2v show: the record and a table of segments
    shown = render(views.job_detail(talk, "bucket", segments))
    assert "2 of 3 rendered" in shown
    assert "5:00.0-10:10.0" in shown and "task-2" in shown
