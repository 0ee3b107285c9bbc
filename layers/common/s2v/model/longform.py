"""Long talks as a parent job and segment jobs: the decisions, with no I/O.

A talk longer than one provider call (or one whose params ask for ``segment_seconds``) becomes a
parent job. Its audio is cut at pauses (``model/segments.py``) into segment jobs: ordinary jobs
with a ``parent_id``, the parent's portrait and params, and a span of the talk. The parent counts
the segments that ended (``JobStore.settle_segment``, a conditional counter); when every segment
rendered it stitches one video, and when some failed for good it fails naming them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from s2v.model import segments as planner
from s2v.model.jobs import Failure, InputObject, Job, Status, job_id_for
from s2v.model.models import AUDIO_ROLES, CATALOG, Model
from s2v.model.provider_facts import BILLED_MIN_SECONDS

# Failures a second render may not repeat. Never one about the submission itself: a submit with
# no clear answer may have been charged, and only a person decides to pay again.
RENDER_RETRYABLE = frozenset({"provider_failed", "no_output", "unknown_to_provider"})


# A crossfade blends frames of two segments, so its talk is encoded again in one pass by one
# invocation: about 20 s per output minute at 720p on one vCPU (bench figure 8), so 20 minutes keep
# well inside the function's 900 s. Longer talks join their segments with clean cuts.
CROSSFADE_MAX_SECONDS = 20 * 60


def talk_max_segment_seconds(requested: float, *, max_audio_seconds: float, stack_default: float) -> float:
    """The longest segment a talk is cut into: the user's ``segment_seconds`` (sidecar), else the
    stack default, else one call's limit; never above one call's limit."""
    chosen = requested or stack_default or max_audio_seconds
    return float(min(chosen, max_audio_seconds))


def is_talk(seconds: float, *, requested: float, max_audio_seconds: float, stack_default: float) -> bool:
    """Whether audio of ``seconds`` becomes a parent job rather than one provider call."""
    if seconds > max_audio_seconds:
        return True
    limit = requested or stack_default
    return bool(limit) and seconds > limit


def check_segment_seconds(requested: float, *, max_audio_seconds: float) -> str:
    """'' when ``requested`` is usable, else what is wrong with it."""
    low = 2 * BILLED_MIN_SECONDS
    if requested and not low <= requested <= max_audio_seconds:
        return (f"segment_seconds must be 0 (cut only talks longer than one call) or from {low} to "
                f"{max_audio_seconds:g} s (one call's limit), not {requested:g}")
    return ""


def rough_plan(seconds: float, max_segment_seconds: float) -> list[planner.Segment]:
    """The plan before the pauses are known (hard cuts): what the estimate and budget check use at
    ingest. The real plan cuts earlier, at pauses, so it may have one segment more."""
    return planner.plan_segments(seconds, (), max_seconds=max_segment_seconds)


def estimate(plan: Sequence[planner.Segment], price_per_second: float, *, model: Model | None = None,
             roles: Iterable[str] = ("audio",)) -> float:
    """The sum of the segments' prices, each billed on its own at this price per second: by the
    model's billing rule (each of ``roles``, the talk's tracks, as long as the segment), or the
    provider's default rule without a model."""
    if model is None:
        return round(planner.billed_seconds(plan) * price_per_second, 4)
    tracks = tuple(roles)
    return round(sum(model.billed_seconds(dict.fromkeys(tracks, s.seconds)) for s in plan) * price_per_second, 4)


def decoded_talk_refusal(names: str, seconds: float, *, declared: float, cost: float, max_talk_seconds: float,
                         daily_budget_usd: float) -> Failure | None:
    """Why a talk is refused once its audio is decoded, or None. A header can lie about the length
    (an MP3 whose header says 10 minutes may decode to 4 hours): the limits checked at ingest on
    the header are checked again on the decoded length, before any segment is made."""
    said = f" (its header said {declared / 60:.1f})" if abs(seconds - declared) >= 1 else ""
    if max_talk_seconds > 0 and seconds > max_talk_seconds:
        return Failure(stage="validate", code="audio_too_long",
                       reason=f"{names}: the audio decodes to {seconds / 60:.1f} minutes{said}; this stack renders "
                              f"talks of at most {max_talk_seconds / 60:g} minutes (MaxTalkSeconds). Split the "
                              "recording into parts, or raise MaxTalkSeconds.")
    if cost > daily_budget_usd:
        return Failure(stage="validate", code="over_budget",
                       reason=f"{names}: the audio decodes to {seconds / 60:.1f} minutes{said}, estimated at "
                              f"${cost:.2f} in total, more than the whole daily budget of ${daily_budget_usd:.2f}; "
                              "shorten the audio or raise DailyBudgetUSD.")
    return None


def talk_tracks(job: Job) -> dict[str, InputObject]:
    """A talk's audio tracks by bucket role: ``audio``, or a two-speaker talk's ``left`` and ``right``
    (which share one timeline: order meanwhile)."""
    return {role: obj for role, obj in job.inputs.items() if role in AUDIO_ROLES}


def talk_audio_key(parent: Job, work_prefix: str, suffix: str = ".flac") -> str:
    """The audio under a talk's stitched video: the upload, or for two speakers both tracks mixed on
    their timeline (made once, by the split, under the work prefix)."""
    tracks = talk_tracks(parent)
    if set(tracks) == {"audio"}:
        return tracks["audio"].key
    # Recorded by the split that made it (a retried talk keeps its first split's plan and mix).
    return str(parent.stitch.get("audio_key") or f"{work_base(work_prefix, parent.job_id)}talk-mix{suffix}")


def plan_records(plan: Iterable[planner.Segment]) -> tuple[dict[str, Any], ...]:
    return tuple({"index": s.index, "start": round(s.start, 3), "end": round(s.end, 3), "cut": s.cut} for s in plan)


def plan_from_records(records: Iterable[Mapping[str, Any]]) -> list[planner.Segment]:
    return [planner.Segment(int(r["index"]), float(r["start"]), float(r["end"]), str(r["cut"])) for r in records]


def segment_job_id(parent: Job, index: int, attempt: int) -> str:
    """The same parent, index and attempt always name the same job, so a split or a retry that
    runs twice creates one job (the segment's audio may be re-cut: its ETag is not part of it)."""
    return job_id_for(parent.folder, parent.stem, parent.image, None, attempt=attempt,
                      extra=("segment", parent.job_id, str(index)))


def work_base(work_prefix: str, parent_id: str) -> str:
    return f"{work_prefix}{parent_id}/"


def segment_audio_key(work_prefix: str, parent_id: str, index: int, suffix: str, role: str = "audio") -> str:
    """A segment's cut of one of the talk's tracks (``audio``, or ``left``/``right``)."""
    return f"{work_base(work_prefix, parent_id)}{role}-{index:04d}{suffix}"


def segment_output_base(work_prefix: str, job: Job) -> str:
    """Where a segment's rendered video and report go: beside its audio, one name per attempt."""
    return f"{work_base(work_prefix, job.parent_id)}video-{job.segment_index:04d}-{job.job_id[:12]}"


def fit_key(work_prefix: str, job: Job, suffix: str) -> str:
    """Where a segment's video, fitted to its exact frames for the join, is kept (one per attempt)."""
    return f"{work_base(work_prefix, job.parent_id)}fit-{job.segment_index:04d}-{job.job_id[:12]}{suffix}"


def crossfades(audio_seconds: float, crossfade_ms: float) -> bool:
    """Whether a talk is stitched in one pass with crossfades at its joins; otherwise its segments
    are fitted one by one as they render and joined without encoding again."""
    return crossfade_ms > 0 and audio_seconds <= CROSSFADE_MAX_SECONDS


def new_segment(parent: Job, record: Mapping[str, Any], tracks: Mapping[str, InputObject], now: float, *,
                price_per_second: float, attempt: int = 0, retry_of: str = "", due_in: float) -> Job:
    """A RECEIVED segment job, already validated: the parent's portrait, its other images (a mask),
    its params (the model, one seed for all) and ``tracks``, the segment's cut of each of the talk's
    tracks by role."""
    index, start, end = int(record["index"]), float(record["start"]), float(record["end"])
    images = {role: obj for role, obj in parent.extra_inputs.items() if role not in AUDIO_ROLES}
    model = CATALOG[parent.model_name]
    cost = model.price_usd(dict.fromkeys(tracks, end - start), "", str(parent.params.get("order") or ""),
                           price_per_second=price_per_second)
    return Job(
        job_id=segment_job_id(parent, index, attempt), status=Status.RECEIVED, version=0, folder=parent.folder,
        stem=parent.stem, image=parent.image, audio=tracks.get("audio"),
        extra_inputs={**images, **{role: obj for role, obj in tracks.items() if role != "audio"}},
        # The portrait (and mask) versions the talk validated; its tracks are this segment's own cuts.
        input_versions={role: v for role, v in parent.input_versions.items() if role not in AUDIO_ROLES},
        created_at=now, updated_at=now, attempt=attempt,
        retry_of=retry_of, params=dict(parent.params), audio_seconds=round(end - start, 3),
        estimated_cost_usd=cost, next_check_at=now + due_in,
        parent_id=parent.job_id, segment_index=index, segment_start=start, segment_end=end,
        segment_cut=str(record["cut"]),
    )


def retryable(segment: Job, *, max_retries: int) -> bool:
    """A segment that failed at the provider for a render reason is rendered again, as a linked
    job, at most ``max_retries`` times."""
    failure = segment.failure
    return (failure is not None and failure.stage == "render" and failure.code in RENDER_RETRYABLE
            and segment.attempt < max_retries)


def span(start: float, end: float) -> str:
    """``12:03.5-22:01.0``: a time range a person can find in the talk."""
    return f"{_clock(start)}-{_clock(end)}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"


def talk_failure(parent: Job) -> Failure:
    """Why a parent failed: each failed segment with its time range and its own reason."""
    parts = []
    for index, info in sorted(parent.failed_segments.items(), key=lambda kv: int(kv[0])):
        parts.append(f"segment {int(index) + 1} ({span(float(info['start']), float(info['end']))}): "
                     f"{info.get('reason', '')}")
    count = len(parent.failed_segments)
    reason = (f"{count} of {parent.segment_count} segments failed, so no video was stitched: "
              + "; ".join(parts) + f". The other segments rendered; `s2v retry {parent.job_id}` renders only the "
              "failed ones again and stitches the video.")
    return Failure(stage="render", code="segments_failed", reason=reason)


def progress(parent: Job) -> str:
    """``7 of 12 rendered`` (and how many failed), for the CLI and the dashboard."""
    if not parent.segment_count:
        return "splitting" if parent.status == "SPLITTING" else ""
    text = f"{parent.segments_rendered} of {parent.segment_count} rendered"
    if parent.segments_failed:
        text += f", {parent.segments_failed} failed"
    return text


def stitch_inputs(parent: Job, segment_jobs: Mapping[str, Job]) -> list[tuple[planner.Segment, Job]]:
    """Each planned segment with the segment job that rendered it, in talk order. Raises KeyError
    naming a missing index (a parent is only stitched once every index rendered)."""
    pairs = []
    for segment in plan_from_records(parent.segments):
        job_id = parent.rendered.get(str(segment.index))
        if not job_id or job_id not in segment_jobs:
            raise KeyError(f"segment {segment.index} has no rendered video")
        pairs.append((segment, segment_jobs[job_id]))
    return pairs


def talk_report(parent: Job, rows: Sequence[tuple[planner.Segment, Job]], *, wall_seconds: float) -> dict[str, Any]:
    """The ``segments`` part of a talk's report: per segment its span, how it was cut, the render
    that made it (provider id, cost, render time), and totals, wall time against the renders' sum."""
    listed: list[dict[str, Any]] = []
    for segment, job in rows:
        listed.append({
            "index": segment.index, "start": round(segment.start, 3), "end": round(segment.end, 3),
            "seconds": round(segment.seconds, 3), "cut": segment.cut, "job_id": job.job_id,
            "attempt": job.attempt, "provider_id": job.provider_id,
            "cost_usd": job.final_cost_usd if job.final_cost_usd is not None else job.estimated_cost_usd,
            "render_seconds": job.render_seconds,
        })
    render_sum = round(sum(float(r["render_seconds"] or 0) for r in listed), 3)
    return {
        "count": len(listed),
        "max_segment_seconds": parent.segment_seconds,
        "cuts_at_pauses": sum(1 for r in listed if r["cut"] == "pause"),
        "hard_cuts": sum(1 for r in listed if r["cut"] == "hard"),
        "segments": listed,
        "total_cost_usd": round(sum(float(r["cost_usd"] or 0) for r in listed), 4),
        "wall_seconds": round(wall_seconds, 3),
        "render_seconds_sum": render_sum,
        "parallel_speedup": round(render_sum / wall_seconds, 2) if wall_seconds > 0 else None,
    }
