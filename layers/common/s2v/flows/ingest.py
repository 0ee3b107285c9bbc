"""Ingest: an uploaded object → (maybe) a pair → one job → validated → admitted → submitted.

Duplicate and concurrent events for the same objects compute the same job id; the conditional
put in ``JobStore.create`` and the conditional admission make exactly one of them the submitter.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows.submission import Submission, admit_and_submit, submit
from s2v.model.errors import InputError
from s2v.model.jobs import Event, Failure, Job, Status, estimate_cost, job_id_for
from s2v.model.pairing import (
    DEFAULTS_NAME,
    Ambiguous,
    Incomplete,
    ListedObject,
    Pair,
    listing_prefixes,
    match,
    parse_key,
)
from s2v.model.params import Layer

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
    outcome: str  # ignored | waiting | duplicate | failed | queued | submitted | submitting | batch
    job_id: str = ""
    detail: str = ""


def on_upload(upload: Upload, deps: Deps) -> IngestResult:
    settings = deps.settings
    if upload.bucket != settings.bucket:
        return IngestResult("ignored", detail=f"bucket {upload.bucket} is not {settings.bucket}")
    ref = parse_key(upload.key, settings.input_prefix)
    if ref is None:
        return IngestResult("ignored", detail=f"{upload.key} is not an input")
    if ref.kind == "manifest":
        from s2v.flows.batch import on_manifest

        return on_manifest(upload.key, deps)
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


def defaults_keys(folder: str, input_prefix: str) -> list[str]:
    """The ``_defaults.json`` that may apply to ``folder``, deepest first: one GET each, so an ingest
    reads at most one small object per folder level (and nothing when no folder has one)."""
    parts = [p for p in folder.split("/") if p]
    return [input_prefix + "".join(f"{p}/" for p in parts[:depth]) + DEFAULTS_NAME
            for depth in range(len(parts), -1, -1)]


def _read_document(key: str, deps: Deps, *, missing_ok: bool) -> Layer | None:
    from s2v.model.params import parse_document

    raw = deps.objects.read_small_if_exists(key, SIDECAR_MAX_BYTES) if missing_ok else \
        deps.objects.read_small(key, SIDECAR_MAX_BYTES)
    if raw is None:
        return None
    if len(raw) > SIDECAR_MAX_BYTES:
        raise InputError(f"{key} is larger than {SIDECAR_MAX_BYTES // 1024} KiB; a params file holds only "
                         "prompt, resolution, seed and output_name", code="sidecar_too_large")
    return Layer(source=key, document=parse_document(raw, key))


def param_layers(job: Job, deps: Deps) -> list[Layer]:
    """The job's params documents, highest precedence first: its sidecar (a manifest row's values),
    then each folder's defaults (for a row: from the manifest's folder up)."""
    layers: list[Layer] = []
    if job.batch_key:
        layers.append(Layer(source=f"{job.batch_key} row {job.batch_row}", document=job.row_params,
                            from_json=not job.row_text))
    if job.sidecar_key:
        sidecar = _read_document(job.sidecar_key, deps, missing_ok=False)
        assert sidecar is not None
        layers.append(sidecar)
    for key in defaults_keys(job.folder, deps.settings.input_prefix):
        found = _read_document(key, deps, missing_ok=True)
        if found is not None:
            layers.append(found)
    return layers


def validate(job: Job, deps: Deps) -> dict[str, object]:
    """Everything we can check before spending money. Raises InputError with an actionable reason."""
    from s2v.model.media import inspect_audio, inspect_image
    from s2v.model.naming import render
    from s2v.model.params import Params, resolve_layers

    settings = deps.settings
    assert job.image and job.audio
    layers = param_layers(job, deps)
    image_reader = deps.objects.reader(job.image.key, job.image.size)
    audio_reader = deps.objects.reader(job.audio.key, job.audio.size)
    media_error: InputError | None = None
    try:
        image = inspect_image(image_reader, max_bytes=settings.max_image_bytes)
        audio = inspect_audio(audio_reader, max_bytes=settings.max_audio_bytes,
                              max_seconds=settings.max_audio_seconds)
    except InputError as exc:
        media_error = exc  # reported after the params: a params error is the one to fix first
    # The media's ranged GETs carried the objects' metadata, so no HEAD is needed for it.
    metadata = {**audio_reader.metadata, **image_reader.metadata}
    defaults = Params(prompt=settings.default_prompt, resolution=settings.default_resolution,
                      seed=settings.default_seed)
    resolved = resolve_layers(layers, metadata, defaults=defaults, max_prompt_chars=settings.max_prompt_chars)
    params = resolved.params
    if media_error is not None:
        raise media_error
    seconds = float(audio.duration_seconds or 0.0)
    cost = estimate_cost(seconds, settings.price_for(params.resolution))
    if cost > settings.daily_budget_usd:
        raise InputError(
            f"this {seconds:.1f} s clip at {params.resolution} is estimated at ${cost:.2f}, more than the "
            f"whole daily budget of ${settings.daily_budget_usd:.2f}; shorten the audio or raise DailyBudgetUSD",
            code="over_budget")
    output_name = render(resolved.output_name, stem=job.stem, folder=job.folder, resolution=params.resolution,
                         created_at=job.created_at, job_id=job.job_id) if resolved.output_name else ""
    return {
        "params": {"prompt": params.prompt, "resolution": params.resolution, "seed": params.seed},
        "param_sources": dict(resolved.sources),
        "output_name": output_name,
        "audio_seconds": seconds,
        "estimated_cost_usd": cost,
        "warnings": tuple(image.warnings) + tuple(audio.warnings),
    }


def process_received(job: Job, deps: Deps) -> Job:
    """Validate a RECEIVED job, then admit and submit it (or queue it, or fail it with a reason)."""
    try:
        validated = validate(job, deps)
    except InputError as exc:
        failure = Failure(stage="validate", code=exc.code, reason=exc.reason)
        logger.info("input rejected", extra={"job_id": job.job_id, "code": exc.code})
        return deps.store.transition(job, Event.FAIL, note=exc.reason, failure=failure) or job
    job = job.with_changes(**{k: v for k, v in validated.items() if k not in ("params", "param_sources")},
                           params=dict(validated["params"]),  # type: ignore[call-overload]
                           param_sources=dict(validated["param_sources"]))  # type: ignore[call-overload]
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
    if old.status not in (Status.FAILED, Status.CANCELLED):
        raise InputError(f"job {job_id} is {old.status}; only FAILED or CANCELLED jobs can be retried",
                         code="not_failed")
    image_key = old.image.key if old.image else old.row_image_key
    audio_key = old.audio.key if old.audio else old.row_audio_key
    if not image_key or not audio_key or (old.failure and old.failure.code in ("invalid_row", "duplicate_row")):
        why = old.failure.reason if old.failure else ""
        raise InputError(f"job {job_id} has no single image and audio pair to retry ({why})", code="not_retryable")
    current = {o.key: o for o in deps.objects.list_prefix(image_key)}
    current.update({o.key: o for o in deps.objects.list_prefix(audio_key)})
    if image_key not in current or audio_key not in current:
        raise InputError("the input files of this job are no longer in the bucket; upload them again",
                         code="inputs_missing")
    pair = Pair(folder=old.folder, stem=old.stem, image=current[image_key], audio=current[audio_key],
                sidecar=ListedObject(old.sidecar_key, "", 0) if old.sidecar_key else None)
    new = _new_job(pair, deps.clock(), attempt=old.attempt + 1, retry_of=old.job_id, due_in=0)
    if old.batch_key:  # a manifest row renders again with its row's params (as a job of its own)
        new = new.with_changes(job_id=job_id_for(old.folder, old.stem, new.image, new.audio, attempt=new.attempt,
                                                 extra=("retry", old.job_id)),
                               batch_key=old.batch_key, batch_row=old.batch_row, row_params=old.row_params,
                               row_text=old.row_text, row_image_key=image_key, row_audio_key=audio_key)
    return deps.store.create(new)
