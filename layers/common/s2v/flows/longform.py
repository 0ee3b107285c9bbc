"""Talks longer than one call: split into segment jobs, count them as they end, stitch one video.

Fan-out and fan-in live in the jobs table (docs/long-form.md says why, not Step Functions):

1. ingest finds a valid talk longer than one call (or with ``segment_seconds``) and moves its job
   to SPLITTING (``start_talk``): it is now a parent job, with one seed for every segment.
2. The table's stream wakes the long-form function: ``split`` downloads the audio, finds the
   pauses, plans the cuts, records the plan on the parent, cuts and uploads each segment's audio
   under the private work prefix, creates each segment job (a conditional put on an id made of
   parent + index + attempt, so a rerun creates none twice), moves the parent to RENDERING and
   submits the segments through the ordinary admission (in-flight limit, budget, exactly-once).
3. Segments are ordinary jobs; deliver copies their videos into the work prefix, not outputs/.
   Each one that ends wakes the function again (``on_segment_end``): a rendered one is fitted
   (trimmed or padded to its exact frames and encoded for the join, in this invocation, while
   other segments still render), then counted on its parent once (``JobStore.settle_segment``: a
   conditional counter in one transaction); a failed one is retried as a linked job when it
   failed for a render reason. The write that counts the last one moves the parent to
   STITCHING, or to FAILED naming every failed segment.
4. STITCHING wakes ``stitch``: the fitted segments joined byte for byte (no second encode, so any
   length fits one invocation) with the original audio muxed once, uploaded to outputs/ in one
   multipart upload (atomic: no partial video is ever visible), then the report, then DELIVERED.
   A short talk with ``crossfade_ms`` is instead stitched in one encoding pass that blends the joins.

Every step is idempotent and re-run by the stream on failure; the poller is the watchdog for a
parent whose step died (``watch``), as it is for every other job.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows import outputs
from s2v.flows.deliver import batch_row_progress, place_and_finish
from s2v.flows.ingest import process_received
from s2v.flows.talks import (  # noqa: F401  (longform.X names kept for callers)
    RENDER_WATCH_SECONDS,
    SEGMENT_AUDIO_SUFFIX,
    SEGMENT_AUDIO_TYPE,
    STEP_WATCH_SECONDS,
    retry_talk,
    segment_jobs,
    start_talk,
)
from s2v.model import longform
from s2v.model.errors import TransientError
from s2v.model.jobs import TERMINAL, Event, Failure, InputObject, Job, Status
from s2v.model.models import CATALOG
from s2v.model.provider_facts import OUTPUT_FRAMES_PER_SECOND as OUTPUT_FPS
from s2v.model.report import job_report
from s2v.model.segments import Pause, frame_count, plan_segments, shared_pauses, silent_tail

logger = Logger(child=True)

STEP_ATTEMPTS = 3
# A segment job created but not submitted (its split died) is submitted by the poller after this.
ORPHAN_SEGMENT_SECONDS = 120
SPLIT_WORKERS = 4  # segments cut, uploaded and submitted at once by a split
# A stitch must end before the function's timeout, leaving time for the upload and the report.
STITCH_MARGIN_SECONDS = 60


# --- 1. a talk becomes a parent ------------------------------------------------------------------

# --- the long-form function's entry ---------------------------------------------------------------

def on_job_change(job_id: str, deps: Deps, *, workdir: str | None = None, seconds_left: float | None = None) -> str:
    """``seconds_left``: how long the invocation may still run (the stitch stops in time)."""
    job = deps.store.get(job_id)
    if job is None:
        return "missing"
    if job.is_segment:
        if not job.is_terminal:
            return "noop"
        with _workspace(workdir) as folder:
            return on_segment_end(job, deps, folder=folder, seconds_left=seconds_left)
    if job.status is Status.SPLITTING:
        with _workspace(workdir) as folder:
            return split(job, deps, folder)
    if job.status is Status.STITCHING:
        with _workspace(workdir) as folder:
            return stitch(job, deps, folder, seconds_left=seconds_left)
    return "noop"


class _workspace:
    """A fresh folder under /tmp for one step, removed after it (the next invocation may be warm)."""

    def __init__(self, parent: str | None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="s2v-talk-", dir=parent)

    def __enter__(self) -> Path:
        return Path(self._dir.name)

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()


# --- 2. split -----------------------------------------------------------------------------------

def split(parent: Job, deps: Deps, folder: Path) -> str:
    from s2v.adapters import ffmpeg  # 117 ms at import, measured: only the long-form steps

    settings = deps.settings
    uploads = longform.talk_tracks(parent)
    local: dict[str, Path] = {}  # each track, ready to cut (two speakers: padded to the timeline)
    price = settings.price_for(parent.params.get("resolution", settings.default_resolution), parent.model_name)
    if not parent.segments:
        local, duration, pauses = _tracks_for_cutting(uploads, deps, folder, parent.input_versions)
        plan = plan_segments(duration, pauses, max_seconds=parent.segment_seconds)
        refusal = longform.decoded_talk_refusal(
            " and ".join(obj.key for obj in uploads.values()), duration, declared=parent.audio_seconds,
            cost=longform.estimate(plan, price, model=CATALOG[parent.model_name], roles=uploads),
            max_talk_seconds=settings.max_talk_seconds, daily_budget_usd=settings.daily_budget_usd)
        if refusal is not None:  # measured, not believed: before any segment is made or submitted
            logger.info("talk refused on its decoded length", extra={"job_id": parent.job_id, "code": refusal.code})
            deps.store.transition(parent, Event.FAIL, note=refusal.reason, failure=refusal)
            return "refused"
        mixed = {} if set(uploads) == {"audio"} else {
            "audio_key": longform.talk_audio_key(parent, settings.work_prefix, SEGMENT_AUDIO_SUFFIX)}
        planned = deps.store.touch(parent, segments=longform.plan_records(plan), segment_count=len(plan),
                                   estimated_cost_usd=longform.estimate(plan, price, model=CATALOG[parent.model_name],
                                                                        roles=uploads),
                                   stitch={"pauses_found": len(pauses), "audio_seconds": round(duration, 3), **mixed})
        if planned is None:
            raise TransientError(f"talk {parent.job_id} changed while it was being planned; the stream retries")
        parent = planned
        logger.info("talk planned", extra={"job_id": parent.job_id, "segments": len(plan), "pauses": len(pauses)})
    mix_key = longform.talk_audio_key(parent, settings.work_prefix, SEGMENT_AUDIO_SUFFIX)
    if set(uploads) != {"audio"} and deps.objects.head(mix_key) is None:
        # The audio the stitch puts under the video: both speakers mixed on their timeline, made once.
        local = local or _tracks_for_cutting(uploads, deps, folder, parent.input_versions)[0]
        mix = folder / f"talk-mix{SEGMENT_AUDIO_SUFFIX}"
        ffmpeg.mix_audio([local[role] for role in sorted(local)], mix)
        deps.objects.upload_file(str(mix), mix_key, content_type=SEGMENT_AUDIO_TYPE,
                                 metadata={"s2v-job-id": parent.job_id})
        mix.unlink()
    todo = [r for r in parent.segments if deps.store.get(longform.segment_job_id(parent, int(r["index"]), 0)) is None]
    decoded: dict[str, Any] = {}
    if todo:
        local = local or _tracks_for_cutting(uploads, deps, folder, parent.input_versions)[0]
        # Decoded once: each cut then reads only its own samples (linear in the talk's length).
        decoded = {role: ffmpeg.decode_track(track, folder / f"decoded-{role}.wav") for role, track in local.items()}

    def make_segment(record: dict[str, Any]) -> None:
        index = int(record["index"])
        cuts = {}
        for role, track in decoded.items():
            piece = folder / f"{role}-{index:04d}{SEGMENT_AUDIO_SUFFIX}"
            ffmpeg.cut_decoded(track, float(record["start"]), float(record["end"]), piece)
            key = longform.segment_audio_key(settings.work_prefix, parent.job_id, index, SEGMENT_AUDIO_SUFFIX, role)
            deps.objects.upload_file(str(piece), key, content_type=SEGMENT_AUDIO_TYPE,
                                     metadata={"s2v-job-id": parent.job_id})
            piece.unlink()
            head = deps.objects.head(key) or {}
            cuts[role] = InputObject(key=key, etag=str(head.get("ETag", "")).strip('"'),
                                     size=int(head.get("ContentLength", 0)))
        segment = deps.store.create(longform.new_segment(parent, record, cuts, deps.clock(),
                                                         price_per_second=price, due_in=ORPHAN_SEGMENT_SECONDS))
        # Submitted at once (or queued behind the in-flight limit): it renders while the rest is cut.
        _submit_segment(segment, deps)

    # A few at once: each is an ffmpeg cut, an upload and a submit, mostly waiting on I/O; in talk
    # order, so the first segments render first. (A failure stops the split; its rerun skips the made.)
    with ThreadPoolExecutor(SPLIT_WORKERS, thread_name_prefix="s2v-split") as pool:
        for made in [pool.submit(make_segment, dict(record)) for record in todo]:
            made.result()
    rendering = deps.store.transition(
        parent, Event.SEGMENTS_CREATED, note=f"{len(parent.segments)} segment jobs created",
        next_check_at=deps.clock() + RENDER_WATCH_SECONDS)
    if rendering is None:
        current = deps.store.get(parent.job_id)
        if current is None or current.status is not Status.RENDERING:
            return "noop"  # cancelled meanwhile, or another run went on
        rendering = current
    for job in segment_jobs(rendering, deps):
        if job.status is Status.RECEIVED:  # made by an earlier run that died before submitting it
            _submit_segment(job, deps)
        elif job.status in TERMINAL and not job.segment_settled:
            _settle_elsewhere(rendering, job, deps)  # it ended while the parent was still splitting
    advance(deps.store.get(rendering.job_id) or rendering, deps)
    return "split"


def _tracks_for_cutting(uploads: dict[str, InputObject], deps: Deps, folder: Path, versions: Mapping[str, str]
                        ) -> tuple[dict[str, Path], float, list[Pause]]:
    """Download the talk's tracks: (each track ready to cut, the timeline's length, where to cut).
    One track: its own pauses. Two speakers share one timeline (order meanwhile), as long as the
    longer track: the shorter is padded with silence to it, and a cut may only fall where both pause."""
    from s2v.adapters import ffmpeg  # 117 ms at import, measured: only the long-form steps

    local: dict[str, Path] = {}
    scans = {}
    for role, obj in uploads.items():
        local[role] = folder / (f"talk-{role}" + Path(obj.key).suffix.lower())
        deps.objects.download_file(obj.key, str(local[role]), version_id=versions.get(role, ""))  # as validated
        scans[role] = ffmpeg.scan_audio(local[role])  # one decoding pass: exact length and the pauses
    duration = max(scan.seconds for scan in scans.values())
    if len(local) == 1:
        return local, duration, next(iter(scans.values())).pauses
    for role in scans:
        padded = folder / f"talk-{role}-timeline{SEGMENT_AUDIO_SUFFIX}"
        ffmpeg.pad_audio(local[role], duration, padded)
        local[role] = padded
    pauses = shared_pauses(*(scan.pauses + silent_tail(scan.seconds, duration) for scan in scans.values()))
    return local, duration, pauses


def _submit_segment(segment: Job, deps: Deps) -> None:
    """The ordinary admission (in-flight limit, budget, exactly-once), unless its talk has ended."""
    if segment.status is Status.RECEIVED:
        process_received(segment, deps)


# --- 3. a segment ended -----------------------------------------------------------------------------

def on_segment_end(segment: Job, deps: Deps, *, folder: Path | None = None, seconds_left: float | None = None) -> str:
    """Count an ended segment on its parent (once; a rendered one is fitted first), retry it if it
    failed for a render reason, and move the parent on when it was the last one."""
    if segment.segment_settled:
        outcome = "counted before"
    elif folder is None:
        with _workspace(None) as scratch:
            outcome = _settle(segment, deps, scratch, seconds_left)
    else:
        outcome = _settle(segment, deps, folder, seconds_left)
    parent = deps.store.get(segment.parent_id)
    if parent is not None:
        advance(parent, deps)
    return outcome


def _settle_elsewhere(parent: Job, segment: Job, deps: Deps) -> None:
    """An ended segment found uncounted by a step that should not spend its time fitting videos
    (the split, the poller's watch): a rendered one that needs a fit is touched, so its stream
    record wakes the long-form function for it; any other is counted here."""
    if segment.status is Status.DELIVERED and not longform.crossfades(parent.audio_seconds,
                                                                      deps.settings.crossfade_ms):
        deps.store.touch(segment)
    else:
        on_segment_end(segment, deps)


def _settle(segment: Job, deps: Deps, folder: Path, seconds_left: float | None) -> str:
    from s2v.adapters import ffmpeg  # 117 ms at import, measured: only the long-form steps

    parent = deps.store.get(segment.parent_id)
    if parent is None or parent.status not in (Status.SPLITTING, Status.RENDERING):
        return "parent not rendering"
    if segment.status is Status.DELIVERED:
        unusable = None
        if not longform.crossfades(parent.audio_seconds, deps.settings.crossfade_ms):
            try:
                _fit(segment, deps, folder, seconds_left=seconds_left)
            except ffmpeg.MediaTimeout as exc:
                raise TransientError(f"fitting segment {segment.job_id} ran out of time; the stream retries") from exc
            except ffmpeg.MediaToolError as exc:
                unusable = exc
        if unusable is None:
            return "rendered" if deps.store.settle_segment(segment, "rendered") else "counted before"
        info = {"job_id": segment.job_id, "start": segment.segment_start, "end": segment.segment_end,
                "attempt": segment.attempt, "stage": "fit", "code": "unusable_video",
                "reason": f"its rendered video could not be read: {unusable}"}
        logger.warning("segment video unusable", extra={"job_id": segment.job_id})
        return "failed" if deps.store.settle_segment(segment, "failed", failure=info) else "counted before"
    if segment.status is Status.FAILED and longform.retryable(segment, max_retries=deps.settings.segment_retries):
        price = deps.settings.price_for(parent.params.get("resolution", deps.settings.default_resolution),
                                        parent.model_name)
        again = deps.store.create(longform.new_segment(
            parent, {"index": segment.segment_index, "start": segment.segment_start, "end": segment.segment_end,
                     "cut": segment.segment_cut},
            longform.talk_tracks(segment), deps.clock(), attempt=segment.attempt + 1,
            retry_of=segment.job_id, due_in=ORPHAN_SEGMENT_SECONDS,
            price_per_second=price))
        deps.store.settle_segment(segment, "retried")
        _submit_segment(again, deps)
        logger.info("segment re-rendered", extra={"job_id": segment.job_id, "retry": again.job_id})
        return "retried"
    failure = segment.failure or Failure(stage="render", code=str(segment.status).lower(),
                                         reason=f"the segment job was {str(segment.status).lower()}")
    info = {"job_id": segment.job_id, "start": segment.segment_start, "end": segment.segment_end,
            "attempt": segment.attempt, "stage": failure.stage, "code": failure.code, "reason": failure.reason}
    return "failed" if deps.store.settle_segment(segment, "failed", failure=info) else "counted before"


def advance(parent: Job, deps: Deps) -> str:
    """A RENDERING parent whose segments have all ended moves on: STITCHING, or FAILED naming the
    failed ones. Concurrent callers race on the parent's version; one wins."""
    if parent.status is not Status.RENDERING or not parent.segment_count:
        return "noop"
    if parent.segments_rendered + parent.segments_failed < parent.segment_count:
        return "rendering"
    if parent.segments_failed:
        failure = longform.talk_failure(parent)
        moved = deps.store.transition(parent, Event.FAIL, note=failure.reason, failure=failure)
        return "failed" if moved else "noop"
    moved = deps.store.transition(parent, Event.SEGMENTS_RENDERED,
                                  note=f"all {parent.segment_count} segments rendered",
                                  next_check_at=deps.clock() + STEP_WATCH_SECONDS)
    return "stitching" if moved else "noop"


def _fit(segment: Job, deps: Deps, folder: Path, *, seconds_left: float | None = None,
         size: tuple[int, int] | None = None) -> dict[str, str]:
    """The segment's rendered video fitted to its exact frames and kept beside it for the join,
    once: a fit already stored with the same frame count (and size, when asked) is reused.
    Returns the fit's metadata (frames, size)."""
    from s2v.adapters import ffmpeg  # 117 ms at import, measured: only the long-form steps

    key = longform.fit_key(deps.settings.work_prefix, segment, ffmpeg.FIT_SUFFIX)
    frames = frame_count(segment.segment_start, segment.segment_end, OUTPUT_FPS)
    stored = (deps.objects.head(key) or {}).get("Metadata", {})
    if stored.get("s2v-frames") == str(frames) and (size is None or stored.get("s2v-size") == _size_text(size)):
        return stored
    rendered = folder / f"rendered-{segment.segment_index:04d}.mp4"
    deps.objects.download_file(segment.output_key, str(rendered))
    fitted = folder / f"fit-{segment.segment_index:04d}{ffmpeg.FIT_SUFFIX}"
    budget = None if seconds_left is None else max(30.0, seconds_left - STITCH_MARGIN_SECONDS)
    report = ffmpeg.fit_segment(rendered, frames, fitted, fps=OUTPUT_FPS, size=size, timeout_s=budget)
    rendered.unlink()
    metadata = {"s2v-job-id": segment.job_id, "s2v-frames": str(report.frames),
                "s2v-size": _size_text((report.width, report.height))}
    deps.objects.upload_file(str(fitted), key, content_type="video/h264", metadata=metadata)
    fitted.unlink()
    logger.info("segment fitted", extra={"job_id": segment.job_id, "frames": frames,
                                          "seconds": round(report.elapsed_seconds, 3)})
    return metadata


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# --- 4. stitch ------------------------------------------------------------------------------------

def stitch(parent: Job, deps: Deps, folder: Path, *, seconds_left: float | None = None) -> str:
    from s2v.adapters import ffmpeg  # 117 ms at import, measured: only the long-form steps

    settings = deps.settings
    jobs = {job_id: deps.store.get(job_id) for job_id in parent.rendered.values()}
    rows = longform.stitch_inputs(parent, {k: v for k, v in jobs.items() if v is not None})
    stitched: dict[str, Any] = dict(parent.stitch)
    staged = outputs.staged(parent, deps)  # an earlier attempt stitched and uploaded it already
    if staged is None:
        started = time.monotonic()
        audio_key = longform.talk_audio_key(parent, settings.work_prefix, SEGMENT_AUDIO_SUFFIX)
        talk_audio = folder / ("talk" + Path(audio_key).suffix.lower())
        upload = longform.talk_tracks(parent).get("audio")  # one track: the upload, as it was validated
        version = parent.input_versions.get("audio", "") if upload and upload.key == audio_key else ""
        deps.objects.download_file(audio_key, str(talk_audio), version_id=version)
        out = folder / "talk.mp4"

        def budget() -> float | None:
            return None if seconds_left is None else max(
                30.0, seconds_left - (time.monotonic() - started) - STITCH_MARGIN_SECONDS)

        if longform.crossfades(parent.audio_seconds, settings.crossfade_ms):
            pieces = []
            for segment, job in rows:
                path = folder / f"video-{segment.index:04d}.mp4"
                deps.objects.download_file(job.output_key, str(path))
                pieces.append(ffmpeg.SegmentVideo(source=path, start=segment.start, end=segment.end))
            report = ffmpeg.stitch(pieces, talk_audio, out, fps=OUTPUT_FPS, crossfade_ms=settings.crossfade_ms,
                                   timeout_s=budget())
        else:
            report = ffmpeg.join(_fitted(rows, deps, folder, budget), talk_audio, out, fps=OUTPUT_FPS,
                                 timeout_s=budget())
        staged = outputs.stage_file(parent, deps, str(out))
        stitched.update(_as_dict(report), stitch_seconds=round(time.monotonic() - started, 3))
    staged_key, size = staged
    current = deps.store.get(parent.job_id)  # cancelled while it stitched: nothing is placed
    if current is None or current.status is not Status.STITCHING:
        outputs.discard_staged(parent, deps)
        return "noop"
    final_cost = round(sum(float(job.final_cost_usd if job.final_cost_usd is not None else job.estimated_cost_usd)
                           for _, job in rows), 4)
    render_seconds = round(sum(job.render_seconds for _, job in rows), 3)

    def talk_report(final: Job) -> dict[str, Any]:
        report_doc = job_report(final, batch_row_progress(final, deps))
        report_doc["talk"] = longform.talk_report(final, rows, wall_seconds=final.delivered_at - parent.created_at)
        report_doc["stitch"] = stitched
        return report_doc

    return place_and_finish(current, deps, staged_key, size, report=talk_report, note="stitched and delivered",
                            final_cost_usd=final_cost, render_seconds=render_seconds, stitch=stitched)


def _fitted(rows: list[tuple[Any, Job]], deps: Deps, folder: Path,
            budget: Callable[[], float | None]) -> list[Any]:
    """Each segment's fit, read from the work prefix as the join reaches it. A fit that is missing
    (counted before fits existed) is made now; one of another size than the first is made again
    at the first's size (a segment rendered at another size)."""
    from s2v.adapters import ffmpeg  # 117 ms at import, measured: only the long-form steps

    pieces: list[ffmpeg.FittedSegment] = []
    for _, job in rows:
        size = (pieces[0].width, pieces[0].height) if pieces else None
        metadata = _fit(job, deps, folder, seconds_left=budget(), size=size)
        width, height = (int(side) for side in metadata["s2v-size"].split("x"))
        key = longform.fit_key(deps.settings.work_prefix, job, ffmpeg.FIT_SUFFIX)
        pieces.append(ffmpeg.FittedSegment(frames=int(metadata["s2v-frames"]), width=width, height=height,
                                           open=functools.partial(deps.objects.open_stream, key)))
    return pieces


def _as_dict(report: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(report) and not isinstance(report, type):
        return {k: v for k, v in asdict(report).items() if isinstance(v, int | float | str | bool | list | dict)}
    return dict(report) if isinstance(report, dict) else {}


# --- the poller's watch over parents ----------------------------------------------------------------

def watch(parent: Job, deps: Deps) -> str:
    """A due parent job: a step that died is re-run (a touch re-emits its stream record), at most
    ``STEP_ATTEMPTS`` times; a RENDERING parent has its ended segments counted (a lost stream
    record) and moves on when they all ended."""
    now = deps.clock()
    if parent.status is Status.RENDERING:
        # (Segments created but never submitted are due jobs of their own: the poller submits them.)
        for job in segment_jobs(parent, deps):
            if job.status in TERMINAL and not job.segment_settled:
                _settle_elsewhere(parent, job, deps)
        current = deps.store.get(parent.job_id) or parent
        outcome = advance(current, deps)
        if outcome in ("rendering", "noop") and current.status is Status.RENDERING:
            deps.store.touch(current, next_check_at=now + RENDER_WATCH_SECONDS)
        return f"talk {outcome}"
    step = "split" if parent.status is Status.SPLITTING else "stitch"
    if parent.delivery_attempts + 1 < STEP_ATTEMPTS:
        deps.store.touch(parent, delivery_attempts=parent.delivery_attempts + 1,
                         next_check_at=now + STEP_WATCH_SECONDS)
        return f"re-{step}"
    failure = Failure(stage=step, code=f"{step}_failed",
                      reason=f"The talk could not be {'cut into segments' if step == 'split' else 'stitched'} after "
                             f"{STEP_ATTEMPTS} attempts (see the long-form function's logs). Run `s2v retry "
                             f"{parent.job_id}`.")
    deps.store.transition(parent, Event.FAIL, note=failure.reason, failure=failure)
    return "stuck"


# --- s2v retry / s2v cancel of a parent ----------------------------------------------------------
