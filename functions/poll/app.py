"""Poller → s2v.flows.poll. On its schedule: checks due jobs, releases queued ones, fails stuck ones.
(A job that leaves the provider releases queued jobs at once too: the jobs-table stream's router,
s2v.flows.stream, in the deliver function.)"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows import poll
from s2v.tracing import LazyTracer

logger = Logger()
tracer = LazyTracer()  # X-Ray only when the Tracing parameter is Active
metrics = Metrics()
deps = Deps(Settings.from_env())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = poll.run(deps)
    metrics.add_metric(name="JobsStuck", unit=MetricUnit.Count, value=report.stuck)
    # Per-job steps that raised (each logged with its job id); the run went on past them.
    metrics.add_metric(name="PollJobErrors", unit=MetricUnit.Count, value=report.errors)
    summary = {"checked": dict(report.checked), "stuck": report.stuck, "errors": report.errors}
    if report.checked:
        logger.info("poll run", extra=summary)
    return summary
