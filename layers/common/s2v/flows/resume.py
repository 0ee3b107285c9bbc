"""Orphaned RECEIVED jobs go back through the ingest queue, never validated inside the poller.

A job still RECEIVED after ``ORPHAN_AFTER_SECONDS`` (its ingest died mid-way) or made due at once
(``s2v retry``) is validated by the ingest function, as an upload is: under its memory and
timeout, with SQS's retries and dead-letter queue bounding a file that kills it. The poller only
sends a message naming the job and looks again after the same wait. A segment job was validated
by its talk, so the poller submits it as it releases a queued job.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows.ingest import ORPHAN_AFTER_SECONDS, process_received
from s2v.model.jobs import Job, Status

logger = Logger(child=True)
RESUME_MESSAGE = "s2v_resume_job"  # an ingest queue message body: {RESUME_MESSAGE: {"job_id": ...}}


def resume(job: Job, deps: Deps) -> str:
    """The poller's step for a due RECEIVED job: "requeued" (sent to ingest) or "resumed" (a segment)."""
    if job.is_segment:
        process_received(job, deps)
        return "resumed"
    # The next look comes after the wait first: if the job moved meanwhile, ingest has it already.
    if deps.store.touch(job, next_check_at=deps.clock() + ORPHAN_AFTER_SECONDS) is None:
        return "raced"
    # No settle delay: the pair was settled when the job was recorded.
    deps.sqs.send_message(QueueUrl=deps.settings.ingest_queue_url, DelaySeconds=0,
                          MessageBody=json.dumps({RESUME_MESSAGE: {"job_id": job.job_id}}))
    logger.info("orphaned job sent back to ingest", extra={"job_id": job.job_id})
    return "requeued"


def resume_request(body: Any) -> str | None:
    """The job id an ingest queue message asks to resume, or None for any other message."""
    request = body.get(RESUME_MESSAGE) if isinstance(body, dict) else None
    job_id = request.get("job_id") if isinstance(request, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def on_resume(job_id: str, deps: Deps) -> str:
    """In the ingest function: validate and submit the job if it is still RECEIVED."""
    job = deps.store.get(job_id)
    if job is None or job.status is not Status.RECEIVED:
        return "noop"
    process_received(job, deps)
    return "resumed"
