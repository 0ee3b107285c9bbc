"""Ingest: an uploaded object → (maybe) a pair → one job → validated → admitted → submitted.

Duplicate and concurrent events for the same objects compute the same job id; the conditional
put in ``JobStore.create`` and the conditional admission make exactly one of them the submitter.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows import attempts
from s2v.flows.invocation_memo import read_defaults, remember_set, set_handled
from s2v.flows.submission import Submission, admit_and_submit, submit
from s2v.flows.talks import retry_talk, start_talk
from s2v.model import longform
from s2v.model.errors import InputError
from s2v.model.jobs import Event, Failure, InputObject, Job, Status, job_id_for
from s2v.model.media import check_audio_size, inspect_audio, inspect_image
from s2v.model.models import AUDIO_ROLES, IMAGE_ROLES, OVERLAP
from s2v.model.naming import render
from s2v.model.outputs import check_name
from s2v.model.pairing import (
    AUDIO_EXTENSIONS,
    DEFAULTS_NAME,
    Ambiguous,
    Incomplete,
    InputRef,
    ListedObject,
    Pair,
    listing_prefixes,
    match,
    nfc,
)
from s2v.model.params import Layer, Params, choose_model, parse_document, resolve_layers
from s2v.model.provider_facts import BILLED_MIN_SECONDS
from s2v.model.segments import Segment

if TYPE_CHECKING:
    from s2v.config import Settings
    from s2v.model.media import MediaInfo, ObjectReader

logger = Logger(child=True)
SIDECAR_MAX_BYTES = 64 * 1024
# A RECEIVED job moves on within one ingest invocation; if it is still RECEIVED this much later,
# its ingest died after recording it and the poller takes over.
ORPHAN_AFTER_SECONDS = 300
SPEAKER_TRACKS = ("left", "right")


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str  # already URL-decoded


@dataclass(frozen=True)
class IngestResult:
    outcome: str  # ignored | waiting | duplicate | failed | queued | submitted | submitting | batch
    job_id: str = ""
    detail: str = ""


def on_input(ref: InputRef, deps: Deps) -> IngestResult:
    """An image, audio or params file was uploaded (``flows/uploads.py`` routes manifests to batch):
    pair it, and record and process its job once."""
    settings = deps.settings
    handled = set_handled(nfc(ref.folder), nfc(ref.stem))
    if handled is not None:  # this invocation saw the set's newest files already (flows/invocation_memo.py)
        return IngestResult("duplicate", handled, detail="handled earlier in this invocation")
    listing = [obj for prefix in listing_prefixes(ref, settings.input_prefix)
               for obj in deps.objects.list_prefix(prefix)]
    found = match(ref, listing, settings.input_prefix)
    if isinstance(found, Incomplete):
        if found.missing in SPEAKER_TRACKS:  # the set fails if the other track is still missing after the wait
            deps.store.hold_incomplete_set(nfc(ref.folder), nfc(ref.stem), missing=found.missing,
                                           until=deps.clock() + settings.incomplete_set_wait_seconds)
        return IngestResult("waiting", detail=f"no {found.missing} yet for {ref.stem}")
    if isinstance(found, Ambiguous):
        return _record_ambiguous(found, deps)
    # This upload's attempt is counted in the job's creation (no write of its own, flows/attempts.py).
    job, created_here = deps.store.create_once(_new_job(found, deps.clock()).with_changes(work_attempts=1))
    if job.status is not Status.RECEIVED:
        remember_set(nfc(ref.folder), nfc(ref.stem), job.job_id)
        return IngestResult("duplicate", job.job_id, detail=f"job is already {job.status}")
    result = _result(process_received(job, deps, counted=created_here))
    remember_set(nfc(ref.folder), nfc(ref.stem), job.job_id)
    return result


def _new_job(pair: Pair, now: float, *, attempt: int = 0, retry_of: str = "", due_in: float = ORPHAN_AFTER_SECONDS
             ) -> Job:
    image = pair.image.as_input()
    audio = pair.audio.as_input() if pair.audio else None
    extras = {role: obj.as_input() for role, obj in pair.extras.items()}
    return Job(
        job_id=job_id_for(pair.folder, pair.stem, image, audio, attempt=attempt, extra_inputs=extras),
        status=Status.RECEIVED, version=0, folder=pair.folder, stem=pair.stem, image=image, audio=audio,
        extra_inputs=extras, created_at=now, updated_at=now, attempt=attempt, retry_of=retry_of,
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


def expire_incomplete_sets(deps: Deps, *, limit: int = 50) -> list[IngestResult]:
    """Fail the two-speaker sets still missing a track after their wait (the poller calls this).
    A set completed meanwhile rendered through its own upload event: its wait just ends."""
    results = []
    settings = deps.settings
    for held in deps.store.due_incomplete_sets(deps.clock(), limit=limit):
        try:  # one set that cannot be judged never stops the others
            if not deps.store.release_incomplete_set(held["key"]):
                continue  # another poller judged it
            ref = InputRef(key="", folder=held["folder"], stem=held["stem"], kind="image", extension="")
            listing = [obj for prefix in listing_prefixes(ref, settings.input_prefix)
                       for obj in deps.objects.list_prefix(prefix)]
            found = match(ref, listing, settings.input_prefix)
            if isinstance(found, Incomplete) and found.missing in SPEAKER_TRACKS:
                results.append(_record_incomplete(held["folder"], held["stem"], found, deps))
        except Exception:
            logger.exception("could not judge an incomplete set", extra={"key": held.get("key")})
    return results


def _record_incomplete(folder: str, stem: str, found: Incomplete, deps: Deps) -> IngestResult:
    minutes = deps.settings.incomplete_set_wait_seconds / 60
    names = ", ".join(posixpath.basename(o.key) for o in found.present)
    other = "left" if found.missing == "right" else "right"
    reason = (f"'{stem}' has the {other} speaker's track but no {found.missing} speaker's track "
              f"({stem}.{found.missing}.<{'|'.join(sorted(AUDIO_EXTENSIONS))}>) after waiting {minutes:g} min "
              f"(found: {names}). Upload {stem}.{found.missing}.wav (or another audio type) next to it: the set "
              f"renders as soon as it is complete. For one speaker, name the audio {stem}.wav instead.")
    now = deps.clock()
    extra = ("incomplete", *sorted(f"{o.key}@{o.etag}" for o in found.present))
    failure = Failure(stage="validate", code="incomplete_set", reason=reason)
    job = Job(job_id=job_id_for(folder, stem, None, None, extra=extra), status=Status.FAILED, version=0,
              folder=folder, stem=stem, image=None, audio=None, created_at=now, updated_at=now, failure=failure)
    stored = deps.store.create(job)
    logger.info("incomplete set failed", extra={"job_id": stored.job_id, "missing": found.missing})
    return IngestResult("failed", stored.job_id, detail=reason)


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
    if missing_ok:  # a folder's defaults file, read once per folder per invocation (flows/invocation_memo.py)
        raw = read_defaults(key, SIDECAR_MAX_BYTES, deps)
    else:
        raw = deps.objects.read_small_if_exists(key, SIDECAR_MAX_BYTES)
        if raw is None:
            raise InputError(f"{key} is no longer in the bucket (deleted after the job was recorded); nothing was "
                             "rendered. Upload it again, or upload the pair again without it.", code="inputs_missing")
    if raw is None:
        return None
    if len(raw) > SIDECAR_MAX_BYTES:
        raise InputError(f"{key} is larger than {SIDECAR_MAX_BYTES // 1024} KiB; a params file holds only "
                         "a few short settings", code="sidecar_too_large")
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
    """Everything we can check before spending money. Raises InputError with an actionable reason.

    Every file of the set is checked (each image like the portrait, each track within the limits);
    the model (model/models.py) then says which files it takes, how long the video will be and
    what the provider bills for it."""
    settings = deps.settings
    inputs = job.inputs
    assert job.image and (job.audio or inputs.keys() & set(AUDIO_ROLES))
    check_name(job.stem, "The file name")  # before any byte is read: it can only be renamed
    layers = param_layers(job, deps)
    # Each reader is pinned to the object the job was made for (its ETag) and the version it reads.
    readers = {role: deps.objects.reader(obj.key, obj.size, obj.etag) for role, obj in inputs.items()}
    talks = settings.max_talk_seconds > 0
    media: dict[str, MediaInfo] = {}
    media_error: InputError | None = None
    try:
        for role in (r for r in IMAGE_ROLES if r in readers):
            media[role] = inspect_image(readers[role], max_bytes=settings.max_image_bytes)
        for role in (r for r in AUDIO_ROLES if r in readers):
            # Under a long-talk limit when talks are on: a talk's length is checked against its own
            # limit below, naming it; one call's clip still meets the size limit (check_audio_size).
            media[role] = inspect_audio(readers[role], max_bytes=max(settings.max_audio_bytes, settings.max_talk_bytes)
                                        if talks else settings.max_audio_bytes,
                                        max_seconds=math.inf if talks else settings.max_audio_seconds)
    except InputError as exc:
        media_error = exc  # reported after the params: a params error is the one to fix first
    # The media's ranged GETs carried the objects' metadata, so no HEAD is needed for it; the
    # portrait's wins over the tracks' (as it always did over the audio's).
    metadata: dict[str, str] = {}
    for role in (*reversed(AUDIO_ROLES), "mask", "image"):
        metadata.update(readers[role].metadata if role in readers else {})
    defaults = Params(prompt=settings.default_prompt, resolution=settings.default_resolution,
                      seed=settings.default_seed)
    resolved = resolve_layers(layers, metadata, defaults=defaults, max_prompt_chars=settings.max_prompt_chars)
    files = ", ".join(posixpath.basename(obj.key) for obj in inputs.values())
    params, model = choose_model(resolved.params, frozenset(inputs), default_model=settings.default_model,
                                 files=files)
    if media_error is not None:
        raise media_error
    if "mask" in media:
        _check_mask(media["image"], media["mask"], inputs)
    tracks = {role: float(media[role].duration_seconds or 0.0) for role in model.audio_roles}
    seconds = model.output_seconds(tracks, params.order)
    # A long talk (longer than one call, or with segment_seconds) becomes a parent job: one track, or
    # two speakers sharing one timeline (order meanwhile), cut where both pause.
    shared_timeline = len(tracks) == 1 or model.orders.get(params.order) == OVERLAP
    names = " and ".join(inputs[role].key for role in model.audio_roles)
    talk = _talk_plan(names, seconds, params.segment_seconds, deps, job.sidecar_key) if shared_timeline else []
    if not talk and not shared_timeline and seconds > min(model.max_seconds, settings.max_audio_seconds):
        raise InputError(_sequence_too_long(names, seconds, params.order, min(model.max_seconds,
                                                                              settings.max_audio_seconds)),
                         code="audio_too_long")
    if not talk:
        for role in model.audio_roles:
            _check_one_call(inputs[role].key, tracks[role], readers[role], settings)
    if not talk and seconds > model.max_seconds:
        laid_out = f" (order {params.order}: the tracks play one after the other)" if len(tracks) > 1 else ""
        raise InputError(f"the video would be {seconds:.1f} s long{laid_out}; model {model.name} renders at most "
                         f"{model.max_seconds:g} s per call: shorten the audio", code="audio_too_long")
    price = settings.price_for(params.resolution, model.name)
    cost = (longform.estimate(talk, price, model=model, roles=tracks) if talk else
            model.price_usd(tracks, params.resolution, params.order, price_per_second=price))
    if cost > settings.daily_budget_usd:
        what = (f"this {seconds / 60:.1f}-minute talk at {params.resolution} ({len(talk)} segments) is estimated at "
                f"${cost:.2f} in total" if talk else
                f"this {seconds:.1f} s clip at {params.resolution} is estimated at ${cost:.2f}")
        raise InputError(f"{what}, more than the whole daily budget of ${settings.daily_budget_usd:.2f}; shorten the "
                         "audio or raise DailyBudgetUSD", code="over_budget")
    output_name = render(resolved.output_name, stem=job.stem, folder=job.folder, resolution=params.resolution,
                         created_at=job.created_at, job_id=job.job_id) if resolved.output_name else ""
    if output_name:
        check_name(output_name, f"output_name (from {resolved.sources.get('output_name', 'the params')}) renders")
    warnings = tuple(w for role in media for w in media[role].warnings)
    validated: dict[str, object] = {
        "params": params.as_dict(),
        # "order" only where the chosen model has one (a two-speaker model).
        "param_sources": {k: v for k, v in resolved.sources.items() if k != "order" or params.order},
        "output_name": output_name,
        "audio_seconds": seconds,
        "estimated_cost_usd": cost,
        "warnings": warnings,
        # The versions read: the provider is handed exactly these (flows/submission.py).
        "input_versions": {role: reader.version_id for role, reader in readers.items() if reader.version_id},
    }
    if talk:
        validated["segment_seconds"] = max(s.seconds for s in talk)
        validated["segment_count"] = 0  # known once the pauses are (flows/longform.py)
    return validated


def _check_one_call(key: str, seconds: float, reader: ObjectReader, settings: Settings) -> None:
    """A track rendered in one call: within the provider's per-call length and the audio size limit."""
    if seconds > settings.max_audio_seconds:
        limit = settings.max_audio_seconds
        raise InputError(f"{key}: the audio is {seconds:.1f} s long; the limit is {limit:g} s. Trim it, or split "
                         f"it into clips of at most {limit:g} s.", code="audio_too_long")
    check_audio_size(reader, settings.max_audio_bytes)


def _sequence_too_long(names: str, seconds: float, order: str, limit: float) -> str:
    """Why two tracks played one after the other are refused when together they exceed one call.

    A long two-speaker talk is cut on one shared timeline (order meanwhile), where both tracks
    pause. Converting left_right/right_left to that timeline (each track padded with the other's
    length of silence) is not done silently: the provider's docs do not say how it joins the turns
    in those orders (a gap, an overlap, a hand-over), so the converted video could differ from
    what the chosen order renders in one call. The user makes that choice, in two minutes."""
    first, second = ("left", "right") if order == "left_right" else ("right", "left")
    return (f"{names}: order {order} plays the tracks one after the other, a {seconds:.1f} s video; one call renders "
            f"at most {limit:g} s, and a talk longer than one call is cut on one shared timeline, which only order "
            f"meanwhile has. To render it as a long talk: make both tracks as long as the whole conversation (the "
            f"{second} speaker's track starting with silence as long as the {first} speaker's part), upload them "
            f"again and set \"order\": \"meanwhile\". Or split the conversation into sets of at most {limit:g} s.")


def _talk_plan(names: str, seconds: float, requested: float, deps: Deps, sidecar_key: str = "") -> list[Segment]:
    """The rough plan of a talk that becomes a parent job, [] for audio rendered in one call.
    ``names``: its track file(s), for the errors."""
    settings = deps.settings
    problem = longform.check_segment_seconds(requested, max_audio_seconds=settings.max_audio_seconds)
    if problem:
        raise InputError(f"{sidecar_key or 'the params'}: {problem}.", code="invalid_segment_seconds")
    longest = longform.talk_max_segment_seconds(requested, max_audio_seconds=settings.max_audio_seconds,
                                                stack_default=settings.segment_seconds)
    if settings.max_talk_seconds <= 0 or longest < 2 * BILLED_MIN_SECONDS:
        # Long talks are off (or one call is too short to cut into billable segments).
        if seconds > settings.max_audio_seconds:
            raise InputError(f"{names}: the audio is {seconds:.1f} s long; the limit is "
                             f"{settings.max_audio_seconds:g} s. Trim it, or split it into clips of at most "
                             f"{settings.max_audio_seconds:g} s (each with its own copy of the portrait).",
                             code="audio_too_long")
        return []
    if seconds > settings.max_talk_seconds:
        raise InputError(f"{names}: the audio is {seconds / 60:.1f} minutes long; this stack renders talks "
                         f"of at most {settings.max_talk_seconds / 60:g} minutes (MaxTalkSeconds). Split the "
                         "recording into parts, or raise MaxTalkSeconds.", code="audio_too_long")
    if not longform.is_talk(seconds, requested=requested, max_audio_seconds=settings.max_audio_seconds,
                            stack_default=settings.segment_seconds):
        return []
    return longform.rough_plan(seconds, longest)


def _check_mask(image: MediaInfo, mask: MediaInfo, inputs: dict[str, InputObject]) -> None:
    """The mask marks regions of the portrait, pixel for pixel: it must be the portrait's size."""
    if (mask.width, mask.height) != (image.width, image.height):
        name, portrait = posixpath.basename(inputs["mask"].key), posixpath.basename(inputs["image"].key)
        raise InputError(f"{name} is {mask.width}x{mask.height} pixels but {portrait} is "
                         f"{image.width}x{image.height}: the mask must be exactly the portrait's size; "
                         "export it again at that size, then upload it again", code="mask_size_mismatch")


def process_received(job: Job, deps: Deps, *, counted: bool = False) -> Job:
    """Validate a RECEIVED job, then admit and submit it (or queue it, or fail it with a reason).
    A long talk becomes a parent job instead (SPLITTING); a segment job was validated by its parent.
    Each call is one attempt, counted before the work (flows/attempts.py); ``counted``: this caller
    just created the job with its attempt counted in it."""
    started = job if counted else attempts.begin(job, deps, retry_after=ORPHAN_AFTER_SECONDS)
    if started is None:
        return deps.store.get(job.job_id) or job
    job = started
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
    job = job.with_changes(**{k: v for k, v in validated.items() if k not in ("params", "param_sources")},
                           params=dict(validated["params"]),  # type: ignore[call-overload]
                           param_sources=dict(validated["param_sources"]))  # type: ignore[call-overload]
    if "segment_seconds" in validated:
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
    image_key = old.image.key if old.image else old.row_image_key
    audio_key = old.audio.key if old.audio else old.row_audio_key
    if not image_key or not (audio_key or old.extra_inputs) or (
            old.failure and old.failure.code in ("invalid_row", "duplicate_row")):
        why = old.failure.reason if old.failure else ""
        raise InputError(f"job {job_id} has no single image and audio pair to retry ({why})", code="not_retryable")
    keys = [image_key, *([audio_key] if audio_key else []), *(obj.key for obj in old.extra_inputs.values())]
    current: dict[str, ListedObject] = {}
    for key in keys:
        current.update({o.key: o for o in deps.objects.list_prefix(key)})
    if any(key not in current for key in keys):
        raise InputError("the input files of this job are no longer in the bucket; upload them again",
                         code="inputs_missing")
    pair = Pair(folder=old.folder, stem=old.stem, image=current[image_key],
                audio=current[audio_key] if audio_key else None,
                sidecar=ListedObject(old.sidecar_key, "", 0) if old.sidecar_key else None,
                extras={role: current[obj.key] for role, obj in old.extra_inputs.items()})
    new = _new_job(pair, deps.clock(), attempt=old.attempt + 1, retry_of=old.job_id, due_in=0)
    if old.is_parent and (old.image, old.audio, old.extra_inputs) == (new.image, new.audio, new.extra_inputs):
        return retry_talk(old, deps, new)  # keeps the segments that rendered
    if old.batch_key:  # a manifest row renders again with its row's params (as a job of its own)
        new = new.with_changes(job_id=job_id_for(old.folder, old.stem, new.image, new.audio, attempt=new.attempt,
                                                 extra=("retry", old.job_id), extra_inputs=new.extra_inputs),
                               batch_key=old.batch_key, batch_row=old.batch_row, row_params=old.row_params,
                               row_text=old.row_text, row_image_key=image_key, row_audio_key=audio_key)
    return deps.store.create(new)
