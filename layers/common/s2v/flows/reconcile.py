"""Settle an ambiguous submit: find the job's task in the provider's list, or prove it is not there.

Runs from the poller for jobs in SUBMITTING without a provider id, and only for those: the
provider's docs keep the list for reconciliation sweeps, not status polling. Each run reads at
most ``PAGES_PER_JOB`` pages for a job and ``PAGES_PER_RUN`` in all; matching is pure
(``s2v.model.reconcile``). Outcomes:

- found: the job adopts the task (SUBMITTED, ``reconciled_by`` says how it matched) in one
  transaction that also claims the task, so no other job can hold it; the poller then checks it
  like any submitted job, and it is billed once;
- provably absent once the settle window (``S2V_SUBMIT_RECONCILE_SECONDS`` after the POST) has
  passed: FAILED ``not_charged``, its reservation refunded;
- cannot tell (the list fails, the 7-day list no longer reaches the POST, several candidates):
  FAILED ``submit_outcome_unknown``, "may have been charged", with the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.model.errors import ProviderError
from s2v.model.jobs import Event, Failure, Job, Status
from s2v.model.provider_facts import LIST_MAX_PAGE_SIZE
from s2v.model.reconcile import (
    ABSENT,
    FOUND,
    MATCH_TIME_WINDOW,
    UNKNOWN,
    Fingerprint,
    Listed,
    Sorting,
    Verdict,
    Window,
    covers,
    judge,
    list_reaches,
    recorded_inputs,
    submit_window,
)

logger = Logger(child=True)
PAGES_PER_JOB = 5
PAGES_PER_RUN = 20
# Between list reads of one job before its settle window ends (a webhook may settle it sooner).
RETRY_SECONDS = 180.0


@dataclass
class ListBudget:
    """List pages one poller run may still read."""

    pages: int = PAGES_PER_RUN


def fingerprint(job: Job) -> Fingerprint | None:
    if not job.sent_at:
        return None
    inputs = job.sent_inputs or recorded_inputs(job.sent_model, job.sent_image_sha256, job.sent_audio_sha256)
    return Fingerprint(model=job.sent_model, inputs=inputs, sent_at=job.sent_at, sent_until=job.sent_until,
                       hosts=job.sent_input_hosts)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def find_task(job: Job, deps: Deps, *, now: float, max_pages: int = PAGES_PER_JOB) -> tuple[Verdict, int]:
    """Look for ``job``'s task in the provider's list: (verdict, pages read)."""
    fp = fingerprint(job)
    if fp is None:
        return Verdict(UNKNOWN, evidence="no record of what was sent"), 0
    window = submit_window(fp, timeout=deps.settings.provider_timeout_seconds)
    if not list_reaches(window, now):
        return Verdict(UNKNOWN, evidence=f"the submission ({window}) is older than the 7 days the provider's "
                                         "list shows"), 0
    sorting = Sorting.empty()
    covered = False
    pages = 0
    for page in range(1, max_pages + 1):
        try:
            answer = deps.provider.list_predictions(page=page, page_size=LIST_MAX_PAGE_SIZE, model=fp.model or None,
                                                    # Up to now, not the window's end: an exact
                                                    # match must not miss a task stamped late.
                                                    created_after=_utc(window.start),
                                                    created_before=_utc(max(now, window.end)))
        except ProviderError as exc:
            return Verdict(UNKNOWN, evidence=f"the provider's list did not answer ({exc.message})"), pages
        pages += 1
        items = [Listed(p.id, p.model, p.created_at_epoch, p.input) for p in answer.items]
        sorting.add(fp, items, window)
        covered = covers(window=window, oldest=sorting.oldest, page_items=len(items),
                         page_size=LIST_MAX_PAGE_SIZE, page=page, total=answer.total)
        if sorting.exact or covered:
            break
    held = {task: holder for task in sorting.candidates() if (holder := deps.store.task_holder(task))}
    verdict = judge(job.job_id, sorting, covered=covered, held=held, window=window, model=fp.model)
    if verdict.outcome == FOUND and verdict.matched_by == MATCH_TIME_WINDOW:
        rivals = _rival_submits(job, fp.model, window, deps)
        if rivals:
            # A time match cannot tell whose task it is: adopting it could give this job another's video.
            return Verdict(UNKNOWN, evidence=(f"task {verdict.provider_id} fits this submission's window, but so do "
                                              f"{len(rivals)} other unsettled submission(s) of the same model")), pages
    return verdict, pages


def _rival_submits(job: Job, model: str, window: Window, deps: Deps) -> list[str]:
    """Other jobs still settling an ambiguous submit of ``model`` whose windows overlap ``window``
    (a job cancelled mid-POST is one until its task is settled: it stays in the active index)."""
    rivals = []
    for other in deps.store.active():
        unsettled = other.status in (Status.SUBMITTING, Status.CANCELLED)
        other_fp = fingerprint(other) if other.job_id != job.job_id and unsettled else None
        if other_fp is None or other.provider_id or other_fp.model != model:
            continue
        theirs = submit_window(other_fp, timeout=deps.settings.provider_timeout_seconds)
        if theirs.start <= window.end and window.start <= theirs.end:
            rivals.append(other.job_id)
    return rivals


def reconcile_submit(job: Job, deps: Deps, now: float, budget: ListBudget) -> str:
    """One poller check of a SUBMITTING job that has no provider id; returns the outcome's name."""
    settings = deps.settings
    settle = settings.submit_reconcile_seconds
    if not job.sent_at:
        return _never_sent(job, deps, now)
    fp = fingerprint(job)
    assert fp is not None
    window = submit_window(fp, timeout=settings.provider_timeout_seconds)
    deadline = job.sent_at + settle
    if now < window.end:
        # The POST may still be in flight, or the task only just made: look once it cannot be.
        deps.store.touch(job, next_check_at=window.end)
        return "waiting"
    if budget.pages < PAGES_PER_JOB:
        deps.store.touch(job, next_check_at=now + settings.poll_min_seconds)
        return "waiting"
    verdict, pages = find_task(job, deps, now=now)
    budget.pages -= pages
    if verdict.outcome == FOUND:
        adopted, why = deps.store.adopt(
            job, verdict.provider_id, note=f"reconciled by {verdict.matched_by}: {verdict.evidence}",
            reconciled_by=verdict.matched_by, provider_model=job.sent_model, submitted_at=job.sent_at,
            check_count=0, next_check_at=now)
        if adopted is not None:
            logger.info("ambiguous submit reconciled", extra={"job_id": job.job_id, "provider_id": verdict.provider_id,
                                                              "matched_by": verdict.matched_by})
            return "reconciled"
        if why == "changed":
            return "raced"
        verdict = Verdict(UNKNOWN, evidence=f"task {verdict.provider_id} was claimed by another job meanwhile")
    if now < deadline:
        deps.store.touch(job, next_check_at=min(deadline, now + RETRY_SECONDS))
        return "waiting"
    note = f" ({job.submit_note})" if job.submit_note else ""
    if verdict.outcome == ABSENT:
        failure = Failure(
            stage="submit", code="not_charged",
            reason=("The submission to WaveSpeed got no clear answer" + note + ", and WaveSpeed never took the "
                    f"job: {verdict.evidence}. It was not charged. To render it, run `s2v retry JOB` or "
                    "upload the pair again."))
        deps.store.transition(job, Event.FAIL, note="not taken by the provider: not charged", failure=failure,
                              refund=True)
        return "not_charged"
    return _fail_unknown(job, deps, f"{note}, and it could not be settled from WaveSpeed's task list: "
                                    f"{verdict.evidence}")


def _never_sent(job: Job, deps: Deps, now: float) -> str:
    """SUBMITTING with no record of a POST: the submitter stopped before sending (it records what it
    sends first, and a record that fails stops the send). Once it cannot still be running, the
    job goes back to the queue: nothing was charged."""
    settle = deps.settings.submit_reconcile_seconds
    started = job.admitted_at or job.updated_at  # stable: touches below must not restart the window
    if job.submit_note:
        # A POST from before submissions were recorded: nothing to match it with.
        if now - started < settle:
            deps.store.touch(job, next_check_at=started + settle)
            return "waiting"
        return _fail_unknown(job, deps, f" ({job.submit_note}) and no status arrived within {settle // 60} minutes")
    if now - started < settle:
        deps.store.touch(job, next_check_at=started + settle)
        return "waiting"
    reason = "admitted, but the submitter stopped before sending anything"
    queued = deps.store.transition(job, Event.DEFER, note=f"{reason}; back in the queue", queue_reason=reason)
    return "requeued" if queued else "raced"


def _fail_unknown(job: Job, deps: Deps, why: str) -> str:
    failure = Failure(
        stage="submit", code="submit_outcome_unknown",
        reason=("The submission to WaveSpeed did not return a clear answer" + why + ". The render may have been "
                "started and charged: check the WaveSpeed dashboard before retrying. To render again on purpose "
                "run `s2v retry JOB` or upload the pair again."),
    )
    deps.store.transition(job, Event.FAIL, note="submit outcome unknown", failure=failure)
    return "stuck"
