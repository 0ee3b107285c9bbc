"""Bounded attempts: a job that keeps failing for a reason that is not its input ends FAILED.

``begin`` counts an attempt at a RECEIVED job's work (validation, then submission) *before* the work,
with a conditional write on the job's version: a crash, a timeout or a kill half-way still counts,
and of two workers that read the same job (an SQS redelivery racing the poller) only one goes on.
``check_crashed`` counts a poller check that raised, after the fact (a check is one provider GET,
light enough that a kill there is not the risk; the states' deadlines bound the rest).
Past either bound the job ends FAILED through the ordinary path, so its error report is written.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.model.bounds import MAX_CHECK_CRASHES, MAX_WORK_ATTEMPTS
from s2v.model.jobs import Event, Failure, Job, Status

logger = Logger(child=True)


def begin(job: Job, deps: Deps, *, retry_after: float) -> Job | None:
    """The job with one more attempt counted, to work on now; None when there is nothing to do
    (another worker changed it first, or its attempts are used up and it was failed here).
    ``retry_after``: if this attempt dies, the poller takes the job up again this much later."""
    if job.status is not Status.RECEIVED:
        return None
    if job.work_attempts >= MAX_WORK_ATTEMPTS:
        failure = Failure(stage="validate", code="attempts_exhausted",
                          reason=f"Processing this job failed {job.work_attempts} times for a reason that is not "
                                 "in its files (the function crashed or timed out; see the ingest and poll "
                                 "functions' logs for this job id). Nothing was rendered or charged. Run "
                                 "`s2v retry JOB` once the cause is fixed, or upload the pair again.")
        logger.error("job attempts exhausted", extra={"job_id": job.job_id, "attempts": job.work_attempts})
        deps.store.transition(job, Event.FAIL, note="attempts exhausted", failure=failure)
        return None
    return deps.store.touch(job, work_attempts=job.work_attempts + 1, next_check_at=deps.clock() + retry_after)


def check_crashed(job: Job, deps: Deps, error: BaseException, next_check_at: float) -> str:
    """A poller check of ``job`` raised ``error``: check again later, or end the job after
    ``MAX_CHECK_CRASHES`` such checks. Reads the job again: the check may have written it."""
    current = deps.store.get(job.job_id) or job
    if current.is_terminal and current.status is not Status.CANCELLED:
        return "ended"
    crashes = current.check_crashes + 1
    if crashes >= MAX_CHECK_CRASHES and current.status is not Status.CANCELLED:
        stage = {Status.SUBMITTING: "submit", Status.COMPLETED: "deliver", Status.RECEIVED: "validate"}.get(
            current.status, "render")
        failure = Failure(stage=stage, code="check_failed",
                          reason=f"Checking this job failed {crashes} times in a row ({type(error).__name__}; see "
                                 "the poll function's logs for this job id). If WaveSpeed rendered it, its video "
                                 "may be on the WaveSpeed dashboard. Run `s2v retry JOB` to render it again.")
        if deps.store.transition(current, Event.FAIL, note="checks kept failing", failure=failure) is not None:
            return "failed"
    # Never sooner than the job already asked for (an attempt that began pushed it back).
    deps.store.touch(current, check_crashes=crashes, next_check_at=max(next_check_at, current.next_check_at))
    return "retry"
