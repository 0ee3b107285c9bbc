"""A talk as a parent job: how one starts (RECEIVED → SPLITTING), how ``s2v retry`` starts one again
keeping the segments that rendered, and which segment jobs it has. Below ingest (which starts talks)
and cancel (which cancels their segments); the long-form function's steps are ``flows/longform.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.model import longform
from s2v.model.jobs import Event, InputObject, Job, Status
from s2v.model.params import SEED_MAX

logger = Logger(child=True)

# A step (split or stitch) not finished this long after it began is re-run by the poller: longer
# than the function's timeout (900 s), so a step still running is never started twice.
STEP_WATCH_SECONDS = 960
# A RENDERING parent is checked this often by the poller, in case a segment's end was not counted.
RENDER_WATCH_SECONDS = 300
# Lossless and half the bytes of PCM; cut sample-exact, so the segments add up to the upload.
SEGMENT_AUDIO_SUFFIX, SEGMENT_AUDIO_TYPE = ".flac", "audio/flac"


def start_talk(job: Job, deps: Deps, **validated: Any) -> Job:
    """RECEIVED → SPLITTING; a seed of -1 is drawn here, once, so every segment shares it."""
    params = dict(validated.get("params") or job.params)
    note = f"a {float(validated['audio_seconds']) / 60:.1f}-minute talk: cut into segments of at most " \
           f"{float(validated['segment_seconds']):g} s"
    if int(params.get("seed", -1)) == -1:
        params["seed"] = secrets.randbelow(SEED_MAX + 1)
        note += f"; seed {params['seed']} drawn for all segments"
    fields = {k: v for k, v in validated.items() if k not in ("params",)}
    split = deps.store.transition(job, Event.SPLIT, note=note, params=params,
                                  next_check_at=deps.clock() + STEP_WATCH_SECONDS, **fields)
    if split is not None:
        logger.info("talk becomes a parent job", extra={"job_id": job.job_id})
    return split or deps.store.get(job.job_id) or job


def segment_jobs(parent: Job, deps: Deps) -> Iterator[Job]:
    """Every segment job of ``parent`` (each index, each attempt), in talk order."""
    for record in parent.segments:
        for attempt in range(deps.settings.segment_retries + 1):
            job = deps.store.get(longform.segment_job_id(parent, int(record["index"]), attempt))
            if job is None:
                break
            yield job


def retry_talk(old: Job, deps: Deps, new: Job) -> Job:
    """``s2v retry PARENT``: a new parent (``new``, RECEIVED as any retry) that keeps the old plan and
    the segments that rendered, and renders only the others again. Without a plan (the split
    failed), or when a rendered segment's files have expired, ``new`` is returned as it is and
    starts from the beginning."""
    settings = deps.settings
    if not old.segments:
        return deps.store.create(new)
    rendered: dict[str, str] = {}
    for index, job_id in old.rendered.items():
        job = deps.store.get(job_id)
        if job is not None and job.output_key and deps.objects.head(job.output_key) is not None:
            rendered[index] = job_id
    todo = [r for r in old.segments if str(r["index"]) not in rendered]
    mix_key = old.stitch.get("audio_key")
    if mix_key and deps.objects.head(str(mix_key)) is None:
        return deps.store.create(new)  # its two speakers' mix expired: split the talk again
    audio: dict[int, dict[str, InputObject]] = {}
    cut_by = str(old.stitch.get("cut_by") or old.job_id)  # the parent whose split cut the segments' audio
    for record in todo:
        number = int(record["index"])
        for role in longform.talk_tracks(old):
            key = longform.segment_audio_key(settings.work_prefix, cut_by, number, SEGMENT_AUDIO_SUFFIX, role)
            head = deps.objects.head(key)
            if head is None:
                return deps.store.create(new)  # its working files expired: split the talk again
            audio.setdefault(number, {})[role] = InputObject(key, str(head.get("ETag", "")).strip('"'),
                                                            int(head.get("ContentLength", 0)))
    now = deps.clock()
    status = Status.RENDERING if todo else Status.STITCHING
    parent = new.with_changes(
        status=status, params=dict(old.params), audio_seconds=old.audio_seconds, segments=old.segments,
        segment_count=old.segment_count, segment_seconds=old.segment_seconds, estimated_cost_usd=old.estimated_cost_usd,
        rendered=rendered, segments_rendered=len(rendered), failed_segments={}, segments_failed=0,
        warnings=old.warnings,
        stitch={**{k: v for k, v in old.stitch.items() if k in ("pauses_found", "audio_seconds", "audio_key")},
                "cut_by": cut_by},
        next_check_at=now + (RENDER_WATCH_SECONDS if todo else STEP_WATCH_SECONDS))
    stored = deps.store.create(parent)
    if stored.status is not status or stored.version:
        return stored  # this retry ran before
    price = settings.price_for(parent.params.get("resolution", settings.default_resolution), parent.model_name)
    for record in todo:
        # Due at once: the poller submits them at its next run, as it does any retry.
        deps.store.create(longform.new_segment(stored, record, audio[int(record["index"])], now,
                                               price_per_second=price, due_in=0))
    logger.info("talk retried", extra={"job_id": stored.job_id, "retry_of": old.job_id, "segments": len(todo)})
    return stored
