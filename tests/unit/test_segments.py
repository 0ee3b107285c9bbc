"""Long-form planning: cuts at pauses within the limit, frames that never drift."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2v.model.segments import Pause, Segment, billed_seconds, frame_counts, parse_silencedetect, plan_segments

LIMIT = 600.0


@st.composite
def talks(draw: st.DrawFn) -> tuple[float, list[Pause]]:
    duration = draw(st.floats(min_value=1.0, max_value=4 * 3600.0))
    starts = draw(st.lists(st.floats(min_value=0.0, max_value=duration), max_size=60))
    lengths = draw(st.lists(st.floats(min_value=0.05, max_value=3.0), min_size=len(starts), max_size=len(starts)))
    return duration, [Pause(s, min(duration, s + n)) for s, n in zip(starts, lengths, strict=True)]


@settings(max_examples=300, deadline=None)
@given(talks(), st.sampled_from([LIMIT, 60.0, 6.0]))
def test_segments_cover_the_talk_within_the_limits(talk: tuple[float, list[Pause]], limit: float) -> None:
    duration, pauses = talk
    segments = plan_segments(duration, pauses, max_seconds=limit)
    # Contiguous, in order, covering exactly [0, duration]
    assert segments[0].start == 0.0 and segments[-1].end == duration
    assert all(a.end == b.start for a, b in pairwise(segments))
    assert [s.index for s in segments] == list(range(len(segments)))
    for segment in segments:
        assert segment.seconds <= limit + 1e-9
        # Never under the billing minimum, unless the whole talk is shorter than it
        assert segment.seconds >= 3.0 - 1e-9 or len(segments) == 1
    for segment in segments[:-1]:
        if segment.cut == "pause":
            assert any(p.start <= segment.end <= p.end and p.length >= 0.3 for p in pauses)


@settings(max_examples=300, deadline=None)
@given(talks())
def test_a_hard_cut_only_when_no_long_pause_lies_in_the_last_quarter(talk: tuple[float, list[Pause]]) -> None:
    duration, pauses = talk
    for segment in plan_segments(duration, pauses, max_seconds=LIMIT)[:-1]:
        if segment.cut == "hard":
            window_end = segment.start + LIMIT
            late = [p for p in pauses if p.length >= 0.3
                    and segment.start + 0.75 * LIMIT <= p.middle <= min(window_end, duration - 3.0)]
            assert late == []


def test_cut_in_the_middle_of_the_pause_nearest_below_the_limit() -> None:
    # Given a 20-minute talk with pauses at 8 min, 9 min 50 s and 10 min 30 s
    pauses = [Pause(480.0, 481.0), Pause(589.6, 590.4), Pause(630.0, 631.0)]
    # When it is cut for a 600 s limit
    segments = plan_segments(1200.0, pauses, max_seconds=600.0)
    # Then the first cut is mid-pause at 590 s, the one nearest below the limit
    assert segments[0] == Segment(0, 0.0, 590.0, "pause")
    assert segments[1].start == 590.0 and segments[-1].end == 1200.0


def test_short_pauses_are_speech_and_give_a_hard_cut_at_the_limit() -> None:
    segments = plan_segments(900.0, [Pause(595.0, 595.2)], max_seconds=600.0)
    assert segments[0] == Segment(0, 0.0, 600.0, "hard")


def test_the_last_segment_keeps_the_billing_minimum() -> None:
    # 601 s with no pauses: cutting at 600 would leave a 1 s segment
    segments = plan_segments(601.0, [], max_seconds=600.0)
    assert [round(s.seconds, 6) for s in segments] == [598.0, 3.0]


def test_a_talk_within_the_limit_is_one_segment() -> None:
    assert plan_segments(600.0, [Pause(100, 101)], max_seconds=600.0) == [Segment(0, 0.0, 600.0, "end")]


@settings(max_examples=300, deadline=None)
@given(talks(), st.sampled_from([25.0, 30.0, 24000 / 1001]))
def test_frame_counts_keep_every_join_within_half_a_frame(talk: tuple[float, list[Pause]], fps: float) -> None:
    duration, pauses = talk
    segments = plan_segments(duration, pauses, max_seconds=60.0)
    counts = frame_counts(segments, fps)
    elapsed = 0
    for segment, count in zip(segments, counts, strict=True):
        elapsed += count
        assert abs(elapsed / fps - segment.end) <= 0.5 / fps + 1e-9  # no drift, however many joins
    assert sum(counts) == round(duration * fps)


def test_billed_seconds_round_each_segment_up_with_the_minimum() -> None:
    segments = [Segment(0, 0.0, 590.2, "pause"), Segment(1, 590.2, 592.0, "end")]
    assert billed_seconds(segments) == 591 + 3


def test_silencedetect_log_gives_closed_pauses_only() -> None:
    log = """
[silencedetect @ 0x55] silence_start: 1.25
[silencedetect @ 0x55] silence_end: 1.75 | silence_duration: 0.5
[silencedetect @ 0x55] silence_start: -0.01
[silencedetect @ 0x55] silence_end: 0.4 | silence_duration: 0.41
[silencedetect @ 0x55] silence_start: 9.5
"""
    assert parse_silencedetect(log) == [Pause(1.25, 1.75), Pause(0.0, 0.4)]


@pytest.mark.parametrize("limit", [0.0, 5.0])
def test_a_limit_too_small_for_two_billable_segments_is_refused(limit: float) -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        plan_segments(100.0, [], max_seconds=limit)
