"""Cancel a job on an operator's request (``s2v cancel JOB``).

CANCELLED is terminal and is written first, as one conditional write on the state and version
read: from then on a late completion (webhook or poll) is a no-op, nothing is delivered, and a
job that held a provider slot gives it back in the same transaction. Then the job's task at the
provider, if it has one, is deleted, and what happened is recorded in ``provider_delete``:

- ``not sent``: the job never reached the provider (RECEIVED, QUEUED, or SUBMITTING before its
  POST was recorded; such a job can no longer be sent). Its reservation is refunded: cost 0.
- ``deleted`` / ``not found``: the provider deleted the task / no longer knows it.
- ``in flight``: the POST may be on its way; when its answer comes, the submitter finds the job
  cancelled and deletes the new task itself (``settle_late_task``), or records that it was not
  taken (refunded: cost 0). A POST that ends without a clear answer, or whose submitter died, is
  settled from the provider's list like any ambiguous submit: the cancelled job stays in the
  poller's index until then (``settle_in_flight``), and cancelling again once the POST cannot
  still be running looks at the list at once.
- ``not in the provider's list ...`` / ``unknown: ...``: an ambiguous submit whose task the
  provider's list does not show / could not settle. The poller's verdict "not in the list" comes
  only after the settle window (``S2V_SUBMIT_RECONCILE_SECONDS``) and refunds the job (cost 0).
- ``delete failed: ...``: the provider could not be told; ``s2v cancel`` again retries.

Charge rule: a job that may have reached the provider keeps its estimated cost as possibly
charged (final cost = estimate, still counted in its day's budget). The provider documents that a
processing task "may not stop at once" and that "partial refunds may apply", without saying when,
so the spend guard never assumes a refund it cannot see.

The outputs entry is ``outputs/<folder>/<stem>.cancelled.json`` (who, when, the task's fate,
the cost), written by the canceller and by the deliver function from the stream, which rewrites
it whenever the job changes (the submitter and the poller settle a task but cannot write to the
bucket); its first writer also sends the "Job cancelled" event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows.outputs import report_cancelled
from s2v.flows.reconcile import PAGES_PER_JOB, RETRY_SECONDS, find_task, fingerprint
from s2v.flows.talks import segment_jobs
from s2v.model.errors import InputError, ProviderError, TransientError
from s2v.model.jobs import CANCEL_PENDING, CANCELLABLE, TERMINAL, Event, Job, Status
from s2v.model.reconcile import ABSENT, FOUND, submit_window

if TYPE_CHECKING:
    from s2v.flows.reconcile import ListBudget

logger = Logger(child=True)

NOT_SENT = "not sent"
DELETED = "deleted"
NOT_FOUND = "not found"
IN_FLIGHT = "in flight"
PENDING = CANCEL_PENDING  # CANCELLED is written; the provider is being told
UNKNOWN = "unknown"
NOT_LISTED = "not in the provider's list"
DELETE_FAILED = "delete failed"



@dataclass(frozen=True)
class CancelOutcome:
    job: Job
    was: Status  # the status it was cancelled from (CANCELLED when it already was)

    @property
    def already(self) -> bool:
        return self.was is Status.CANCELLED

    @property
    def delete_failed(self) -> bool:
        return self.job.provider_delete.startswith(DELETE_FAILED)


def cancel(job_id: str, deps: Deps, *, by: str) -> CancelOutcome:
    """Cancel ``job_id`` for ``by`` (who asked). Raises InputError for an unknown or finished job."""
    job = deps.store.get(job_id)
    if job is None:
        raise InputError(f"no job {job_id}", code="unknown_job")
    for _ in range(5):
        if job.status is Status.CANCELLED:
            return CancelOutcome(_finish(job, deps), Status.CANCELLED)
        if job.status not in CANCELLABLE:
            raise InputError(f"job {job_id} is {job.status}: it has ended, so there is nothing to cancel",
                             code="not_cancellable")
        fate, refund = _fate(job, deps)
        cancelled = deps.store.transition(
            job, Event.CANCEL, note=f"cancelled by {by} (was {job.status})", cancelled_by=by,
            cancelled_at=deps.clock(), provider_delete=fate,
            **({"refund": True} if refund else {}),
            # A POST on its way: the poller settles it from the list if its submitter cannot.
            **({"next_check_at": _post_end(job, deps)} if fate == IN_FLIGHT else {}))
        if cancelled is not None:
            logger.info("job cancelled", extra={"job_id": job_id, "was": str(job.status), "by": by})
            if cancelled.is_parent:
                cancel_segments(cancelled, deps, by=by)
            return CancelOutcome(_finish(cancelled, deps), job.status)
        job = deps.store.get(job_id) or job  # it moved on meanwhile: decide again on what it is now
    raise TransientError(f"job {job_id} kept changing while it was being cancelled; try again")


def _fate(job: Job, deps: Deps) -> tuple[str, bool]:
    """What cancelling ``job`` means at the provider, and whether its reservation is refunded."""
    if job.status in (Status.RECEIVED, Status.QUEUED):
        return NOT_SENT, False
    if job.provider_id:
        return PENDING, False
    if not job.sent_at:
        # SUBMITTING, its POST not yet recorded: the submitter's record is conditional on this
        # version, so once CANCELLED is written the POST can never be sent.
        return NOT_SENT, True
    return (PENDING if job.submit_note or _post_over(job, deps) else IN_FLIGHT), False


def _post_end(job: Job, deps: Deps) -> float:
    """When the job's POST has certainly ended (answered or given up), with clock skew; 0 if none was sent."""
    fp = fingerprint(job)
    return submit_window(fp, timeout=deps.settings.provider_timeout_seconds).end if fp is not None else 0.0


def _post_over(job: Job, deps: Deps) -> bool:
    """Whether the job's POST has certainly ended (answered or given up) by now."""
    end = _post_end(job, deps)
    return bool(end) and deps.clock() > end


def _finish(job: Job, deps: Deps) -> Job:
    """Tell the provider when that is still to do (or failed before), then write the outputs entry."""
    retry = job.provider_delete.startswith(DELETE_FAILED) or (
        job.provider_delete == IN_FLIGHT and not job.provider_id and _post_over(job, deps))
    if job.provider_delete == PENDING or retry:
        job = _tell_provider(job, deps)
    if job.provider_delete != PENDING:
        report_cancelled(job, deps)
    return deps.store.get(job.job_id) or job


def _tell_provider(job: Job, deps: Deps) -> Job:
    fields: dict[str, Any] = {}
    task = job.provider_id
    if not task:
        # An ambiguous submit: find its task in the provider's list to delete it.
        verdict, _ = find_task(job, deps, now=deps.clock())
        if verdict.outcome == FOUND:
            task = verdict.provider_id
            fields.update(provider_id=task, reconciled_by=verdict.matched_by)
        elif verdict.outcome == ABSENT:
            fields["provider_delete"] = f"{NOT_LISTED} ({verdict.evidence})"
        else:
            fields["provider_delete"] = f"{UNKNOWN}: {verdict.evidence}"
    if task:
        fields["provider_delete"] = delete_task(task, deps)
    return _record(job, deps, **fields)


def delete_task(provider_id: str, deps: Deps) -> str:
    """Delete the task at the provider; the outcome as recorded in ``provider_delete``."""
    try:
        deps.provider.delete_prediction(provider_id)
    except ProviderError as exc:
        if exc.status_code == 404:
            return NOT_FOUND
        logger.warning("provider delete failed", extra={"provider_id": provider_id, "error": exc.message})
        return f"{DELETE_FAILED}: {exc.message}"
    return DELETED


def _record(job: Job, deps: Deps, **fields: Any) -> Job:
    """Touch a cancelled job, re-reading it if another writer got there first. A settled task
    takes the job out of the poller's index; if another settler recorded an outcome first, its
    record stands (so a refund is never given twice)."""
    if fields.get("provider_delete", IN_FLIGHT) != IN_FLIGHT:
        fields = {**fields, "next_check_at": None}
    read = job.provider_delete
    for _ in range(5):
        updated = deps.store.touch(job, **fields)
        if updated is not None:
            return updated
        current = deps.store.get(job.job_id)
        if current is None:
            return job
        if current.provider_delete != read:
            return current
        if fields.get("provider_id") and current.provider_id:
            fields = {k: v for k, v in fields.items() if k not in ("provider_id", "reconciled_by")}
        job = current
    logger.error("could not record the provider outcome of a cancel", extra={"job_id": job.job_id, **fields})
    return job


def settle_late_task(job: Job, provider_id: str, deps: Deps) -> Job:
    """The submitter of a job cancelled while its POST was in flight got a task id: delete that
    task and record it on the cancelled job (the deliver function rewrites the outputs entry)."""
    outcome = delete_task(provider_id, deps)
    logger.info("task of a cancelled job deleted at the provider",
                extra={"job_id": job.job_id, "provider_id": provider_id, "outcome": outcome})
    return _record(job, deps, provider_id=provider_id, provider_delete=outcome)


def settle_unanswered(job: Job, outcome: str, deps: Deps) -> Job:
    """The provider certainly did not take the POST of a job cancelled while it was in flight
    (busy, refused): record that and give its reservation back (it cost nothing)."""
    if job.provider_delete != IN_FLIGHT or job.provider_id:
        return job
    return _record(job, deps, provider_delete=outcome, refund=True)


def settle_ambiguous(job: Job, deps: Deps, *, note: str, sent_until: float) -> Job:
    """The POST of a job cancelled while it was in flight got no clear answer: the provider may
    have taken it. Record when the POST ended and why; the job stays ``in flight`` and due, so the
    poller looks for its task in the provider's list once the POST's window has closed."""
    if job.provider_delete != IN_FLIGHT or job.provider_id:
        return job
    ended = job.with_changes(sent_until=sent_until)
    return _record(job, deps, submit_note=note, sent_until=sent_until, next_check_at=_post_end(ended, deps))


def settle_in_flight(job: Job, deps: Deps, now: float, budget: ListBudget) -> str:
    """The poller's check of a cancelled job whose POST may have reached the provider (its
    submitter got no clear answer, or died): find its task in the provider's list and delete it,
    or, once the settle window has passed, record that the provider never took it (refunded).
    Returns the outcome's name."""
    if job.provider_delete != IN_FLIGHT or job.provider_id:
        _record(job, deps)  # settled by another writer: leave the index
        return "settled"
    settings = deps.settings
    end = _post_end(job, deps)
    if now < end:
        deps.store.touch(job, next_check_at=end)
        return "waiting"
    if budget.pages < PAGES_PER_JOB:
        deps.store.touch(job, next_check_at=now + settings.poll_min_seconds)
        return "waiting"
    verdict, pages = find_task(job, deps, now=now)
    budget.pages -= pages
    deadline = job.sent_at + settings.submit_reconcile_seconds
    fields: dict[str, Any]
    if verdict.outcome == FOUND:
        fields = {"provider_id": verdict.provider_id, "reconciled_by": verdict.matched_by,
                  "provider_delete": delete_task(verdict.provider_id, deps)}
    elif now < deadline:
        deps.store.touch(job, next_check_at=min(deadline, now + RETRY_SECONDS))
        return "waiting"
    elif verdict.outcome == ABSENT:
        fields = {"provider_delete": f"{NOT_LISTED} ({verdict.evidence})", "refund": True}
    else:
        fields = {"provider_delete": f"{UNKNOWN}: {verdict.evidence}"}
    updated = _record(job, deps, **fields)
    logger.info("cancelled job's submission settled", extra={"job_id": job.job_id,
                                                             "outcome": updated.provider_delete})
    return "cancel_settled"


def cancel_segments(parent: Job, deps: Deps, *, by: str) -> int:
    """Cancel every segment of a cancelled parent that has not ended; returns how many."""
    count = 0
    for job in segment_jobs(parent, deps):
        if job.status in TERMINAL:
            continue
        try:
            cancel(job.job_id, deps, by=by)
            count += 1
        except InputError:
            continue  # it ended meanwhile
    return count
