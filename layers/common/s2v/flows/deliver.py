"""The last step: a finished video (or a failure report) into ``outputs/``, through ``flows.outputs``.

Runs for every table change whose new status is COMPLETED, FAILED or CANCELLED. It is idempotent:
it re-reads the job, and DELIVERED jobs or already-reported failures are no-ops, so duplicate
stream records produce one object and one report; a cancelled job's entry is rewritten with the
job as it is now (one "Job cancelled" event).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from s2v.adapters.notify import JOB_FAILED, VIDEO_DELIVERED, job_summary
from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows import outputs
from s2v.flows.outputs import report_cancelled
from s2v.model.errors import DeliveryError, TransientError
from s2v.model.jobs import Event, Failure, Job, Status, final_cost
from s2v.model.outputs import ERROR, REPORT, VIDEO
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
    return _on_job_change(job, deps, deadline=deadline)


def _on_job_change(job: Job, deps: Deps, *, deadline: float | None) -> str:
    if job.status is Status.COMPLETED:
        return deliver_video(job, deps, deadline=deadline)
    if job.status is Status.FAILED and not job.error_key:
        return report_failure(job, deps)
    if job.status is Status.CANCELLED:
        # A delivery that died between its placement and its DELIVERED write left this job's video.
        plain = outputs.plain_keys(job, deps)
        withdrawn = outputs.withdraw(job, deps, plain[VIDEO.suffix], plain[REPORT.suffix])
        # Written (or rewritten with what the provider's task came to) here: the submitter and the
        # poller, which settle a cancelled job's task, cannot write to the bucket.
        reported = report_cancelled(job, deps)
        return "withdrawn" if withdrawn else reported
    return "noop"


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """Raises ValueError naming S2V_OUTPUT_ALLOWED_HOSTS for a malformed allow-list; the deliver
    handler builds it at cold start so a bad deployment fails loudly, not at the first video."""
    from s2v.adapters.delivery import DeliveryPolicy  # requests + urllib3, 86 ms: only the deliver function

    return DeliveryPolicy(allowed_hosts=settings.output_allowed_hosts, max_bytes=settings.max_output_bytes,
                          allow_loopback_http=settings.local_mode)


def deliver_video(job: Job, deps: Deps, *, deadline: float | None = None) -> str:
    """Copy the video where only this job writes, place it (plain name if this is the newest job
    for the name, else kept aside: ``flows.outputs``), write its report, then record DELIVERED."""
    try:
        staged_key, size = outputs.stage_video(job, deps, delivery_policy(deps.settings), deadline=deadline)
    except DeliveryError as exc:
        if exc.retryable:
            raise TransientError(exc.reason) from exc
        failure = Failure(stage="deliver", code="delivery_refused",
                          reason=f"The rendered video could not be copied: {exc.reason}")
        deps.store.transition(job, Event.FAIL, note=failure.reason, failure=failure)
        return "failed"
    if job.is_segment:  # its own key under work/: the parent stitches it into outputs/
        return finish_delivery(job, deps, staged_key, "", size)
    # Cancelled while it copies: the DELIVERED write fails and what was placed is withdrawn.
    return place_and_finish(job, deps, staged_key, size)


PLACE_ROUNDS = 3
MOVED = "moved"  # the DELIVERED write found the job changed while still delivering: place again


def place_and_finish(job: Job, deps: Deps, staged_key: str, size: int, *,
                     report: Callable[[Job], dict[str, Any]] | None = None, note: str = "delivered",
                     **fields: Any) -> str:
    """Place the staged video and its report (``flows.outputs``), then record DELIVERED. A newer job
    that moved this one's video aside before its record named it bumps the record's version
    (``outputs._point_to_kept``): the DELIVERED write fails, and the placement runs again on the job
    as it is now, so the record always names where its video is."""
    for _ in range(PLACE_ROUNDS):
        video_key = outputs.place_video(job, deps, staged_key, outputs.NOTHING_SEEN)
        outcome = finish_delivery(job, deps, video_key, report, size, note=note, seen=outputs.NOTHING_SEEN,
                                  **fields)
        current = deps.store.get(job.job_id) if outcome == MOVED else None
        if current is None:
            return "noop" if outcome == MOVED else outcome
        job = current
    return "noop"


def finish_delivery(job: Job, deps: Deps, video_key: str, report: Callable[[Job], dict[str, Any]] | str | None,
                    size: int, *, note: str = "delivered", seen: outputs.Survey | None = None, **fields: Any) -> str:
    """Write the job report beside the placed video and record DELIVERED (``Event.DELIVERED``, or
    ``Event.STITCHED`` for a talk). ``report``: makes the report from the delivered job (None: the
    plain job report; "": none, for a segment). A job cancelled meanwhile has what it placed
    withdrawn; one changed meanwhile while still delivering answers ``MOVED``."""
    now = deps.clock()
    event = Event.STITCHED if job.status is Status.STITCHING else Event.DELIVERED
    cost = fields.pop("final_cost_usd", final_cost(job, refunded=False))
    final = job.with_changes(status=Status.DELIVERED, output_key=video_key, video_bytes=size, delivered_at=now,
                             final_cost_usd=cost, history=(*job.history, {"status": "DELIVERED", "at": now,
                                                                         "note": note}), **fields)
    report_key = ""
    if report != "":
        document = report(final) if callable(report) else job_report(final, batch_row_progress(final, deps))
        report_key = outputs.place_document(final, deps, REPORT, document, seen)
    updated = deps.store.transition(job, event, note=note, output_key=video_key, report_key=report_key,
                                    video_bytes=size, delivered_at=now, final_cost_usd=cost, **fields)
    if updated is None:
        current = deps.store.get(job.job_id)
        if current is not None and current.status is Status.CANCELLED:
            outputs.withdraw(job, deps, video_key, report_key)
            return "cancelled"
        if current is not None and current.status is job.status:
            return MOVED
        return "noop"  # another delivery finished first; it wrote the same objects
    if not job.is_segment:  # a talk's segment is news only to its parent
        deps.events.publish(VIDEO_DELIVERED, job_summary(updated))
    logger.info("video delivered", extra={"job_id": job.job_id, "key": video_key, "bytes": size})
    return "delivered"


def batch_row_progress(job: Job, deps: Deps) -> tuple[int, int] | None:
    """A manifest row's batch progress for its report ("X of Y done", this row counted)."""
    return deps.store.row_progress(job.batch_id, job.job_id) if job.batch_id else None


def report_failure(job: Job, deps: Deps) -> str:
    error_key = outputs.place_document(job, deps, ERROR, error_report(job))
    updated = deps.store.touch(job, error_key=error_key)
    if updated is None:
        return "noop"
    outputs.settle_location(updated, deps, {ERROR: error_key})
    if not job.is_segment:
        deps.events.publish(JOB_FAILED, job_summary(updated))
    logger.info("failure reported", extra={"job_id": job.job_id, "key": error_key})
    return "reported"
