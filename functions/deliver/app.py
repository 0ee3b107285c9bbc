"""Jobs table stream (filtered to COMPLETED / FAILED / CANCELLED) → s2v.flows.deliver: video, error or cancel
report into outputs/."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from s2v.adapters.delivery import deadline_after
from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows.deliver import delivery_policy, on_job_change
from s2v.model.jobs import Status
from s2v.tracing import LazyTracer

logger = Logger()
tracer = LazyTracer()  # X-Ray only when the Tracing parameter is Active
metrics = Metrics()
deps = Deps(Settings.from_env())
delivery_policy(deps.settings)  # fail the cold start, not the first delivery, on a bad allow-list


def changed_job_id(record: dict[str, Any]) -> str:
    """The job a stream record is about; "" for the table's guard items ("#…" keys).

    Read from the raw record: Powertools' data classes would add ~11 ms to every cold start
    (bench/, figure 4) to decode one string attribute.
    """
    job_id = record.get("dynamodb", {}).get("Keys", {}).get("job_id", {}).get("S", "")
    return "" if job_id.startswith("#") else job_id


def add_ended_job_metrics(job_id: str) -> None:
    """How the job ended, its render time and what it is taken to have cost: once, when it ends."""
    job = deps.store.get(job_id)
    if job is None:
        return
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
        job_id = changed_job_id(record)
        if not job_id:
            continue
        logger.append_keys(job_id=job_id)
        outcome = on_job_change(job_id, deps, deadline=deadline)
        outcomes.append(outcome)
        if outcome in ("delivered", "reported"):
            # Once per ended job: a refused delivery ("failed") comes back as a FAILED record, reported.
            add_ended_job_metrics(job_id)
    # An exception above fails the batch (size 1): the stream retries it, then the DLQ takes it.
    return {"outcomes": outcomes}
