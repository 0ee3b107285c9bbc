"""Long-form planning: where to cut a long talk, and how many frames each segment contributes.

Pure: pauses come in as numbers (from ffmpeg's ``silencedetect`` in an adapter), cuts go out as
numbers. The rules (issue "Talks of any length"):

- a segment is at most ``max_seconds`` long (the provider's single-call limit, or a shorter
  ``segment_seconds`` a user chose to render in parallel);
- cut in the middle of the pause nearest below the limit; never inside speech when a pause of at
  least ``min_pause`` seconds lies in the last quarter of the window; otherwise cut hard at the
  limit and say so;
- no segment is shorter than the provider's 3 s billing minimum.

Frames: the model renders whole frames, so a segment's video is trimmed or padded to its exact audio
span before the concat. Counting each segment's frames as ``round(end × fps) − round(start × fps)``
keeps every join within half a frame of its audio time, with no drift over an hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from s2v.model import provider_facts
from s2v.model.provider_facts import BILLED_MIN_SECONDS

MIN_PAUSE_SECONDS = 0.3
SEARCH_FRACTION = 0.25  # pauses are looked for in the last quarter of each window


@dataclass(frozen=True)
class Pause:
    start: float
    end: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Segment:
    index: int
    start: float
    end: float
    cut: str  # how this segment ends: "pause", "hard" or "end" (the talk's end)

    @property
    def seconds(self) -> float:
        return self.end - self.start


def plan_segments(duration: float, pauses: Iterable[Pause], *, max_seconds: float,
                  min_seconds: float = BILLED_MIN_SECONDS, min_pause: float = MIN_PAUSE_SECONDS) -> list[Segment]:
    """Cut ``duration`` seconds of audio into segments of at most ``max_seconds``."""
    if duration <= 0:
        raise ValueError("duration must be positive")
    if max_seconds < 2 * min_seconds:
        raise ValueError(f"max_seconds must be at least {2 * min_seconds} s")
    usable = sorted((p for p in pauses if p.length >= min_pause), key=lambda p: p.middle)
    segments: list[Segment] = []
    start = 0.0
    while duration - start > max_seconds:
        # The last segment must keep at least min_seconds: never cut later than that allows.
        limit = min(start + max_seconds, duration - min_seconds)
        floor = max(start + max_seconds * (1 - SEARCH_FRACTION), start + min_seconds)
        inside = [p.middle for p in usable if floor <= p.middle <= limit]
        if inside:
            end, how = inside[-1], "pause"
        else:
            end, how = limit, "hard"
        segments.append(Segment(len(segments), start, end, how))
        start = end
    segments.append(Segment(len(segments), start, duration, "end"))
    return segments


def shared_pauses(*tracks: Iterable[Pause]) -> list[Pause]:
    """Where every track pauses at once: the overlaps of their pause lists. Two speakers on one
    timeline are cut only where both are silent, so no cut falls inside either one's speech."""
    shared: list[Pause] | None = None
    for track in tracks:
        pauses = sorted(track, key=lambda p: p.start)
        if shared is None:
            shared = pauses
            continue
        shared = [Pause(max(a.start, b.start), min(a.end, b.end))
                  for a in shared for b in pauses if max(a.start, b.start) < min(a.end, b.end)]
    return sorted(shared or [], key=lambda p: p.start)


def silent_tail(track_seconds: float, timeline_seconds: float) -> list[Pause]:
    """A track shorter than its timeline is silent after its end (it is padded): a pause there."""
    return [Pause(track_seconds, timeline_seconds)] if timeline_seconds > track_seconds else []


def frame_counts(segments: Sequence[Segment], fps: float) -> list[int]:
    """Frames each segment's video must have so every join lands within half a frame of its audio
    time: boundaries are rounded once, on the whole talk's timeline, never per segment."""
    return [frame_count(s.start, s.end, fps) for s in segments]


def frame_count(start: float, end: float, fps: float) -> int:
    """Frames of the span ``start``..``end`` of a talk (one segment's share of ``frame_counts``)."""
    return round(end * fps) - round(start * fps)


def billed_seconds(segments: Sequence[Segment]) -> int:
    """What the provider bills for all segments: each billed on its own (``provider_facts.billed_seconds``)."""
    return sum(provider_facts.billed_seconds(s.seconds) for s in segments)


def parse_silencedetect(log: str) -> list[Pause]:
    """Pauses from ffmpeg's ``silencedetect`` log (``silence_start: 12.3`` ... ``silence_end: 13.1``).
    A silence still open at the end of the file has no end and is not a pause between words."""
    pauses: list[Pause] = []
    started: float | None = None
    for line in log.splitlines():
        if "silence_start:" in line:
            started = _number_after(line, "silence_start:")
        elif "silence_end:" in line and started is not None:
            end = _number_after(line, "silence_end:")
            if end is not None:
                pauses.append(Pause(max(0.0, started), end))
            started = None
    return pauses


def _number_after(line: str, label: str) -> float | None:
    try:
        return float(line.split(label, 1)[1].split()[0])
    except (IndexError, ValueError):
        return None
