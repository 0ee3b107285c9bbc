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
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows.reconcile import ListBudget, reconcile_submit
from s2v.flows.status import DELIVERY_GRACE_SECONDS, apply_prediction, next_check
from s2v.model.errors import ProviderError, TransientError
from s2v.model.jobs import PARENT_ACTIVE, Event, Failure, Job, Status

logger = Logger(child=True)
MAX_DELIVERY_ATTEMPTS = 3


@dataclass
class PollReport:
    checked: Counter[str] = field(default_factory=Counter)
    stuck: int = 0
    errors: int = 0


def run(deps: Deps, *, limit: int = 50) -> PollReport:
    report = PollReport()
    now = deps.clock()
    budget = ListBudget()
    for job in deps.store.due(now + deps.settings.poll_schedule_seconds / 2, limit=limit):
        try:
            outcome = check(job, deps, budget=budget)
        except (ProviderError, TransientError) as exc:
            report.errors += 1
            logger.warning("check failed; will retry", extra={"job_id": job.job_id, "error": str(exc)})
            deps.store.touch(job, **next_check(job, deps, deps.clock()))
            continue
        except Exception:
            # One broken job must not stop the run for every other due job.
            report.errors += 1
            logger.exception("check crashed; will retry", extra={"job_id": job.job_id})
            deps.store.touch(job, **next_check(job, deps, deps.clock()))
            continue
        report.checked[outcome] += 1
        report.stuck += outcome == "stuck"
    release_queued(deps, report, limit=limit)
    _expire_incomplete_sets(deps, report, limit=limit)
    from s2v.flows.batch import run_due

    report.checked["batch_reports"] += run_due(deps)
    return report


def _expire_incomplete_sets(deps: Deps, report: PollReport, *, limit: int) -> None:
    from s2v.flows.ingest import expire_incomplete_sets

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
    from s2v.flows.ingest import release_validated

    now = deps.clock()
    waiting = deps.store.queued(limit=limit)
    if not waiting and (hint := deps.store.queued_hint()) is not None:
        # None waits: fresh uploads may take free slots again (the guard's hint, see store.admit).
        deps.store.clear_queued_hint(hint)
    for job in waiting:
        if job.not_before > now:
            break  # the provider asked us to wait; later jobs would hear the same
        outcome = release_validated(job, deps)
        if outcome.raced:
            report.checked["raced"] += 1
            continue
        still = outcome.job.status is Status.QUEUED
        report.checked["still_queued" if still else "released"] += 1
        if still:
            break  # a limit is reached; oldest-first order means later jobs wait too


def check(job: Job, deps: Deps, *, budget: ListBudget | None = None) -> str:
    now = deps.clock()
    settings = deps.settings
    if job.status is Status.RECEIVED:
        # Due RECEIVED jobs are retries made on purpose, or jobs whose ingest died mid-way.
        from s2v.flows.ingest import process_received

        process_received(job, deps)
        return "resumed"
    if job.status in PARENT_ACTIVE:
        from s2v.flows.longform import watch

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
        from s2v.flows.cancel import settle_in_flight

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
