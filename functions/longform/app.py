"""Jobs table stream (a talk to split or stitch, a talk's segment that ended) → s2v.flows.longform."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows.longform import on_job_change
from s2v.tracing import LazyTracer

logger = Logger()
tracer = LazyTracer()  # X-Ray only when the Tracing parameter is Active
metrics = Metrics()
deps = Deps(Settings.from_env())


def changed_job_id(record: dict[str, Any]) -> str:
    """The job a stream record is about; "" for the table's bookkeeping items ("#…" keys)."""
    job_id = record.get("dynamodb", {}).get("Keys", {}).get("job_id", {}).get("S", "")
    return "" if job_id.startswith("#") else job_id


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcomes = []
    for record in event.get("Records", []):
        job_id = changed_job_id(record)
        if not job_id:
            continue
        logger.append_keys(job_id=job_id)
        outcomes.append(on_job_change(job_id, deps, seconds_left=context.get_remaining_time_in_millis() / 1000))
    # An exception fails the batch (size 1): the stream retries it, then its on-failure queue takes
    # it, and the poller's watch re-runs the step later.
    return {"outcomes": outcomes}
