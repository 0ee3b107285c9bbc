"""S3 upload notifications (via SQS) → s2v.flows.uploads (a manifest: batch; any other input: ingest).
One bad record never re-drives its neighbours."""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows import invocation_memo
from s2v.flows.batch import ROWS_MESSAGE, on_rows
from s2v.flows.resume import on_resume, resume_request
from s2v.flows.uploads import Upload, on_upload
from s2v.model.pairing import decode_event_key
from s2v.tracing import LazyTracer

logger = Logger()
tracer = LazyTracer()  # X-Ray only when the Tracing parameter is Active
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
deps = Deps(Settings.from_env())
STOP_MARGIN = 15.0  # seconds a row may take (validation and one provider submit)


def batch_rows(record: SQSRecord) -> dict[str, Any] | None:
    """A chunk of a manifest's rows that ingest itself queued (s2v.flows.batch.send_rows), or None."""
    body = json.loads(record.body)
    rows = body.get(ROWS_MESSAGE) if isinstance(body, dict) else None
    return rows if isinstance(rows, dict) else None


def s3_uploads(record: SQSRecord) -> list[Upload]:
    """The uploads an SQS message carries; S3's ``s3:TestEvent`` and non-create events carry none."""
    body = json.loads(record.body)
    uploads = []
    for entry in body.get("Records", []):
        if not str(entry.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = entry["s3"]
        uploads.append(Upload(bucket=s3["bucket"]["name"], key=decode_event_key(s3["object"]["key"])))
    return uploads


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> None:
    rows = batch_rows(record)
    if rows is not None:
        # Rows left when the invocation nears its end are queued again rather than cut off.
        deadline = None if lambda_context is None else (
            time.monotonic() + lambda_context.get_remaining_time_in_millis() / 1000 - STOP_MARGIN)
        outcome = on_rows(rows, deps, deadline=deadline)
        logger.info("batch rows processed", extra={"batch_id": rows.get("batch_id"), "outcome": outcome})
        return
    job_id = resume_request(json.loads(record.body))
    if job_id is not None:  # an orphaned job the poller sent back (s2v.flows.resume)
        logger.info("job resumed", extra={"job_id": job_id, "outcome": on_resume(job_id, deps)})
        return
    for upload in s3_uploads(record):
        result = on_upload(upload, deps)
        logger.info("upload processed", extra={"key": upload.key, "outcome": result.outcome,
                                               "job_id": result.job_id, "detail": result.detail})
        if result.outcome in ("submitted", "submitting"):
            metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=1)
        elif result.outcome == "queued":
            metrics.add_metric(name="JobsQueued", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with invocation_memo.one_invocation():  # a folder's _defaults.json, a pair: once for the whole batch
        return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                             context=context))
