"""The job model and its state machine. Pure: no I/O.

A job is one render of one (folder, stem, image version, audio version) pair. Its status only
ever moves forward along ``TRANSITIONS``; every write elsewhere is conditional on the status and
version read, so replays, duplicates and late callbacks cannot move a job backwards.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from s2v.model.models import DEFAULT_MODEL


class Status(StrEnum):
    RECEIVED = "RECEIVED"      # pair found and recorded, not yet validated or admitted
    QUEUED = "QUEUED"          # valid, waiting for an in-flight slot, the budget, or the provider
    SUBMITTING = "SUBMITTING"  # claimed by exactly one submitter; the POST may be in flight
    SUBMITTED = "SUBMITTED"    # the provider accepted it and gave us its id
    PROCESSING = "PROCESSING"  # the provider says it is rendering
    COMPLETED = "COMPLETED"    # the provider has an output; delivery pending
    DELIVERED = "DELIVERED"    # video and report are in the bucket
    FAILED = "FAILED"          # ended; ``failure`` says where and why
    CANCELLED = "CANCELLED"    # ended on an operator's request (``cancelled_by``/``cancelled_at``); never delivered
    # A talk longer than one call (a parent job, see flows/longform.py); its segments are ordinary jobs.
    SPLITTING = "SPLITTING"    # valid and long: its audio is being cut at pauses into segment jobs
    RENDERING = "RENDERING"    # its segment jobs exist and render; it counts the ones that ended
    STITCHING = "STITCHING"    # every segment rendered: one video is being stitched into outputs/


class Event(StrEnum):
    ADMIT = "admit"                # capacity and budget reserved: go submit
    DEFER = "defer"                # no capacity/budget yet, or the provider said "not now"
    SUBMIT_ACCEPTED = "submit_accepted"
    PROVIDER_CREATED = "provider_created"
    PROVIDER_PROCESSING = "provider_processing"
    PROVIDER_COMPLETED = "provider_completed"
    DELIVERED = "delivered"
    FAIL = "fail"
    CANCEL = "cancel"              # an operator stops the job (``s2v cancel``)
    SPLIT = "split"                # a valid talk longer than one call becomes a parent job
    SEGMENTS_CREATED = "segments_created"
    SEGMENTS_RENDERED = "segments_rendered"
    STITCHED = "stitched"


TERMINAL = frozenset({Status.DELIVERED, Status.FAILED, Status.CANCELLED})
# A job can be cancelled until its video is in the bucket: a COMPLETED job is not delivered yet.
CANCELLABLE = frozenset({Status.RECEIVED, Status.QUEUED, Status.SUBMITTING, Status.SUBMITTED,
                         Status.PROCESSING, Status.COMPLETED, Status.SPLITTING, Status.RENDERING, Status.STITCHING})
# A parent job's own states (it never goes to the provider itself).
PARENT_ACTIVE = frozenset({Status.SPLITTING, Status.RENDERING, Status.STITCHING})
# Jobs that hold one of the provider's concurrency slots (the spend guard counts these).
IN_FLIGHT = frozenset({Status.SUBMITTING, Status.SUBMITTED, Status.PROCESSING})

TRANSITIONS: dict[tuple[Status, Event], Status] = {
    (Status.RECEIVED, Event.ADMIT): Status.SUBMITTING,
    (Status.RECEIVED, Event.DEFER): Status.QUEUED,
    (Status.QUEUED, Event.ADMIT): Status.SUBMITTING,
    (Status.QUEUED, Event.DEFER): Status.QUEUED,
    # "Not accepted" (429/503/refused) is certain: the job goes back to waiting.
    (Status.SUBMITTING, Event.DEFER): Status.QUEUED,
    (Status.SUBMITTING, Event.SUBMIT_ACCEPTED): Status.SUBMITTED,
    # A webhook or result can reconcile an ambiguous submit straight to a later state.
    (Status.SUBMITTING, Event.PROVIDER_CREATED): Status.SUBMITTED,
    (Status.SUBMITTING, Event.PROVIDER_PROCESSING): Status.PROCESSING,
    (Status.SUBMITTING, Event.PROVIDER_COMPLETED): Status.COMPLETED,
    (Status.SUBMITTED, Event.PROVIDER_PROCESSING): Status.PROCESSING,
    (Status.SUBMITTED, Event.PROVIDER_COMPLETED): Status.COMPLETED,
    (Status.PROCESSING, Event.PROVIDER_COMPLETED): Status.COMPLETED,
    (Status.COMPLETED, Event.DELIVERED): Status.DELIVERED,
    (Status.RECEIVED, Event.SPLIT): Status.SPLITTING,
    (Status.SPLITTING, Event.SEGMENTS_CREATED): Status.RENDERING,
    (Status.RENDERING, Event.SEGMENTS_RENDERED): Status.STITCHING,
    (Status.STITCHING, Event.STITCHED): Status.DELIVERED,
    **{(s, Event.FAIL): Status.FAILED for s in Status if s not in TERMINAL},
    **{(s, Event.CANCEL): Status.CANCELLED for s in CANCELLABLE},
}


def next_status(current: Status, event: Event) -> Status | None:
    """The status after ``event``, or None when the event does not apply (a harmless no-op)."""
    return TRANSITIONS.get((current, event))


@dataclass(frozen=True)
class Failure:
    stage: str   # validate | admit | submit | render | deliver
    code: str    # machine-readable, e.g. audio_too_long, provider_failed
    reason: str  # what went wrong and what to do, for a person


@dataclass(frozen=True)
class InputObject:
    key: str
    etag: str
    size: int
    version_id: str = ""


@dataclass(frozen=True)
class Job:
    job_id: str
    status: Status
    version: int
    folder: str
    stem: str
    image: InputObject | None
    audio: InputObject | None  # None for a two-speaker set: its tracks are in ``extra_inputs``
    created_at: float
    updated_at: float
    # Inputs beyond the image and the audio, by bucket role (mask, left, right; see model/models.py).
    extra_inputs: dict[str, InputObject] = field(default_factory=dict)
    attempt: int = 0
    retry_of: str = ""
    work_attempts: int = 0  # validations/submissions begun for this job, counted before each (model/bounds.py)
    check_crashes: int = 0  # poller checks of this job that raised something unexpected
    params: dict[str, Any] = field(default_factory=dict)
    sidecar_key: str = ""
    param_sources: dict[str, str] = field(default_factory=dict)  # field -> the file (or default) it came from
    output_name: str = ""  # the rendered output_name template, relative to outputs/<folder>/; "" = the stem
    # Bucket role -> the S3 VersionId validation read (a versioned bucket): what the provider is handed.
    input_versions: dict[str, str] = field(default_factory=dict)
    # A row of a batch manifest (model/manifest.py): its params are the row's, above the folder defaults.
    batch_id: str = ""
    batch_key: str = ""  # the manifest's key
    batch_row: int = 0  # 1-based
    row_params: dict[str, Any] = field(default_factory=dict)
    row_text: bool = False  # the row's values are text (a CSV row)
    row_image_key: str = ""  # the row's files, known even while they are missing
    row_audio_key: str = ""
    audio_seconds: float = 0.0
    estimated_cost_usd: float = 0.0
    provider_id: str = ""
    provider_model: str = ""
    output_url: str = ""
    render_seconds: float = 0.0
    submitted_at: float = 0.0
    completed_at: float = 0.0
    delivered_at: float = 0.0
    check_count: int = 0
    next_check_at: float = 0.0
    delivery_attempts: int = 0
    admitted_at: float = 0.0  # when the current submission attempt began
    admitted_day: str = ""  # UTC day whose budget holds this job's reserved cost
    reserved_cost_usd: float = 0.0
    final_cost_usd: float | None = None  # set when the job ends: what it is taken to have cost
    submit_note: str = ""  # why a submit outcome is uncertain
    # What the one POST carried, recorded before it is sent (no secrets: digests of the presigned
    # URLs, which are unique per job), so an ambiguous submit can be found in the provider's list.
    sent_at: float = 0.0  # just before the POST; 0: nothing was ever sent for this attempt
    sent_until: float = 0.0  # when the POST ended without a clear answer
    sent_model: str = ""
    sent_inputs: dict[str, str] = field(default_factory=dict)  # request field -> digest of its URL
    sent_input_hosts: dict[str, str] = field(default_factory=dict)  # request field -> host of its URL
    # Jobs recorded before every field was kept: the image's and the first audio track's digests.
    sent_image_sha256: str = ""
    sent_audio_sha256: str = ""
    reconciled_by: str = ""  # how an ambiguous submit was matched to its task (see model/reconcile.py)
    cancelled_by: str = ""
    cancelled_at: float = 0.0
    provider_delete: str = ""  # a cancelled job's task at the provider: see flows/cancel.py
    queue_reason: str = ""  # why a QUEUED job waits
    not_before: float = 0.0  # a QUEUED job is not retried before this (provider asked us to wait)
    output_key: str = ""
    report_key: str = ""
    error_key: str = ""
    video_bytes: int = 0
    warnings: tuple[str, ...] = ()
    failure: Failure | None = None
    history: tuple[dict[str, Any], ...] = ()
    # Long-form (flows/longform.py). A segment job: its parent and its span of the talk.
    parent_id: str = ""
    segment_index: int = 0
    segment_start: float = 0.0
    segment_end: float = 0.0
    segment_cut: str = ""  # pause | hard | end: how the span ends (model/segments.py)
    segment_settled: str = ""  # rendered | retried | failed: counted by its parent, once
    # A parent job: its plan (index/start/end/cut per segment), the segment job that rendered each
    # index, the ones that failed for good (index -> job id, code, reason) and the stitch's report.
    segments: tuple[dict[str, Any], ...] = ()
    segment_count: int = 0
    segment_seconds: float = 0.0  # the longest segment it was cut into
    segments_rendered: int = 0
    segments_failed: int = 0
    rendered: dict[str, str] = field(default_factory=dict)
    failed_segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    stitch: dict[str, Any] = field(default_factory=dict)
    # Every job item carries it, bookkeeping items do not: the created-index lists jobs newest first.
    record_type: str = "job"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_parent(self) -> bool:
        return bool(self.segments) or self.segment_count > 0 or self.status in PARENT_ACTIVE

    @property
    def is_segment(self) -> bool:
        return bool(self.parent_id)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["warnings"] = list(self.warnings)
        data["history"] = list(self.history)
        data["segments"] = list(self.segments)
        return data

    def to_item(self) -> dict[str, Any]:
        """The job as stored: ``to_dict`` without the attributes that hold a new job's default
        (DynamoDB bills every byte written, on every write; ``from_dict`` restores them), except
        ``ALWAYS_STORED``, and a parent's segment tallies, which the segment count's condition
        needs present (``JobStore.settle_segment``)."""
        keep = ALWAYS_STORED | (PARENT_TALLIES if self.is_parent else frozenset())
        defaults = _stored_defaults()
        return {k: v for k, v in self.to_dict().items()
                if k in keep or k not in defaults or not _same(v, defaults[k])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = Status(values["status"])
        for name in ("image", "audio"):
            values[name] = InputObject(**values[name]) if values.get(name) else None
        values["extra_inputs"] = {role: InputObject(**obj) for role, obj in (values.get("extra_inputs") or {}).items()}
        values["failure"] = Failure(**values["failure"]) if values.get("failure") else None
        values["warnings"] = tuple(values.get("warnings") or ())
        values["history"] = tuple(values.get("history") or ())
        values["segments"] = tuple(values.get("segments") or ())
        return cls(**values)

    def with_changes(self, **changes: Any) -> Job:
        return replace(self, **changes)

    @property
    def inputs(self) -> dict[str, InputObject]:
        """Every input file by bucket role: image, audio, and any extra (mask, left, right)."""
        found = {"image": self.image, "audio": self.audio}
        return {role: obj for role, obj in {**found, **self.extra_inputs}.items() if obj is not None}

    @property
    def model_name(self) -> str:
        """The model the job renders with; jobs recorded before models were a param are Wan 2.2 S2V."""
        return str(self.params.get("model") or DEFAULT_MODEL)


# Stored on every job item whatever their value: its key, state and version, what the indexes and the
# operator's lists key on (status, created_at, record_type, folder, stem), and its history.
ALWAYS_STORED = frozenset({"job_id", "status", "version", "folder", "stem", "created_at", "updated_at",
                           "record_type", "history"})
PARENT_TALLIES = frozenset({"rendered", "failed_segments"})


def _stored_defaults() -> dict[str, Any]:
    """Each field's default as ``to_dict`` writes it (tuples as lists); required fields have none."""
    from dataclasses import MISSING

    found: dict[str, Any] = {}
    for name, spec in Job.__dataclass_fields__.items():
        if spec.default is not MISSING:
            value = spec.default
        elif spec.default_factory is not MISSING:
            value = spec.default_factory()
        else:
            continue
        found[name] = list(value) if isinstance(value, tuple) else value
    return found


def _same(value: Any, default: Any) -> bool:
    # 0 and 0.0 are one stored number; False is not 0 (a bool field keeps its type).
    return (type(value) is type(default) and value == default) or (
        isinstance(value, int | float) and isinstance(default, int | float)
        and not isinstance(value, bool) and not isinstance(default, bool) and value == default)


def job_id_for(folder: str, stem: str, image: InputObject | None, audio: InputObject | None,
               *, attempt: int = 0, extra: tuple[str, ...] = (),
               extra_inputs: dict[str, InputObject] | None = None) -> str:
    """Deterministic identity: same objects (by key + ETag/version) → same id, so duplicate and
    concurrent events collapse into one conditional put. Every file of a set counts (a mask,
    both speaker tracks); a plain pair's id is what it always was."""
    parts = ["v1", folder, stem]
    for obj in (image, audio):
        parts += [obj.key, obj.etag, obj.version_id] if obj else ["-"]
    parts += [str(attempt), *extra]
    for role, obj in sorted((extra_inputs or {}).items()):
        parts += [role, obj.key, obj.etag, obj.version_id]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:32]


def row_job_id(batch_id: str, row: int) -> str:
    """A manifest row's job: known before its files are, so a row is one job whatever its files' versions."""
    return job_id_for("", "", None, None, extra=("batch", batch_id, str(row)))


def poll_delay(check_count: int, *, minimum: float, maximum: float) -> float:
    """Per-job backoff between provider checks: minimum, doubling, capped at maximum."""
    return float(min(maximum, minimum * (2 ** min(check_count, 16))))


def final_cost(job: Job, *, refunded: bool) -> float:
    """What an ended job is taken to have cost. Billing is by input duration, so a job the
    provider may have run costs its estimate; one it certainly never took costs nothing."""
    if refunded or not job.admitted_day:
        return 0.0
    return job.reserved_cost_usd or job.estimated_cost_usd


# ``provider_delete`` while the canceller is still telling the provider (``s2v.flows.cancel``): the
# cancelled entry is written after it.
CANCEL_PENDING = "pending"
