"""The poller: the source of truth for job progress (webhooks only make it faster).

Each scheduled run reads due jobs from the sparse index (never a scan), checks each with per-job backoff,
releases queued jobs oldest first while capacity, budget and the provider balance allow, settles
ambiguous submits from the provider's list (``flows/reconcile.py``), and fails jobs that are
stuck past their deadline with a reason a person can act on. Between runs, a slot freed while
jobs wait triggers ``release_freed_slots`` (the stream's router, ``flows/stream.py``) so queued
jobs take it at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows.attempts import check_crashed
from s2v.flows.batch import run_due
from s2v.flows.cancel import settle_in_flight
from s2v.flows.ingest import expire_incomplete_sets, release_validated
from s2v.flows.longform import watch
from s2v.flows.reconcile import ListBudget, reconcile_submit
from s2v.flows.resume import resume
from s2v.flows.status import DELIVERY_GRACE_SECONDS, apply_prediction, next_check
from s2v.model.errors import ProviderError, TransientError
from s2v.model.jobs import PARENT_ACTIVE, Event, Failure, Job, Status

logger = Logger(child=True)
MAX_DELIVERY_ATTEMPTS = 3
T = TypeVar("T")


@dataclass
class PollReport:
    checked: Counter[str] = field(default_factory=Counter)
    stuck: int = 0
    errors: int = 0


def run(deps: Deps, *, limit: int = 50) -> PollReport:
    report = PollReport()
    # Each step runs whatever the one before it did (each isolates its jobs, this its own failure).
    for name, step in (("due_checks", lambda: _check_due(deps, report, limit=limit)),
                       ("release_queued", lambda: release_queued(deps, report, limit=limit)),
                       ("incomplete_sets", lambda: _expire_incomplete_sets(deps, report, limit=limit)),
                       ("batch_reports", lambda: report.checked.update(batch_reports=run_due(deps)))):
        try:
            step()
        except Exception:
            report.errors += 1
            logger.exception("poll step failed; the next steps still run", extra={"step": name})
    return report


def _check_due(deps: Deps, report: PollReport, *, limit: int) -> None:
    now = deps.clock()
    budget = ListBudget()
    for job in deps.store.due(now + deps.settings.poll_schedule_seconds / 2, limit=limit):
        try:
            outcome = check(job, deps, budget=budget)
        except (ProviderError, TransientError) as exc:
            report.errors += 1
            logger.warning("check failed; will retry", extra={"job_id": job.job_id, "error": str(exc)})
            _isolated(report, job, deps.store.touch, job, **next_check(job, deps, deps.clock()))
            continue
        except Exception as exc:
            # One broken job must not stop the run for every other due job, nor be checked forever.
            report.errors += 1
            logger.exception("check crashed", extra={"job_id": job.job_id})
            retry_at = next_check(job, deps, deps.clock())["next_check_at"]
            crashed = _isolated(report, job, check_crashed, job, deps, exc, retry_at)
            report.checked[f"crashed_{crashed or 'unrecorded'}"] += 1
            continue
        report.checked[outcome] += 1
        report.stuck += outcome == "stuck"


def _expire_incomplete_sets(deps: Deps, report: PollReport, *, limit: int) -> None:
    try:
        report.checked["incomplete_set"] += len(expire_incomplete_sets(deps, limit=limit))
    except Exception:  # never stops the run: the sets wait for the next one
        report.errors += 1
        logger.exception("could not check the incomplete sets")


def release_freed_slots(deps: Deps, *, limit: int = 50) -> PollReport:
    """A job just left the provider (completed or failed), so its slot is free: release queued jobs
    now instead of at the next scheduled run, which would leave the slot idle for up to a minute."""
    report = PollReport()
    release_queued(deps, report, limit=limit)
    return report


def release_queued(deps: Deps, report: PollReport, *, limit: int) -> None:
    """Submit queued jobs oldest first until a limit says wait. A scheduled run and a
    stream-triggered one may race for the same job: only the caller whose admission won counts
    it "released"; the other counts it "raced" and moves on."""
    now = deps.clock()
    waiting = deps.store.queued(limit=limit)
    if not waiting and (hint := deps.store.queued_hint()) is not None:
        # None waits: fresh uploads may take free slots again (the guard's hint, see store.admit).
        deps.store.clear_queued_hint(hint)
    for job in waiting:
        if now - job.created_at > deps.settings.queue_deadline_seconds:
            _isolated(report, job, _fail_queued_too_long, job, deps)
            report.checked["queued_too_long"] += 1
            continue
        if job.not_before > now:
            break  # the provider asked us to wait; later jobs would hear the same
        outcome = _isolated(report, job, release_validated, job, deps)
        if outcome is None:
            continue  # logged and counted; the jobs behind it still get their turn
        if outcome.raced:
            report.checked["raced"] += 1
            continue
        still = outcome.job.status is Status.QUEUED
        report.checked["still_queued" if still else "released"] += 1
        if still:
            break  # a limit is reached; oldest-first order means later jobs wait too


def _isolated(report: PollReport, job: Job, step: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run one job's step of a poll run; if it raises, log it with the job id, count it, and go on."""
    try:
        return step(*args, **kwargs)
    except Exception:
        report.errors += 1
        logger.exception("poll step failed for one job; the run goes on", extra={"job_id": job.job_id})
        return None


def _fail_queued_too_long(job: Job, deps: Deps) -> None:
    hours = deps.settings.queue_deadline_seconds / 3600
    why = f" (last: {job.queue_reason})" if job.queue_reason else ""
    failure = Failure(stage="admit", code="queued_too_long",
                      reason=f"The job waited {hours:g} hours for a slot, the daily budget or the provider without "
                             f"being submitted{why}; nothing was charged. Check the budget (DailyBudgetUSD), the "
                             "provider's status and balance, then run `s2v retry JOB`.")
    deps.store.transition(job, Event.FAIL, note="queue deadline passed", failure=failure)


def check(job: Job, deps: Deps, *, budget: ListBudget | None = None) -> str:
    now = deps.clock()
    settings = deps.settings
    if job.status is Status.RECEIVED:
        # Due RECEIVED jobs are retries made on purpose, or jobs whose ingest died mid-way: they are
        # validated by ingest (its limits, retries and DLQ), never here.
        return resume(job, deps)
    if job.status in PARENT_ACTIVE:
        return watch(job, deps)
    if job.status is Status.SUBMITTING:
        if job.provider_id:  # a webhook told us the provider id: confirm and move on
            apply_prediction(job, deps.provider.result(job.provider_id), deps, source="reconcile")
            return "reconciled"
        return reconcile_submit(job, deps, now, budget if budget is not None else ListBudget())
    if job.status in (Status.SUBMITTED, Status.PROCESSING):
        started = job.submitted_at or job.updated_at
        if now - started > settings.job_deadline_seconds:
            minutes = settings.job_deadline_seconds // 60
            failure = Failure(stage="render", code="stuck",
                              reason=f"WaveSpeed gave no result within {minutes} minutes (provider id "
                                     f"{job.provider_id}). Check the WaveSpeed dashboard; to render again "
                                     "run `s2v retry JOB` or upload the pair again.")
            deps.store.transition(job, Event.FAIL, note="deadline passed", failure=failure)
            return "stuck"
        try:
            prediction = deps.provider.result(job.provider_id)
        except ProviderError as exc:
            if exc.status_code == 404:
                failure = Failure(stage="render", code="unknown_to_provider",
                                  reason=f"WaveSpeed does not know provider id {job.provider_id}. "
                                         "Run `s2v retry JOB` to render again.")
                deps.store.transition(job, Event.FAIL, note="provider 404", failure=failure)
                return "failed"
            raise
        apply_prediction(job, prediction, deps, source="poll")
        return prediction.status
    if job.status is Status.CANCELLED:
        # Cancelled while its POST was in flight, and the POST's fate is still to be settled.
        return settle_in_flight(job, deps, now, budget if budget is not None else ListBudget())
    if job.status is Status.COMPLETED:
        if now - job.completed_at < DELIVERY_GRACE_SECONDS:
            deps.store.touch(job, next_check_at=job.completed_at + DELIVERY_GRACE_SECONDS)
            return "delivering"
        if job.delivery_attempts < MAX_DELIVERY_ATTEMPTS:
            # Any write emits a stream record with status COMPLETED, which re-runs delivery.
            deps.store.touch(job, delivery_attempts=job.delivery_attempts + 1,
                             next_check_at=now + DELIVERY_GRACE_SECONDS)
            return "redeliver"
        failure = Failure(stage="deliver", code="delivery_incomplete",
                          reason="The video was rendered but could not be copied into the bucket after "
                                 f"{MAX_DELIVERY_ATTEMPTS} attempts. Run `s2v retry JOB`.")
        deps.store.transition(job, Event.FAIL, note="delivery attempts exhausted", failure=failure)
        return "stuck"
    return "noop"
