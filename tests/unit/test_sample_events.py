"""The sample events in events/ are real shapes the handlers' parsing accepts (they also serve
`sam local invoke`), and they agree with each other."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from unittest import mock

from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent

from s2v.adapters.providers.wavespeed import parse_webhook_task, verify_webhook
from s2v.model.jobs import InputObject, job_id_for

EVENTS = Path(__file__).resolve().parents[2] / "events"
FUNCTIONS = EVENTS.parent / "functions"


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def ingest_module() -> ModuleType:
    env = {"S2V_BUCKET": "sample-bucket", "S2V_JOBS_TABLE": "sample-table"}
    with mock.patch.dict(os.environ, env):
        spec = importlib.util.spec_from_file_location("sample_ingest_app", FUNCTIONS / "ingest" / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def test_the_ingest_sample_decodes_to_the_pair_and_the_test_event_to_nothing() -> None:
    app = ingest_module()
    uploads = [u for r in SQSEvent(event("ingest_sqs_s3_pair.json")).records for u in app.s3_uploads(r)]
    assert [u.key for u in uploads] == ["inputs/talks/Café talk 1.png", "inputs/talks/Café talk 1.wav"]
    test_records = SQSEvent(event("ingest_sqs_s3_test_event.json")).records
    assert [u for r in test_records for u in app.s3_uploads(r)] == []


def test_the_webhook_sample_is_signed_for_the_job_the_pair_makes_and_the_stream_sample_names_it() -> None:
    sample = event("webhook_completed.json")
    body = sample["body"].encode()
    stamp = float(sample["headers"]["webhook-timestamp"])
    assert verify_webhook(sample["headers"], body, "whsec_s2vSampleWebhookSecret0123456789", now=stamp + 1)
    assert not verify_webhook(sample["headers"], body, "whsec_other", now=stamp + 1)
    assert parse_webhook_task(body).status == "completed"
    stream = DynamoDBStreamEvent(event("deliver_stream_completed.json"))
    record = next(iter(stream.records))
    job_id = record.dynamodb.keys["job_id"]
    assert sample["pathParameters"]["job_id"] == job_id
    image = record.dynamodb.new_image["image"]
    audio = record.dynamodb.new_image["audio"]
    expected = job_id_for("talks", "Café talk 1",
                          InputObject(image["key"], image["etag"], int(image["size"])),
                          InputObject(audio["key"], audio["etag"], int(audio["size"])))
    assert job_id == expected
    assert record.dynamodb.new_image["status"] == "COMPLETED"


def test_the_stream_sample_reaches_the_deliver_function_and_wakes_its_delivery() -> None:
    from s2v.flows import stream
    from s2v_local import patterns
    from s2v_local.template import StreamTrigger, load

    template = load(EVENTS.parent / "template.yaml")
    record = event("deliver_stream_completed.json")["Records"][0]
    [trigger] = template.function("DeliverFunction").triggers_of(StreamTrigger)
    assert patterns.matches_any(trigger.filter_patterns, record)
    change = stream.change_of(record)
    assert change is not None
    assert stream.wakes(change) == (stream.DELIVER, stream.ROW_ENDED)
