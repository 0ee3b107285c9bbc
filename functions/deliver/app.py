"""The jobs table's stream (filtered: jobs now COMPLETED / FAILED / CANCELLED, the spend guard while a job
waits) → s2v.flows.stream, which routes each change to what it wakes: delivery or a report into outputs/,
the release of queued jobs into a freed slot."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from s2v.adapters.delivery import deadline_after
from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows import stream
from s2v.flows.deliver import delivery_policy
from s2v.model.jobs import Job, Status
from s2v.tracing import LazyTracer

logger = Logger()
tracer = LazyTracer()  # X-Ray only when the Tracing parameter is Active
metrics = Metrics()
deps = Deps(Settings.from_env())
delivery_policy(deps.settings)  # fail the cold start, not the first delivery, on a bad allow-list


def add_ended_job_metrics(job: Job) -> None:
    """How the job ended, its render time and what it is taken to have cost: once, when it ends."""
    if job.status is Status.DELIVERED:
        metrics.add_metric(name="JobsDelivered", unit=MetricUnit.Count, value=1)
    elif job.status is Status.FAILED:  # every failure, at any stage, is reported here once
        metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
    elif job.status is Status.CANCELLED:
        metrics.add_metric(name="JobsCancelled", unit=MetricUnit.Count, value=1)
    if job.render_seconds:
        metrics.add_metric(name="RenderSeconds", unit=MetricUnit.Seconds, value=job.render_seconds)
    if job.final_cost_usd:
        metrics.add_metric(name="EstimatedSpendUSD", unit=MetricUnit.NoUnit, value=job.final_cost_usd)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A copy still running then stops with a retryable error, before Lambda would kill it mid-upload.
    deadline = deadline_after(context.get_remaining_time_in_millis())
    outcomes = []
    for record in event.get("Records", []):
        change = stream.change_of(record)
        if change is not None:
            logger.append_keys(job_id=change.job_id)
        routed = stream.on_record(record, deps, deadline=deadline)
        if routed is None:
            continue
        if routed.outcome:
            outcomes.append(routed.outcome)
        ended = stream.ended_job(routed)
        if ended is not None:
            add_ended_job_metrics(ended)
    # An exception above fails the batch (size 1): the stream retries it, then the DLQ takes it.
    return {"outcomes": outcomes}
