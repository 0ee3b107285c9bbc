"""Jobs table stream (filtered to COMPLETED / FAILED) → s2v.deliver: video or error report into outputs/."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from s2v.config import Settings
from s2v.deliver import delivery_policy, on_job_change
from s2v.deps import Deps

logger = Logger()
tracer = Tracer()
metrics = Metrics()
deps = Deps(Settings.from_env())
delivery_policy(deps.settings)  # fail the cold start, not the first delivery, on a bad allow-list


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=DynamoDBStreamEvent)
def handler(event: DynamoDBStreamEvent, context: LambdaContext) -> dict[str, Any]:
    outcomes = []
    for record in event.records:
        job_id = record.dynamodb.keys["job_id"] if record.dynamodb and record.dynamodb.keys else ""
        if not job_id or str(job_id).startswith("#"):
            continue
        logger.append_keys(job_id=job_id)
        outcome = on_job_change(str(job_id), deps)
        outcomes.append(outcome)
        if outcome == "delivered":
            metrics.add_metric(name="JobsDelivered", unit=MetricUnit.Count, value=1)
        elif outcome in ("reported", "failed"):
            metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
    # An exception above fails the batch (size 1): the stream retries it, then the DLQ takes it.
    return {"outcomes": outcomes}
