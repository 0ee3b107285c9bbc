"""Ingest: an uploaded object → (maybe) a pair → one job → validated → admitted → submitted.

Duplicate and concurrent events for the same objects compute the same job id; the conditional
put in ``JobStore.create`` and the conditional admission make exactly one of them the submitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows.submission import Submission, admit_and_submit, submit
from s2v.model import longform
from s2v.model.errors import InputError
from s2v.model.jobs import Event, Failure, Job, Status, estimate_cost, job_id_for
from s2v.model.pairing import Ambiguous, Incomplete, ListedObject, Pair, listing_prefixes, match, parse_key
from s2v.model.provider_facts import BILLED_MIN_SECONDS
from s2v.model.segments import Segment

logger = Logger(child=True)
SIDECAR_MAX_BYTES = 64 * 1024
# A RECEIVED job moves on within one ingest invocation; if it is still RECEIVED this much later,
# its ingest died after recording it and the poller takes over.
ORPHAN_AFTER_SECONDS = 300


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str  # already URL-decoded


@dataclass(frozen=True)
class IngestResult:
    outcome: str  # ignored | waiting | duplicate | failed | queued | submitted | submitting
    job_id: str = ""
    detail: str = ""


def on_upload(upload: Upload, deps: Deps) -> IngestResult:
    settings = deps.settings
    if upload.bucket != settings.bucket:
        return IngestResult("ignored", detail=f"bucket {upload.bucket} is not {settings.bucket}")
    ref = parse_key(upload.key, settings.input_prefix)
    if ref is None:
        return IngestResult("ignored", detail=f"{upload.key} is not an input")
    listing = [obj for prefix in listing_prefixes(ref, settings.input_prefix)
               for obj in deps.objects.list_prefix(prefix)]
    found = match(ref, listing, settings.input_prefix)
    if isinstance(found, Incomplete):
        return IngestResult("waiting", detail=f"no {found.missing} yet for {ref.stem}")
    if isinstance(found, Ambiguous):
        return _record_ambiguous(found, deps)
    job = deps.store.create(_new_job(found, deps.clock()))
    if job.status is not Status.RECEIVED:
        return IngestResult("duplicate", job.job_id, detail=f"job is already {job.status}")
    return _result(process_received(job, deps))


def _new_job(pair: Pair, now: float, *, attempt: int = 0, retry_of: str = "", due_in: float = ORPHAN_AFTER_SECONDS
             ) -> Job:
    image, audio = pair.image.as_input(), pair.audio.as_input()
    return Job(
        job_id=job_id_for(pair.folder, pair.stem, image, audio, attempt=attempt),
        status=Status.RECEIVED, version=0, folder=pair.folder, stem=pair.stem, image=image, audio=audio,
        created_at=now, updated_at=now, attempt=attempt, retry_of=retry_of,
        sidecar_key=pair.sidecar.key if pair.sidecar else "", next_check_at=now + due_in,
    )


def _record_ambiguous(found: Ambiguous, deps: Deps) -> IngestResult:
    now = deps.clock()
    extra = tuple(f"{o.key}@{o.etag}" for o in found.objects)
    failure = Failure(stage="validate", code="ambiguous_pair", reason=found.reason)
    job = Job(job_id=job_id_for(found.folder, found.stem, None, None, extra=extra), status=Status.FAILED,
              version=0, folder=found.folder, stem=found.stem, image=None, audio=None, created_at=now,
              updated_at=now, failure=failure)
    stored = deps.store.create(job)
    return IngestResult("failed", stored.job_id, detail=found.reason)


def _result(job: Job) -> IngestResult:
    outcome = {
        Status.FAILED: "failed", Status.QUEUED: "queued", Status.SUBMITTED: "submitted",
        Status.SUBMITTING: "submitting", Status.PROCESSING: "submitted", Status.COMPLETED: "submitted",
    }.get(job.status, job.status.lower())
    detail = job.failure.reason if job.failure else job.queue_reason
    return IngestResult(outcome, job.job_id, detail=detail)


def validate(job: Job, deps: Deps) -> dict[str, object]:
    """Everything we can check before spending money. Raises InputError with an actionable reason."""
    from s2v.model.media import check_audio_size, inspect_audio, inspect_image
    from s2v.model.params import Params, resolve_params

    settings = deps.settings
    assert job.image and job.audio
    sidecar = deps.objects.read_small(job.sidecar_key, SIDECAR_MAX_BYTES) if job.sidecar_key else None
    if sidecar is not None and len(sidecar) > SIDECAR_MAX_BYTES:
        raise InputError(f"{job.sidecar_key} is larger than {SIDECAR_MAX_BYTES // 1024} KiB; a params "
                         "file holds only prompt, resolution and seed", code="sidecar_too_large")
    image_reader = deps.objects.reader(job.image.key, job.image.size)
    audio_reader = deps.objects.reader(job.audio.key, job.audio.size)
    talks = settings.max_talk_seconds > 0
    media_error: InputError | None = None
    try:
        image = inspect_image(image_reader, max_bytes=settings.max_image_bytes)
        audio = inspect_audio(audio_reader, max_bytes=max(settings.max_audio_bytes, settings.max_talk_bytes)
                              if talks else settings.max_audio_bytes,
                              # a talk's length is checked against its own limit, naming it
                              max_seconds=math.inf if talks else settings.max_audio_seconds)
    except InputError as exc:
        media_error = exc  # reported after the params: a params error is the one to fix first
    # The media's ranged GETs carried the objects' metadata, so no HEAD is needed for it.
    metadata = {**audio_reader.metadata, **image_reader.metadata}
    defaults = Params(prompt=settings.default_prompt, resolution=settings.default_resolution,
                      seed=settings.default_seed)
    params = resolve_params(sidecar, metadata, defaults=defaults, max_prompt_chars=settings.max_prompt_chars,
                            sidecar_key=job.sidecar_key)
    if media_error is not None:
        raise media_error
    seconds = float(audio.duration_seconds or 0.0)
    price = settings.price_for(params.resolution)
    talk = _talk_plan(job, seconds, params.segment_seconds, deps)
    cost = longform.estimate(talk, price) if talk else estimate_cost(seconds, price)
    if not talk:
        check_audio_size(audio_reader, settings.max_audio_bytes)
    if cost > settings.daily_budget_usd:
        what = (f"this {seconds / 60:.1f}-minute talk at {params.resolution} ({len(talk)} segments) is estimated at "
                f"${cost:.2f} in total" if talk else
                f"this {seconds:.1f} s clip at {params.resolution} is estimated at ${cost:.2f}")
        raise InputError(f"{what}, more than the whole daily budget of ${settings.daily_budget_usd:.2f}; shorten the "
                         "audio or raise DailyBudgetUSD", code="over_budget")
    validated: dict[str, object] = {
        "params": {"prompt": params.prompt, "resolution": params.resolution, "seed": params.seed},
        "audio_seconds": seconds,
        "estimated_cost_usd": cost,
        "warnings": tuple(image.warnings) + tuple(audio.warnings),
    }
    if talk:
        validated["segment_seconds"] = max(s.seconds for s in talk)
        validated["segment_count"] = 0  # known once the pauses are (flows/longform.py)
    return validated


def _talk_plan(job: Job, seconds: float, requested: float, deps: Deps) -> list[Segment]:
    """The rough plan of a talk that becomes a parent job, [] for audio rendered in one call."""
    settings = deps.settings
    assert job.audio
    problem = longform.check_segment_seconds(requested, max_audio_seconds=settings.max_audio_seconds)
    if problem:
        raise InputError(f"{job.sidecar_key or 'the params'}: {problem}.", code="invalid_segment_seconds")
    longest = longform.talk_max_segment_seconds(requested, max_audio_seconds=settings.max_audio_seconds,
                                                stack_default=settings.segment_seconds)
    if settings.max_talk_seconds <= 0 or longest < 2 * BILLED_MIN_SECONDS:
        # Long talks are off (or one call is too short to cut into billable segments).
        if seconds > settings.max_audio_seconds:
            raise InputError(f"{job.audio.key}: the audio is {seconds:.1f} s long; the limit is "
                             f"{settings.max_audio_seconds:g} s. Trim it, or split it into clips of at most "
                             f"{settings.max_audio_seconds:g} s (each with its own copy of the portrait).",
                             code="audio_too_long")
        return []
    if seconds > settings.max_talk_seconds:
        raise InputError(f"{job.audio.key}: the audio is {seconds / 60:.1f} minutes long; this stack renders talks "
                         f"of at most {settings.max_talk_seconds / 60:g} minutes (MaxTalkSeconds). Split the "
                         "recording into parts, or raise MaxTalkSeconds.", code="audio_too_long")
    if not longform.is_talk(seconds, requested=requested, max_audio_seconds=settings.max_audio_seconds,
                            stack_default=settings.segment_seconds):
        return []
    return longform.rough_plan(seconds, longest)


def process_received(job: Job, deps: Deps) -> Job:
    """Validate a RECEIVED job, then admit and submit it (or queue it, or fail it with a reason).
    A long talk becomes a parent job instead (SPLITTING); a segment job was validated by its parent."""
    if job.is_segment:
        parent = deps.store.get(job.parent_id)
        if parent is None or parent.is_terminal:
            # Its talk was cancelled (or failed) while it was being cut: never render it.
            return deps.store.transition(job, Event.CANCEL, note="its talk ended before it was submitted",
                                         cancelled_by="s2v (talk ended)", cancelled_at=deps.clock(),
                                         final_cost_usd=0.0) or job
        return admit_and_submit(job, deps)
    try:
        validated = validate(job, deps)
    except InputError as exc:
        failure = Failure(stage="validate", code=exc.code, reason=exc.reason)
        logger.info("input rejected", extra={"job_id": job.job_id, "code": exc.code})
        return deps.store.transition(job, Event.FAIL, note=exc.reason, failure=failure) or job
    job = job.with_changes(**{k: v for k, v in validated.items() if k != "params"},
                           params=dict(validated["params"]))  # type: ignore[call-overload]
    if "segment_seconds" in validated:
        from s2v.flows.longform import start_talk

        return start_talk(job, deps, **validated)
    return admit_and_submit(job, deps, **validated)


def submit_validated(job: Job, deps: Deps) -> Job:
    """Release a QUEUED job (already validated when it was queued)."""
    return release_validated(job, deps).job


def release_validated(job: Job, deps: Deps) -> Submission:
    """As ``submit_validated``, and says whether another releaser won the job first."""
    return submit(job, deps, queue_reason=None, not_before=None)


def retry_failed(job_id: str, deps: Deps) -> Job:
    """Render a FAILED or CANCELLED job again on purpose: a new job, linked to the old one, same inputs.

    The new job is RECEIVED and due at once, so the next poller run validates and submits it
    through the same path as any upload. Its id depends on the attempt number, so running the
    same retry twice makes one job.
    """
    old = deps.store.get(job_id)
    if old is None:
        raise InputError(f"no job {job_id}", code="unknown_job")
    if old.is_segment:
        raise InputError(f"job {job_id} is segment {old.segment_index + 1} of talk {old.parent_id}; retry the talk: "
                         f"`s2v retry {old.parent_id}` renders only its failed segments again", code="not_retryable")
    if old.status not in (Status.FAILED, Status.CANCELLED):
        raise InputError(f"job {job_id} is {old.status}; only FAILED or CANCELLED jobs can be retried",
                         code="not_failed")
    if not old.image or not old.audio:
        why = old.failure.reason if old.failure else ""
        raise InputError(f"job {job_id} has no single image and audio pair to retry ({why})", code="not_retryable")
    current = {o.key: o for o in deps.objects.list_prefix(old.image.key)}
    current.update({o.key: o for o in deps.objects.list_prefix(old.audio.key)})
    if old.image.key not in current or old.audio.key not in current:
        raise InputError("the input files of this job are no longer in the bucket; upload them again",
                         code="inputs_missing")
    pair = Pair(folder=old.folder, stem=old.stem, image=current[old.image.key], audio=current[old.audio.key],
                sidecar=ListedObject(old.sidecar_key, "", 0) if old.sidecar_key else None)
    new = _new_job(pair, deps.clock(), attempt=old.attempt + 1, retry_of=old.job_id, due_in=0)
    if old.is_parent and old.image == new.image and old.audio == new.audio:
        from s2v.flows.longform import retry_talk

        return retry_talk(old, deps, new)  # keeps the segments that rendered
    return deps.store.create(new)
