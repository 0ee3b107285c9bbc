"""The last step: copy a finished video (or a failure report) into ``outputs/``.

Runs for every table change whose new status is COMPLETED, FAILED or CANCELLED. It is idempotent:
it re-reads the job, and DELIVERED jobs or already-reported failures are no-ops, so duplicate
stream records produce one object and one report; a cancelled job's entry is rewritten with the
job as it is now (one "Job cancelled" event).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aws_lambda_powertools import Logger

from s2v.adapters.notify import JOB_FAILED, VIDEO_DELIVERED, job_summary
from s2v.config import Settings
from s2v.deps import Deps
from s2v.model import pairing
from s2v.model.errors import DeliveryError, TransientError
from s2v.model.jobs import Event, Failure, Job, Status, final_cost
from s2v.model.report import error_report, job_report

if TYPE_CHECKING:
    from s2v.adapters.delivery import DeliveryPolicy

logger = Logger(child=True)


def on_job_change(job_id: str, deps: Deps, *, deadline: float | None = None) -> str:
    """``deadline``: when a video copy must stop (a ``time.monotonic()`` value; see
    ``s2v.adapters.delivery.deadline_after``). Past it the copy is abandoned with a retryable error."""
    job = deps.store.get(job_id)
    if job is None:
        return "missing"
    return on_job(job, deps, deadline=deadline)


def on_job(job: Job, deps: Deps, *, deadline: float | None = None) -> str:
    """``on_job_change`` for a job already read (the stream router reads it once: flows/stream.py)."""
    outcome = _on_job_change(job, deps, deadline=deadline)
    if job.batch_id and outcome not in ("noop", "failed"):
        # A manifest row ended: its batch report is rewritten from the table (flows/batch.py).
        # ("failed" moved the job to FAILED, whose own stream record reports it.)
        from s2v.flows.batch import row_ended

        row_ended(job, deps)
    return outcome


def _on_job_change(job: Job, deps: Deps, *, deadline: float | None) -> str:
    if job.status is Status.COMPLETED:
        return deliver_video(job, deps, deadline=deadline)
    if job.status is Status.FAILED and not job.error_key:
        return report_failure(job, deps)
    if job.status is Status.CANCELLED:
        from s2v.flows.cancel import report_cancelled

        # A delivery that died between its copy and its DELIVERED write left this job's video.
        base = job_output_base(job, deps.settings)
        withdrawn = _withdraw(job, deps, base + ".mp4", base + ".json")
        # Written (or rewritten with what the provider's task came to) here: the submitter and the
        # poller, which settle a cancelled job's task, cannot write to the bucket.
        reported = report_cancelled(job, deps)
        return "withdrawn" if withdrawn else reported
    return "noop"


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """Raises ValueError naming S2V_OUTPUT_ALLOWED_HOSTS for a malformed allow-list; the deliver
    handler builds it at cold start so a bad deployment fails loudly, not at the first video."""
    from s2v.adapters.delivery import DeliveryPolicy

    return DeliveryPolicy(allowed_hosts=settings.output_allowed_hosts, max_bytes=settings.max_output_bytes,
                          allow_loopback_http=settings.local_mode)


def _policy(deps: Deps) -> DeliveryPolicy:
    return delivery_policy(deps.settings)


def _object_metadata(job: Job) -> dict[str, str]:
    # S3 metadata must be ASCII: keys are percent-encoded.
    return {
        "s2v-job-id": job.job_id,
        "s2v-image-key": quote(job.image.key if job.image else ""),
        "s2v-audio-key": quote(job.audio.key if job.audio else ""),
        "s2v-provider-id": job.provider_id,
    }


def _keep_previous(base: str, current: dict[str, Any] | None, job: Job, deps: Deps) -> None:
    """A same-named output from an older job (``current``: the head of ``<base>.mp4``) is kept as
    ``<stem>.<old job id[:12]>.mp4/.json`` before the new video takes the plain name, so
    re-uploads never destroy earlier results."""
    previous = (current or {}).get("Metadata", {}).get("s2v-job-id", "")
    if not previous or previous == job.job_id:
        return
    for suffix in (".mp4", ".json"):
        target = f"{base}.{previous[:12]}{suffix}"
        exists = suffix == ".mp4" or deps.objects.head(base + suffix) is not None
        if exists and deps.objects.head(target) is None:
            deps.objects.copy(base + suffix, target)


def job_output_base(job: Job, settings: Settings) -> str:
    """``outputs/a/b/alice`` for a job (``model.pairing.job_output_base`` with this stack's prefixes)."""
    return pairing.job_output_base(job, settings.output_prefix, settings.work_prefix)


def deliver_video(job: Job, deps: Deps, *, deadline: float | None = None) -> str:
    from s2v.adapters.delivery import copy_url_to_s3

    base = job_output_base(job, deps.settings)
    video_key, report_key = base + ".mp4", base + ".json"
    existing = deps.objects.head(video_key)
    if not job.is_segment:
        _keep_previous(base, existing, job, deps)
    if existing and existing.get("Metadata", {}).get("s2v-job-id") == job.job_id:
        # An earlier attempt finished the upload (S3 completes a multipart upload atomically)
        # and stopped before the report: reuse it rather than download again.
        return _finish_delivery(job, deps, video_key, report_key, int(existing["ContentLength"]))
    try:
        delivered = copy_url_to_s3(
            job.output_url, s3_client=deps.objects.s3, bucket=deps.objects.bucket, key=video_key,
            policy=_policy(deps), metadata=_object_metadata(job),
            tags={"s2v-job-id": job.job_id}, deadline=deadline,
        )
    except DeliveryError as exc:
        if exc.retryable:
            raise TransientError(exc.reason) from exc
        failure = Failure(stage="deliver", code="delivery_refused",
                          reason=f"The rendered video could not be copied: {exc.reason}")
        deps.store.transition(job, Event.FAIL, note=failure.reason, failure=failure)
        return "failed"
    return _finish_delivery(job, deps, video_key, report_key, delivered.size)


def _finish_delivery(job: Job, deps: Deps, video_key: str, report_key: str, size: int) -> str:
    now = deps.clock()
    final = job.with_changes(status=Status.DELIVERED, output_key=video_key, report_key=report_key,
                             video_bytes=size, delivered_at=now, final_cost_usd=final_cost(job, refunded=False),
                             history=(*job.history, {"status": "DELIVERED", "at": now, "note": "delivered"}))
    deps.objects.put_json(report_key, job_report(final, batch_row_progress(final, deps)),
                          metadata={"s2v-job-id": job.job_id})
    updated = deps.store.transition(job, Event.DELIVERED, note="delivered", output_key=video_key,
                                    report_key=report_key, video_bytes=size, delivered_at=now)
    if updated is None:
        current = deps.store.get(job.job_id)
        if current is not None and current.status is Status.CANCELLED:
            _withdraw(job, deps, video_key, report_key)
            return "cancelled"
        return "noop"  # another delivery finished first; it wrote the same objects
    if not job.is_segment:  # a talk's segment is news only to its parent
        deps.events.publish(VIDEO_DELIVERED, job_summary(updated))
    logger.info("video delivered", extra={"job_id": job.job_id, "key": video_key, "bytes": size})
    return "delivered"


def batch_row_progress(job: Job, deps: Deps) -> tuple[int, int] | None:
    """A manifest row's batch progress for its report ("X of Y done", this row counted)."""
    return deps.store.row_progress(job.batch_id, job.job_id) if job.batch_id else None


def _withdraw(job: Job, deps: Deps, *keys: str) -> int:
    """The job was cancelled while (or after) its video was being copied: remove what this job
    wrote (a previous job's video was kept under its own name by ``_keep_previous``). Returns how
    many objects were removed."""
    removed = 0
    for key in keys:
        head = deps.objects.head(key)
        if head and head.get("Metadata", {}).get("s2v-job-id") == job.job_id:
            deps.objects.s3.delete_object(Bucket=deps.objects.bucket, Key=key)
            removed += 1
    if removed:
        logger.info("cancelled during delivery; its outputs were removed", extra={"job_id": job.job_id})
    return removed


def report_failure(job: Job, deps: Deps) -> str:
    base = job_output_base(job, deps.settings)
    error_key = base + ".error.json"
    deps.objects.put_json(error_key, error_report(job), metadata={"s2v-job-id": job.job_id})
    updated = deps.store.touch(job, error_key=error_key)
    if updated is None:
        return "noop"
    if not job.is_segment:
        deps.events.publish(JOB_FAILED, job_summary(updated))
    logger.info("failure reported", extra={"job_id": job.job_id, "key": error_key})
    return "reported"
