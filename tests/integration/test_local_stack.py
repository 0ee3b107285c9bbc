"""The local stack delivers template.yaml's triggers to handlers in real AWS event shapes.

The handlers here are tiny recorders generated into a temporary root next to a copy of the real
template.yaml, so these tests check the wiring, not the pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import requests

from s2v_local.stack import HandlerMissing, LocalStack
from s2v_local.template import load

REPO = Path(__file__).resolve().parents[2]

RECORDER = '''
import json, os, pathlib, time, uuid

OUT = pathlib.Path(os.environ["S2V_TEST_RECORD_DIR"])
ENV_SEEN = {k: os.environ.get(k) for k in
            ("S2V_BUCKET", "S2V_JOBS_TABLE", "S2V_LOCAL_MODE", "WAVESPEED_BASE_URL", "S2V_WEBHOOK_BASE_URL")}


def record(event, context):
    entry = {"at": time.monotonic_ns(), "event": event, "env": ENV_SEEN,
             "function_name": context.function_name, "remaining_ms": context.get_remaining_time_in_millis()}
    (OUT / f"{FUNCTION}-{uuid.uuid4().hex}.json").write_text(json.dumps(entry))
'''

HANDLERS = {
    "ingest": '''
FUNCTION = "IngestFunction"


def handler(event, context):
    record(event, context)
    failures = []
    for item in event["Records"]:
        behaviour = json.loads(item["body"]).get("behaviour")
        first = item["attributes"]["ApproximateReceiveCount"] == "1"
        if behaviour == "poison" or (behaviour == "fail-once" and first):
            failures.append({"itemIdentifier": item["messageId"]})
    return {"batchItemFailures": failures}
''',
    "webhook": '''
FUNCTION = "WebhookFunction"


def handler(event, context):
    record(event, context)
    return {"statusCode": 202, "headers": {"content-type": "application/json", "x-recorded": "yes"},
            "body": json.dumps({"job_id": event["pathParameters"]["job_id"]})}
''',
    "poll": '''
FUNCTION = "PollFunction"


def handler(event, context):
    record(event, context)
''',
    "deliver": '''
FUNCTION = "DeliverFunction"


def handler(event, context):
    record(event, context)
    for item in event["Records"]:
        if item["dynamodb"]["Keys"]["job_id"]["S"].startswith("explode"):
            raise RuntimeError("delivery failed")
''',
    "longform": '''
FUNCTION = "LongformFunction"


def handler(event, context):
    record(event, context)
''',
}


class Recorded:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def calls(self, function: str) -> list[dict[str, Any]]:
        entries = []
        for path in self.directory.glob(f"{function}-*.json"):
            try:
                entries.append(json.loads(path.read_text()))
            except ValueError:
                continue  # being written right now
        return sorted(entries, key=lambda e: e["at"])

    def records(self, function: str) -> list[dict[str, Any]]:
        return [r for call in self.calls(function) for r in call["event"].get("Records", [])]


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {check.__name__}")


def write_root(root: Path) -> None:
    shutil.copy(REPO / "template.yaml", root / "template.yaml")
    for name, body in HANDLERS.items():
        code = root / "functions" / name
        code.mkdir(parents=True)
        (code / "app.py").write_text(RECORDER + body)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return Recorded(tmp_path_factory.mktemp("recorded"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, recorded: Recorded) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("root")
    write_root(root)
    with LocalStack(root, provider_base_url="http://127.0.0.1:9", env_overrides={
        "S2V_TEST_RECORD_DIR": str(recorded.directory)}, poll_interval_seconds=0.3, queue_delay_seconds=0,
                    redelivery_seconds=0) as running:
        yield running


def ingest_bodies(recorded: Recorded) -> list[str]:
    return [r["body"] for r in recorded.records("IngestFunction")]


def test_upload_under_inputs_reaches_ingest_as_an_s3_event_in_sqs_with_the_key_url_encoded(
        stack: LocalStack, recorded: Recorded) -> None:
    s3 = stack.client("s3")
    # Given an output written first, then an input whose name has a space and a non-ASCII letter
    s3.put_object(Bucket=stack.bucket, Key="outputs/talks/Café talk.mp4", Body=b"video")
    s3.put_object(Bucket=stack.bucket, Key="inputs/talks/Café talk.png", Body=b"image")

    # When ingest has received the input's notification
    def input_record() -> dict[str, Any] | None:
        found = [r for r in recorded.records("IngestFunction") if "Caf%C3%A9+talk.png" in r["body"]]
        return found[0] if found else None

    record = wait_for(input_record)

    # Then it is a real SQS record carrying a real S3 notification, key encoded as S3 sends it
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.physical["IngestQueue.Arn"]
    assert record["awsRegion"] == "us-east-1"
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    s3_event = json.loads(record["body"])["Records"][0]
    assert s3_event["eventSource"] == "aws:s3"
    assert s3_event["eventName"].startswith("ObjectCreated:")
    assert s3_event["s3"]["bucket"]["name"] == stack.bucket
    assert s3_event["s3"]["object"]["key"] == "inputs/talks/Caf%C3%A9+talk.png"
    assert unquote_plus(s3_event["s3"]["object"]["key"]) == "inputs/talks/Café talk.png"
    # and nothing under outputs/ was ever sent (it was written before the input)
    assert not [b for b in ingest_bodies(recorded) if "outputs/" in b]
    # and S3's own s3:TestEvent from setting up the notification arrived too, as on AWS
    assert any(json.loads(b).get("Event") == "s3:TestEvent" for b in ingest_bodies(recorded))


def test_handlers_see_the_template_environment_with_local_names(stack: LocalStack, recorded: Recorded) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket, Key="inputs/env/probe.wav", Body=b"audio")
    call = wait_for(lambda: [c for c in recorded.calls("IngestFunction") if "probe.wav" in json.dumps(c)])[0]

    assert call["env"] == {
        "S2V_BUCKET": stack.bucket,
        "S2V_JOBS_TABLE": stack.table_name,
        "S2V_LOCAL_MODE": "true",
        "WAVESPEED_BASE_URL": "http://127.0.0.1:9",
        "S2V_WEBHOOK_BASE_URL": stack.webhook_base_url,
    }
    assert call["function_name"] == f"{stack.pseudo.stack_name}-IngestFunction"
    assert 0 < call["remaining_ms"] <= 60_000  # the template's ingest timeout
    assert stack.bucket.startswith("s2v-media-123456789012-us-east-1-")


def test_a_reported_batch_item_failure_redelivers_only_that_record(stack: LocalStack, recorded: Recorded) -> None:
    tag = uuid.uuid4().hex
    sqs = stack.client("sqs")
    # Given one good and one failing message delivered in the same batch
    sqs.send_message_batch(QueueUrl=stack.queue_url("IngestQueue"), Entries=[
        {"Id": "good", "MessageBody": json.dumps({"behaviour": "ok", "tag": tag})},
        {"Id": "bad", "MessageBody": json.dumps({"behaviour": "fail-once", "tag": tag})},
    ])

    def seen(behaviour: str) -> list[dict[str, Any]]:
        return [r for r in recorded.records("IngestFunction")
                if tag in r["body"] and json.loads(r["body"])["behaviour"] == behaviour]

    # When the failing one has come back for a second try
    wait_for(lambda: len(seen("fail-once")) == 2)
    time.sleep(0.5)

    # Then only it was redelivered, and both have now left the queue
    assert [r["attributes"]["ApproximateReceiveCount"] for r in seen("fail-once")] == ["1", "2"]
    assert len(seen("ok")) == 1
    attributes = sqs.get_queue_attributes(QueueUrl=stack.queue_url("IngestQueue"), AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_a_poison_message_lands_in_the_dead_letter_queue_after_max_receives(
        stack: LocalStack, recorded: Recorded) -> None:
    tag = uuid.uuid4().hex
    sqs = stack.client("sqs")
    max_receives = load(stack.root / "template.yaml").queues["IngestQueue"].max_receive_count
    sqs.send_message(QueueUrl=stack.queue_url("IngestQueue"),
                     MessageBody=json.dumps({"behaviour": "poison", "tag": tag}))

    def dead_lettered() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=stack.queue_url("IngestDLQ"), WaitTimeSeconds=1,
                                       MaxNumberOfMessages=10).get("Messages", [])
        return [m for m in messages if tag in m["Body"]]

    assert dead_lettered_body(wait_for(dead_lettered)) == {"behaviour": "poison", "tag": tag}
    assert max_receives == 5
    assert len([r for r in recorded.records("IngestFunction") if tag in r["body"]]) == max_receives


def dead_lettered_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(messages) == 1
    return json.loads(messages[0]["Body"])


def test_the_schedule_fires_scheduled_events(stack: LocalStack, recorded: Recorded) -> None:
    calls = wait_for(lambda: len(recorded.calls("PollFunction")) >= 2 and recorded.calls("PollFunction"))

    event = calls[-1]["event"]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["detail"] == {}
    assert event["resources"][0].startswith("arn:aws:events:us-east-1:123456789012:rule/")


def test_an_http_post_to_the_webhook_route_arrives_as_a_v2_event_and_its_response_returns(
        stack: LocalStack, recorded: Recorded) -> None:
    body = json.dumps({"id": "pred-1", "status": "completed"})

    response = requests.post(f"{stack.webhook_base_url}/webhook/job%2042?token=t0k&x=1&x=2", data=body, timeout=5,
                             headers={"Content-Type": "application/json", "Webhook-Id": "msg_1",
                                      "Webhook-Timestamp": "1700000000", "Webhook-Signature": "v3,abc"})

    assert response.status_code == 202
    assert response.headers["x-recorded"] == "yes"
    assert response.json() == {"job_id": "job 42"}
    event = recorded.calls("WebhookFunction")[-1]["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /webhook/{job_id}"
    assert event["rawPath"] == "/webhook/job%2042"
    assert event["rawQueryString"] == "token=t0k&x=1&x=2"
    assert event["queryStringParameters"] == {"token": "t0k", "x": "1,2"}
    assert event["pathParameters"] == {"job_id": "job 42"}
    assert event["headers"]["webhook-id"] == "msg_1"
    assert event["headers"]["webhook-signature"] == "v3,abc"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["stage"] == "$default"
    assert event["body"] == body
    assert event["isBase64Encoded"] is False


def test_requests_outside_the_template_routes_get_api_gateways_404(stack: LocalStack) -> None:
    assert requests.get(f"{stack.webhook_base_url}/webhook/job-1", timeout=5).status_code == 404
    assert requests.post(f"{stack.webhook_base_url}/elsewhere", timeout=5).status_code == 404


def test_only_completed_or_failed_jobs_reach_deliver(stack: LocalStack, recorded: Recorded) -> None:
    dynamodb = stack.client("dynamodb")
    tag = uuid.uuid4().hex[:8]

    def put(job_id: str, status: str) -> None:
        dynamodb.put_item(TableName=stack.table_name,
                          Item={"job_id": {"S": f"{job_id}-{tag}"}, "status": {"S": status}})

    # Given jobs written in this order
    put("a", "PROCESSING")
    put("c", "PROCESSING")
    dynamodb.update_item(TableName=stack.table_name, Key={"job_id": {"S": f"a-{tag}"}},
                         UpdateExpression="SET #s = :s", ExpressionAttributeNames={"#s": "status"},
                         ExpressionAttributeValues={":s": {"S": "COMPLETED"}})
    put("b", "FAILED")

    def delivered() -> list[dict[str, Any]]:
        return [r for r in recorded.records("DeliverFunction") if tag in json.dumps(r)]

    # When the last of them has reached deliver (records arrive in order)
    wait_for(lambda: any(r["dynamodb"]["NewImage"]["status"]["S"] == "FAILED" for r in delivered()))

    # Then deliver saw exactly the COMPLETED update and the FAILED insert, as stream records
    seen = [(r["eventName"], r["dynamodb"]["Keys"]["job_id"]["S"], r["dynamodb"]["NewImage"]["status"]["S"])
            for r in delivered()]
    assert seen == [("MODIFY", f"a-{tag}", "COMPLETED"), ("INSERT", f"b-{tag}", "FAILED")]
    modify = delivered()[0]
    assert modify["eventSource"] == "aws:dynamodb"
    assert modify["eventSourceARN"] == stack.physical["JobsTable.StreamArn"]
    assert modify["dynamodb"]["OldImage"]["status"] == {"S": "PROCESSING"}
    assert modify["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(modify["dynamodb"]["ApproximateCreationDateTime"], int)


def test_the_jobs_stream_is_read_once_and_each_change_reaches_every_trigger_whose_filter_keeps_it(
        stack: LocalStack, recorded: Recorded) -> None:
    # Given the template's two triggers on the jobs table's stream (deliver and long-form)
    template = load(REPO / "template.yaml")
    triggers = [t for f in template.functions.values() for t in f.triggers if type(t).__name__ == "StreamTrigger"]
    assert len(triggers) == 2
    tag = uuid.uuid4().hex[:8]
    dynamodb = stack.client("dynamodb")
    # When a talk's segment ends (long-form counts it) and a job completes (deliver copies it)
    dynamodb.put_item(TableName=stack.table_name, Item={
        "job_id": {"S": f"seg-{tag}"}, "status": {"S": "DELIVERED"}, "parent_id": {"S": "p"}})
    dynamodb.put_item(TableName=stack.table_name, Item={"job_id": {"S": f"done-{tag}"}, "status": {"S": "COMPLETED"}})

    def reached(function: str) -> list[str]:
        return [r["dynamodb"]["Keys"]["job_id"]["S"] for r in recorded.records(function) if tag in json.dumps(r)]

    # Then each reached the trigger whose filter keeps it, and only that one
    wait_for(lambda: reached("LongformFunction") and reached("DeliverFunction"))
    assert reached("LongformFunction") == [f"seg-{tag}"]
    assert reached("DeliverFunction") == [f"done-{tag}"]
    # and one reader took one iterator per shard for both triggers (AWS: at most two readers per shard)
    iterators = sum(n for (caller, _, operation), n in stack.request_counts.items()
                    if caller == "s2v-local-router" and operation == "GetShardIterator")
    shards = stack.client("dynamodbstreams").describe_stream(
        StreamArn=stack.physical["JobsTable.StreamArn"])["StreamDescription"]["Shards"]
    assert iterators == len(shards)


def test_a_failing_delivery_is_retried_then_sent_to_the_on_failure_queue(
        stack: LocalStack, recorded: Recorded) -> None:
    job_id = f"explode-{uuid.uuid4().hex[:8]}"
    stack.client("dynamodb").put_item(TableName=stack.table_name,
                                      Item={"job_id": {"S": job_id}, "status": {"S": "COMPLETED"}})
    sqs = stack.client("sqs")

    def failure_record() -> list[dict[str, Any]]:
        return sqs.receive_message(QueueUrl=stack.queue_url("DeliverDLQ"), WaitTimeSeconds=1).get("Messages", [])

    message = json.loads(wait_for(failure_record)[0]["Body"])

    attempts = [r for r in recorded.records("DeliverFunction") if job_id in json.dumps(r)]
    assert len(attempts) == 1 + 3  # the first try and MaximumRetryAttempts
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 4
    assert message["DDBStreamBatchInfo"]["streamArn"] == stack.physical["JobsTable.StreamArn"]
    assert message["DDBStreamBatchInfo"]["batchSize"] == 1


def test_invoke_calls_the_loaded_handler_synchronously(stack: LocalStack) -> None:
    event = json.loads((REPO / "events" / "webhook_completed.json").read_text())

    result = stack.invoke("WebhookFunction", event)

    assert result == {"statusCode": 202, "headers": {"content-type": "application/json", "x-recorded": "yes"},
                      "body": json.dumps({"job_id": event["pathParameters"]["job_id"]})}


def test_a_second_stack_in_the_same_process_is_refused(stack: LocalStack) -> None:
    with pytest.raises(RuntimeError, match="another LocalStack"):
        LocalStack(stack.root).start()


def test_a_missing_handler_file_stops_start_with_a_message_naming_it(tmp_path: Path) -> None:
    write_root(tmp_path)
    (tmp_path / "functions" / "poll" / "app.py").unlink()
    before = dict(os.environ)

    with pytest.raises(HandlerMissing, match=r"PollFunction: .*functions/poll/app\.py not found"):
        LocalStack(tmp_path).start()

    assert dict(os.environ) == before
