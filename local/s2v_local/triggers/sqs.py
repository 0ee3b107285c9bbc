"""SQS → function: Lambda's SQS event source (batching window, partial batch failures, redelivery)."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from s2v_local.runtime import FunctionRuntime
from s2v_local.template import SqsTrigger
from s2v_local.triggers import ROUTER, log
from s2v_local.triggers.host import TriggerHost


def s3_keys_as_aws_encodes(body: str) -> str:
    """moto URL-encodes the '/' in S3 notification keys (``inputs%2Ftalks%2Fa.png``); S3 itself
    leaves it (``inputs/talks/a.png``) and encodes the rest, space as '+'. Other bodies pass as is."""
    if '"aws:s3"' not in body:
        return body
    try:
        document = json.loads(body)
        for record in document["Records"]:
            s3_object = record["s3"]["object"]
            s3_object["key"] = quote_plus(unquote_plus(s3_object["key"]), safe="/")
    except (ValueError, KeyError, TypeError):
        return body
    return json.dumps(document)


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One SQS message as Lambda's SQS event source delivers it."""
    body = s3_keys_as_aws_encodes(message["Body"])
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        binary = value.get("BinaryValue")
        attributes[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_message_ids(response: Any, message_ids: list[str]) -> set[str]:
    """Which records to keep for redelivery, by Lambda's ReportBatchItemFailures rules: an empty
    or missing list is full success; an identifier that is empty or not in the batch fails it all."""
    if not isinstance(response, Mapping) or not response.get("batchItemFailures"):
        return set()
    failed = set()
    for item in response["batchItemFailures"]:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not identifier or identifier not in message_ids:
            return set(message_ids)
        failed.add(identifier)
    return failed


class SqsPoller:
    def __init__(self, stack: TriggerHost, runtime: FunctionRuntime, trigger: SqsTrigger) -> None:
        self.stack = stack
        self.runtime = runtime
        self.trigger = trigger
        self.queue_url = stack.queue_url(trigger.queue)
        self.queue_arn = str(stack.physical[f"{trigger.queue}.Arn"])
        assert stack.template is not None
        queue = stack.template.queues[trigger.queue]
        self.redelivery_seconds = (queue.visibility_timeout if stack.redelivery_seconds is None
                                   else stack.redelivery_seconds)
        limit = min(stack.ingest_concurrency, trigger.max_concurrency or stack.ingest_concurrency)
        self._slots = threading.Semaphore(limit)
        self._sqs = stack.client("sqs", caller=ROUTER)

    def run(self) -> None:
        stop = self.stack.stopping
        while not stop.is_set():
            # Only take messages when a worker is free, or they would sit invisible unprocessed.
            if not self._slots.acquire(timeout=0.2):
                continue
            try:
                messages = self._receive_batch()
            except Exception:
                log.exception("receiving from %s failed", self.trigger.queue)
                self._slots.release()
                stop.wait(1.0)
                continue
            if not messages:
                self._slots.release()
                continue
            self.stack.run_in_worker(functools.partial(self._process, messages),
                                     name=f"s2v-{self.runtime.function.logical_id}-batch")

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, count), WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"])
        return list(response.get("Messages", []))

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Long-poll, then keep collecting until BatchSize or the batching window closes."""
        messages = self._receive(self.trigger.batch_size, 1)
        if not messages:
            return []
        window_ends = time.monotonic() + self.trigger.batching_window_seconds
        stop = self.stack.stopping
        while len(messages) < self.trigger.batch_size and time.monotonic() < window_ends and not stop.is_set():
            more = self._receive(self.trigger.batch_size - len(messages), 0)
            messages += more
            if not more:
                stop.wait(min(0.1, max(0.0, window_ends - time.monotonic())))
        return messages

    def _process(self, messages: list[dict[str, Any]]) -> None:
        try:
            event = {"Records": [sqs_record(m, self.queue_arn, self.stack.pseudo.region) for m in messages]}
            ids = [m["MessageId"] for m in messages]
            try:
                response = self.runtime.invoke(event, source=f"sqs {self.trigger.queue} ({len(messages)})")
                failed = failed_message_ids(response, ids) if self.trigger.report_batch_item_failures else set()
            except Exception:
                log.exception("%s failed on a batch of %d", self.runtime.function.logical_id, len(messages))
                failed = set(ids)
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])])
            # Failed records stay in the queue; moto's redrive moves them to the DLQ after
            # maxReceiveCount receives, as SQS does.
            for message in messages:
                if message["MessageId"] in failed:
                    self._sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                        VisibilityTimeout=self.redelivery_seconds)
        except Exception:
            log.exception("could not settle a batch from %s", self.trigger.queue)
        finally:
            self._slots.release()
