"""The one owner of ``outputs/``: every object a job writes, moves aside or withdraws there goes
through this module (a test fails if any other module writes or deletes under ``outputs/``).

Names are ``s2v.model.outputs``'s. The rules, each a promise to a user:

- **A video lands first where only its job writes**: the copy from the provider streams into
  ``work/deliveries/<job id>.mp4``; a copy cut short or failing its size check removes only that.
  It stays there until work/ expires (7 days), so a retry can place it even if the provider's URL
  has expired since.
- **The plain name goes to the newest job for the name**, never to whoever finishes last. A
  placement first tries a create-only write (``If-None-Match: *``); when the key is taken (412) it
  reads the holder's rank and writes with ``If-Match: <etag>`` on what it read to replace an older
  job's, or writes its own kept-aside key when the holder is newer. A write that lost a race gets
  412 and decides again.
- **Nothing is overwritten or lost**: an older job's object at the plain name is first copied to
  its kept-aside key (``CopySourceIfMatch`` on the version read), and that job's record is pointed
  there; a record not yet naming it (that job is still delivering) has its version bumped instead,
  so its DELIVERED write fails and it places again (``deliver.place_and_finish``).
- **Nothing deletes what it did not write**: a withdrawal or a move deletes with ``If-Match`` on the
  ETag of the object this job (or the moved job) was seen to own.
- **The folder shows the latest truth**: a newer outcome for a name (video, failure or cancel)
  moves older error and cancelled markers aside, so no stale marker sits beside a newer video or
  a newer other marker. Each side reads after its own write (a survey made before it can miss a
  marker placed meanwhile), so of two outcomes placed at once at least one sees the other.
- **A withdrawn name goes back to the newest remaining job**, in one copy conditional on the
  withdrawn version (never a delete then a put back that a crash can split).
- **A crash between two calls is finished by the retry**: a record is pointed at a kept copy before
  the plain one goes, and a job that finds it already holds a name repoints the job it replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from s2v.adapters.notify import JOB_CANCELLED, job_summary
from s2v.config import Settings
from s2v.model import pairing
from s2v.model.errors import DeliveryError
from s2v.model.jobs import CANCEL_PENDING, Job, Status
from s2v.model.outputs import (
    CANCELLED,
    ERROR,
    JOB_PART,
    MARKERS,
    META_JOB,
    META_RANK,
    META_REPLACED,
    REPORT,
    VIDEO,
    Kind,
    aside_key,
    owner,
    plain_key,
    rank,
)
from s2v.model.report import cancel_report

if TYPE_CHECKING:
    from s2v.adapters.delivery import DeliveredObject, DeliveryPolicy
    from s2v.adapters.objects import ObjectStore
    from s2v.deps import Deps

logger = Logger(child=True)

PLACE_ATTEMPTS = 6  # conditional writes that lost a race decide again; past this, the job's own key
VIDEO_TYPE = "video/mp4"
STAGING_FOLDER = "deliveries/"
META_RESTORED = "s2v-restored-by"  # the withdrawn job whose object this one replaced again


def base_for(job: Job, settings: Settings) -> str:
    """``outputs/a/b/alice`` for a job (its ``output_name``, else its stem); a long talk's segment
    renders into the private work prefix instead (``model.pairing.job_output_base``)."""
    return pairing.job_output_base(job, settings.output_prefix, settings.work_prefix)


def staging_key(job: Job, settings: Settings) -> str:
    return f"{settings.work_prefix}{STAGING_FOLDER}{job.job_id}.mp4"


def object_metadata(job: Job) -> dict[str, str]:
    """What every object a job writes carries: whose it is, its rank for its name, its inputs.
    S3 metadata must be ASCII: keys are percent-encoded."""
    return {
        META_JOB: job.job_id,
        META_RANK: rank(job.created_at, job.job_id),
        "s2v-image-key": quote(job.image.key if job.image else ""),
        "s2v-audio-key": quote(job.audio.key if job.audio else ""),
        "s2v-provider-id": job.provider_id,
    }


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _lost_race(exc: ClientError) -> bool:
    """412: the object changed (or appeared) since it was read; 404 on If-Match: it went away."""
    return _code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404", "ConditionalRequestConflict", "409")


@dataclass
class _Bucket:
    """The raw S3 writes this module makes (``ObjectStore`` refuses keys under outputs/), on its bucket."""

    objects: ObjectStore

    @property
    def s3(self) -> Any:
        return self.objects.s3

    @property
    def name(self) -> str:
        return self.objects.bucket

    def head(self, key: str) -> dict[str, Any] | None:
        return self.objects.head(key)

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str], **condition: str) -> None:
        self.s3.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type, Metadata=metadata,
                           **condition)

    def copy(self, source: str, key: str, *, metadata: dict[str, str] | None = None,
             content_type: str = VIDEO_TYPE, **condition: str) -> None:
        extra: dict[str, Any] = {"MetadataDirective": "COPY"}
        if metadata is not None:
            extra = {"MetadataDirective": "REPLACE", "Metadata": metadata, "ContentType": content_type}
        self.s3.copy_object(Bucket=self.name, Key=key, CopySource={"Bucket": self.name, "Key": source},
                            **extra, **condition)

    def delete(self, key: str, etag: str | None = None) -> None:
        self.s3.delete_object(Bucket=self.name, Key=key, **({"IfMatch": etag} if etag else {}))


def _bucket(deps: Deps) -> _Bucket:
    return _Bucket(deps.objects)


# --- the copy from the provider ------------------------------------------------------------------

def stage_video(job: Job, deps: Deps, policy: DeliveryPolicy, *, deadline: float | None) -> tuple[str, int]:
    """Copy the rendered video to a key only this job writes: its staging key, or a segment's own
    key under work/. Raises ``DeliveryError``. Returns (key, bytes). The staged copy is left to
    work/'s expiry (7 days): on the versioned bucket a DELETE would free nothing sooner."""
    from s2v.adapters.delivery import copy_url_to_s3  # requests + urllib3, 86 ms: only the deliver function
    key = base_for(job, deps.settings) + VIDEO.suffix if job.is_segment else staging_key(job, deps.settings)
    bucket = _bucket(deps)
    try:
        copied: DeliveredObject = copy_url_to_s3(
            job.output_url, s3_client=bucket.s3, bucket=bucket.name, key=key, policy=policy,
            metadata=object_metadata(job), tags={"s2v-job-id": job.job_id}, deadline=deadline)
    except DeliveryError:
        # An earlier attempt may have finished this copy before it died (S3 completes an upload
        # atomically) and the provider's URL be gone since: that copy is this job's video. Looked
        # for only now, so a first delivery costs no HEAD for it.
        existing = bucket.head(key)
        if existing and owner(existing)[0] == job.job_id:
            return key, int(existing["ContentLength"])
        raise
    return key, copied.size


def stage_file(job: Job, deps: Deps, path: str) -> tuple[str, int]:
    """A long talk's stitched file, uploaded to its staging key (multipart, bounded memory); the
    caller looked for an earlier attempt's (``staged``) first."""
    key = staging_key(job, deps.settings)
    deps.objects.upload_file(path, key, content_type=VIDEO_TYPE, metadata=object_metadata(job),
                             tags={"s2v-job-id": job.job_id})
    return key, int((_bucket(deps).head(key) or {}).get("ContentLength", 0))


def staged(job: Job, deps: Deps) -> tuple[str, int] | None:
    """(key, bytes) of this job's staged video, if an earlier attempt left one."""
    key = staging_key(job, deps.settings)
    head = _bucket(deps).head(key)
    return (key, int(head["ContentLength"])) if head and owner(head)[0] == job.job_id else None


def discard_staged(job: Job, deps: Deps) -> None:
    """A staged video that will never be placed (its job was cancelled first)."""
    try:
        _bucket(deps).delete(staging_key(job, deps.settings))
    except ClientError as exc:
        logger.warning("staged video not removed", extra={"job_id": job.job_id, "error": _code(exc)})


# --- placing under the plain name or beside it ------------------------------------------------------

Writer = Callable[[str, dict[str, str], dict[str, str]], None]  # (key, condition, metadata)


@dataclass(frozen=True)
class Survey:
    """Which of a name's keys exist, from one listing of ``<base>.``: a plain key it did not see is
    taken as absent on the first try, saving a HEAD per kind (the write's condition still decides:
    one that finds the key after all gets 412 and reads it). ``present`` None: read every key."""

    present: frozenset[str] | None = None

    def may_hold(self, key: str) -> bool:
        return self.present is None or key in self.present


# Optimistic: try the create-only write first (If-None-Match: *) and read only if it finds the key
# taken (412). A first delivery for a name then reads nothing before its writes.
NOTHING_SEEN = Survey(frozenset())


def survey(job: Job, deps: Deps) -> Survey:
    """One LIST instead of a HEAD per kind (video, report, two markers): the common case, a name no
    job used before, then costs one request."""
    base = base_for(job, deps.settings)
    listed = deps.objects.s3.list_objects_v2(Bucket=deps.objects.bucket, Prefix=base + ".", MaxKeys=1000)
    if listed.get("IsTruncated"):
        return Survey()
    return Survey(frozenset(str(o["Key"]) for o in listed.get("Contents", [])))


def _place(job: Job, deps: Deps, kind: Kind, write: Writer, *, rewrite: bool, seen: Survey) -> str:
    """Write this job's ``kind`` at the plain key if it is the newest job for the name, else at its
    kept-aside key; return where it went. ``write(key, condition, metadata)`` raises ClientError 412 when
    ``condition`` (``IfNoneMatch``/``IfMatch``) fails. ``rewrite``: write again when the job already
    holds the key (a document that changed; a video's bytes never do)."""
    base = base_for(job, deps.settings)
    plain, mine = plain_key(base, kind), rank(job.created_at, job.job_id)
    bucket = _bucket(deps)
    for attempt in range(PLACE_ATTEMPTS):
        current = bucket.head(plain) if attempt or seen.may_hold(plain) else None
        holder, holder_rank = owner(current)
        if current is not None and holder == job.job_id:
            _repoint_replaced(deps, base, kind, current, plain)
            if rewrite:
                try:
                    write(plain, {"IfMatch": current["ETag"]}, {**object_metadata(job), **_replaced(current)})
                except ClientError as exc:
                    if not _lost_race(exc):
                        raise
                    continue
            return plain
        if current is not None and holder_rank > mine:
            break  # a newer job holds the name: this one keeps its own key
        try:
            if current is None:
                write(plain, {"IfNoneMatch": "*"}, object_metadata(job))
            else:
                kept = _keep_aside(deps, base, kind, current)
                write(plain, {"IfMatch": current["ETag"]}, {**object_metadata(job), META_REPLACED: owner(current)[0]})
                _point_to_kept(deps, kind, current, plain, kept)
            return plain
        except ClientError as exc:
            if not _lost_race(exc):
                raise
    own = aside_key(base, kind, job.job_id)
    write(own, {}, object_metadata(job))
    return own


def _repoint_replaced(deps: Deps, base: str, kind: Kind, current: dict[str, Any], plain: str) -> None:
    """This job already holds the plain key: if it replaced another job's object there, that job's
    record is pointed at its kept-aside copy (made before the replacing write), in case the process
    died between the write and ``_point_to_kept``. Conditional on the record still naming ``plain``."""
    replaced = (current.get("Metadata") or {}).get(META_REPLACED, "")
    if replaced:
        deps.store.repoint(replaced, kind.field, plain, aside_key(base, kind, replaced))


def _replaced(current: dict[str, Any]) -> dict[str, str]:
    """A rewrite in place keeps the record of whose object this one replaced."""
    replaced = (current.get("Metadata") or {}).get(META_REPLACED, "")
    return {META_REPLACED: replaced} if replaced else {}


def _keep_aside(deps: Deps, base: str, kind: Kind, current: dict[str, Any]) -> str:
    """Before an older job's object at a plain key is replaced, copy it to that job's kept-aside key
    (only if the plain key still holds the version read). Returns the kept-aside key."""
    holder, _ = owner(current)
    plain = plain_key(base, kind)
    if not holder:
        # Written before objects carried their job (an earlier release): kept under its ETag.
        target = f"{base}.previous-{current['ETag'].strip(chr(34))[:JOB_PART]}{kind.suffix}"
    else:
        target = aside_key(base, kind, holder)
    _bucket(deps).copy(plain, target, CopySourceIfMatch=current["ETag"])
    logger.info("older output kept aside", extra={"key": plain, "kept_as": target, "job_id": holder})
    return target


def _point_to_kept(deps: Deps, kind: Kind, moved: dict[str, Any], plain: str, kept: str) -> None:
    """Once the plain key no longer holds it, the moved job's record names where it was kept. (A job
    that records its key after this checks it itself: ``settle_location``.)"""
    holder, _ = owner(moved)
    if not holder or deps.store.repoint(holder, kind.field, plain, kept):
        return
    # Its record does not name the plain key yet: it is still being delivered. Its version is bumped,
    # so its DELIVERED write fails and it places again, finding its video moved. If that write landed
    # just before the bump (which then finds it DELIVERED), the record names the plain key now.
    if not deps.store.nudge(holder):
        deps.store.repoint(holder, kind.field, plain, kept)



def place_video(job: Job, deps: Deps, source: str, seen: Survey | None = None) -> str:
    """Copy the staged video to its place (plain name or kept aside); move stale markers aside."""
    seen = seen or Survey()
    key = _place(job, deps, VIDEO, lambda key, condition, metadata: _bucket(deps).copy(
        source, key, metadata=metadata, **condition), rewrite=False, seen=seen)
    if key == plain_key(base_for(job, deps.settings), VIDEO):
        # Read after the write (one LIST, not a survey made before it): a marker placed meanwhile by
        # an older job either sees this video (``_withdraw_marker_if_stale``) or is seen here.
        _retire_markers(job, deps, MARKERS, survey(job, deps))
    return key


def place_document(job: Job, deps: Deps, kind: Kind, document: Any, seen: Survey | None = None) -> str:
    """A job report, error report or cancelled entry, placed like a video. An error or cancelled
    entry that takes the plain name moves the older other marker aside. ``seen``: a survey of the
    name (one is made for a marker, which looks at the video and the other marker too)."""
    seen = seen or (survey(job, deps) if kind in MARKERS else Survey())
    body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()

    def write(key: str, condition: dict[str, str], metadata: dict[str, str]) -> None:
        _bucket(deps).put(key, body, "application/json", metadata, **condition)

    base = base_for(job, deps.settings)
    video_aside = kind is REPORT and bool(job.output_key) and job.output_key != plain_key(base, VIDEO)
    if video_aside or (kind in MARKERS and _newer_outcome(job, deps, kind, seen)):
        # A report goes where its video went; a marker older than the plain video (or than the other
        # plain marker) is not the latest truth.
        key = aside_key(base, kind, job.job_id)
        write(key, {}, object_metadata(job))
        if kind in MARKERS:
            _remove_own_plain(job, deps, kind, seen)  # an earlier attempt that died stepping aside
        return key
    key = _place(job, deps, kind, write, rewrite=True, seen=seen)
    if kind in MARKERS and key == plain_key(base, kind):
        if _withdraw_marker_if_stale(job, deps, kind):
            return aside_key(base, kind, job.job_id)
        # read after the write (a survey made before it can miss a marker placed meanwhile)
        _retire_markers(job, deps, tuple(m for m in MARKERS if m is not kind), Survey())
    return key


def _remove_own_plain(job: Job, deps: Deps, kind: Kind, seen: Survey) -> None:
    """This job's ``kind`` at the plain key, if there, is removed (only that version): its aside
    copy was just written, and a newer outcome holds the name."""
    plain = plain_key(base_for(job, deps.settings), kind)
    if not seen.may_hold(plain):
        return
    current = _bucket(deps).head(plain)
    if current is None or owner(current)[0] != job.job_id:
        return
    try:
        _bucket(deps).delete(plain, current["ETag"])
    except ClientError as exc:
        if not _lost_race(exc):
            raise


def _withdraw_marker_if_stale(job: Job, deps: Deps, kind: Kind) -> bool:
    """Read after the marker's write: a newer video placed since the check before it (whose own
    check of the markers ran before this write) makes it stale. It goes to the job's kept-aside key."""
    if not _newer_outcome(job, deps, kind, Survey()):
        return False
    base = base_for(job, deps.settings)
    plain, bucket = plain_key(base, kind), _bucket(deps)
    current = bucket.head(plain)
    if current is None or owner(current)[0] != job.job_id:
        return False  # moved aside (or replaced) by someone else already
    try:
        _keep_aside(deps, base, kind, current)
        bucket.delete(plain, current["ETag"])
    except ClientError as exc:
        if not _lost_race(exc):
            raise
    return True


def _newer_outcome(job: Job, deps: Deps, kind: Kind, seen: Survey) -> bool:
    """Whether a newer job holds the plain video or the plain other marker (a ``kind`` marker of this
    job's would then be stale beside it)."""
    base, mine = base_for(job, deps.settings), rank(job.created_at, job.job_id)
    for other in (VIDEO, *(m for m in MARKERS if m is not kind)):
        key = plain_key(base, other)
        if not seen.may_hold(key):
            continue
        holder, holder_rank = owner(_bucket(deps).head(key))
        if holder and holder != job.job_id and holder_rank > mine:
            return True
    return False


def _retire_markers(job: Job, deps: Deps, kinds: tuple[Kind, ...], seen: Survey) -> None:
    """Older jobs' error/cancelled markers for this name go aside (kept under their job's key, the
    job's record pointed there): the plain names show the newest outcome."""
    base, mine = base_for(job, deps.settings), rank(job.created_at, job.job_id)
    bucket = _bucket(deps)
    for kind in kinds:
        plain = plain_key(base, kind)
        current = bucket.head(plain) if seen.may_hold(plain) else None
        holder, holder_rank = owner(current)
        if current is None or holder == job.job_id or holder_rank > mine:
            continue
        try:
            kept = _keep_aside(deps, base, kind, current)
            # The record is pointed at the copy before the plain one goes: a death between the two
            # leaves it naming an object that exists, and the retry deletes the plain one.
            _point_to_kept(deps, kind, current, plain, kept)
            bucket.delete(plain, current["ETag"])
        except ClientError as exc:
            if not _lost_race(exc):
                raise
            continue  # it changed meanwhile: whoever changed it is newer, or moved it already
        logger.info("stale marker moved aside", extra={"key": plain, "job_id": holder})


def settle_location(job: Job, deps: Deps, placed: dict[Kind, str]) -> None:
    """After a job's record names where its outputs were placed, check each plain one is still its
    own: a newer job may have moved it aside between the placement and the record, when there was
    no record to point yet. Kept-aside keys never move. A video and its report are moved in that
    order, so while the video is still this job's, a later move of either finds the record: one HEAD."""
    base = base_for(job, deps.settings)
    for kind, key in placed.items():
        if key != plain_key(base, kind):
            continue
        head = _bucket(deps).head(key)
        if head is not None and owner(head)[0] == job.job_id:
            if kind is VIDEO:
                return
            continue
        moved = aside_key(base, kind, job.job_id)
        if _bucket(deps).head(moved) is not None:
            deps.store.repoint(job.job_id, kind.field, key, moved)


# --- taking back ---------------------------------------------------------------------------------

def withdraw(job: Job, deps: Deps, *keys: str) -> int:
    """The job was cancelled while (or after) its outputs were being placed: remove what this job
    wrote, each removal conditional on the ETag of the version seen to be this job's. Where it held a
    plain name, the newest other job's kept-aside object of that kind takes the name back **in the
    same request** (a copy with ``If-Match`` on this job's version), so no crash leaves the name
    empty and no older job is put back over a newer one. Returns how many objects were removed."""
    bucket, removed = _bucket(deps), 0
    base = base_for(job, deps.settings)
    candidates = {*keys, *(aside_key(base, k, job.job_id) for k in (VIDEO, REPORT))}
    for key in sorted(k for k in candidates if k):
        head = bucket.head(key)
        kind = next((k for k in (VIDEO, REPORT) if key == plain_key(base, k)), None)
        if head is not None and kind is not None and _meta(head, META_RESTORED) == job.job_id:
            # put back by an earlier run of this withdrawal that died before the record said so
            restored = owner(head)[0]
            deps.store.repoint(restored, kind.field, aside_key(base, kind, restored), key)
            continue
        if head is None or owner(head)[0] != job.job_id:
            continue
        successor = _successor(deps, base, kind, job) if kind is not None else None
        try:
            if successor is not None:
                found = successor[1]
                bucket.copy(successor[0], key, metadata={**(found.get("Metadata") or {}), META_RESTORED: job.job_id},
                            content_type=str(found.get("ContentType", VIDEO_TYPE)),
                            IfMatch=head["ETag"], CopySourceIfMatch=found["ETag"])
            else:
                bucket.delete(key, head["ETag"])
            removed += 1
        except ClientError as exc:
            if not _lost_race(exc):
                raise
            continue
        if successor is not None and kind is not None:
            deps.store.repoint(owner(successor[1])[0], kind.field, successor[0], key)
    if removed:
        logger.info("cancelled during delivery; its outputs were removed", extra={"job_id": job.job_id})
    return removed


def _meta(head: dict[str, Any], name: str) -> str:
    return str((head.get("Metadata") or {}).get(name, ""))


def _successor(deps: Deps, base: str, kind: Kind, job: Job) -> tuple[str, dict[str, Any]] | None:
    """The newest other job's kept-aside object of ``kind`` for this name (key, head), if any: the
    one that holds the plain name once ``job``'s is withdrawn. A cancelled job's does not count."""
    prefix = base + "."
    pattern = re.compile(re.escape(prefix) + f"[0-9a-f]{{{JOB_PART}}}" + re.escape(kind.suffix) + "$")
    pages = deps.objects.s3.get_paginator("list_objects_v2").paginate(Bucket=deps.objects.bucket, Prefix=prefix)
    best: tuple[str, dict[str, Any]] | None = None
    for item in (item for page in pages for item in page.get("Contents", [])):
        key = str(item["Key"])
        if not pattern.match(key) or key == aside_key(base, kind, job.job_id):
            continue
        head = _bucket(deps).head(key)
        holder, holder_rank = owner(head)
        if head is None or not holder or holder == job.job_id:
            continue
        if best is None or holder_rank > owner(best[1])[1]:
            other = deps.store.get(holder)
            if other is not None and other.status is not Status.CANCELLED:
                best = (key, head)
    return best


def plain_keys(job: Job, deps: Deps) -> dict[str, str]:
    base = base_for(job, deps.settings)
    return {kind.suffix: plain_key(base, kind) for kind in (VIDEO, REPORT, ERROR, CANCELLED)}


def report_cancelled(job: Job, deps: Deps) -> str:
    """Write ``<name>.cancelled.json`` (again, if the job changed since); the first writer records
    its key and sends the "Job cancelled" event. Safe to run twice or from two places (the canceller
    and the deliver function, which rewrites it whenever the cancelled job changes)."""
    if job.status is not Status.CANCELLED:
        return "noop"
    if job.provider_delete == CANCEL_PENDING:
        return "pending"  # the canceller is still telling the provider; it writes the entry after
    key = place_document(job, deps, CANCELLED, cancel_report(job))
    if job.report_key == key:
        return "rewritten"
    for _ in range(5):
        updated = deps.store.touch(job, report_key=key)
        if updated is not None:
            settle_location(updated, deps, {CANCELLED: key})
            deps.events.publish(JOB_CANCELLED, job_summary(updated))
            logger.info("cancel reported", extra={"job_id": job.job_id, "key": key})
            return "reported"
        current = deps.store.get(job.job_id)
        if current is None or current.report_key == key:
            return "noop"
        job = current
    return "noop"


# --- batches -------------------------------------------------------------------------------------

def put_batch_report(deps: Deps, key: str, document: Any, *, batch_id: str) -> None:
    """A manifest's report: rebuilt from the table by its batch alone, so a plain write."""
    body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
    _bucket(deps).put(key, body, "application/json", {"s2v-batch-id": batch_id})
