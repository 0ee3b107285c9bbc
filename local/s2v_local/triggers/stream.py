"""Table stream → function: Lambda's DynamoDB stream event source (filters, parallel lanes, retries,
bisect on error, on-failure queue)."""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from s2v_local import patterns
from s2v_local.runtime import FunctionRuntime
from s2v_local.template import StreamTrigger
from s2v_local.triggers import ROUTER, log
from s2v_local.triggers.host import TriggerHost


def _json_safe(value: Any) -> Any:
    """boto3 hands binary attributes back as bytes; Lambda's JSON event carries base64 text."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_json_safe(v) for v in value]
    return value


def stream_record(record: Mapping[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A dynamodbstreams get_records record as Lambda's DynamoDB event source delivers it."""
    data = dict(record["dynamodb"])
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        data["ApproximateCreationDateTime"] = int(created.timestamp())
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": _json_safe(data),
        "eventSourceARN": stream_arn,
    }


def partition_lanes(records: list[dict[str, Any]], factor: int) -> list[list[dict[str, Any]]]:
    """Lambda's ParallelizationFactor: records spread over up to ``factor`` concurrent lanes by
    partition key (a DynamoDB item's key), so one item's changes stay in order in one lane."""
    lanes: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        key = json.dumps(record.get("dynamodb", {}).get("Keys", {}), sort_keys=True)
        lane = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % max(1, factor)
        lanes.setdefault(lane, []).append(record)
    return list(lanes.values()) or [[]]


class StreamReader:
    """One reader per table stream, as AWS allows at most two per shard: each batch read is fanned out
    to every trigger on the stream (``StreamConsumer``), a record converted to Lambda's shape only if
    some trigger's filter keeps it."""

    def __init__(self, stack: TriggerHost, table: str, consumers: list[StreamConsumer]) -> None:
        self.stack = stack
        self.table = table
        self.consumers = consumers
        self.stream_arn = str(stack.physical[f"{table}.StreamArn"])
        self._streams = stack.client("dynamodbstreams", caller=ROUTER)
        shards = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        trim = any(c.trigger.starting_position == "TRIM_HORIZON" for c in consumers)
        position = "TRIM_HORIZON" if trim else "LATEST"
        self._iterators = {
            s["ShardId"]: self._streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=s["ShardId"],
                                                           ShardIteratorType=position)["ShardIterator"]
            for s in shards
        }

    def run(self) -> None:
        threads = [threading.Thread(target=c.run, name=f"s2v-{c.runtime.function.logical_id}-{c.trigger.name}",
                                    daemon=True) for c in self.consumers]
        for thread in threads:
            thread.start()
        self._read()

    def _read(self) -> None:
        stop = self.stack.stopping
        idle_wait = 0.05
        while not stop.is_set():
            busy = False
            for shard_id, iterator in list(self._iterators.items()):
                try:
                    response = self._streams.get_records(ShardIterator=iterator, Limit=100)
                except Exception:
                    log.exception("reading the %s stream failed", self.table)
                    stop.wait(1.0)
                    continue
                self._iterators[shard_id] = response["NextShardIterator"]
                raw = response.get("Records", [])
                busy = busy or bool(raw)
                if raw:
                    self._fan_out(raw, shard_id)
                if stop.is_set():
                    return
            # Back off while the table is quiet: every moto get_records call leaves an iterator behind.
            idle_wait = 0.05 if busy else min(idle_wait * 2, 0.5)
            if not busy:
                stop.wait(idle_wait)

    def _fan_out(self, raw: list[dict[str, Any]], shard_id: str) -> None:
        converted: dict[int, dict[str, Any]] = {}

        def lambda_record(index: int) -> dict[str, Any]:
            if index not in converted:
                converted[index] = stream_record(raw[index], self.stream_arn, self.stack.pseudo.region)
            return converted[index]

        for consumer in self.consumers:
            # Filtered-out records are consumed, as Lambda drops them before batching. The filters
            # read the record as boto3 parsed it: the same keys and attribute values as Lambda's
            # shape, whose conversion is paid only for the records kept.
            kept = [lambda_record(i) for i, record in enumerate(raw)
                    if patterns.matches_any(consumer.trigger.filter_patterns, record)]
            if kept:
                consumer.submit(kept, shard_id)


class StreamConsumer:
    """One stream trigger: its batches in order, in their parallel lanes, with Lambda's retries,
    bisect and on-failure queue. Each has its own thread, so a slow function (a stitch) never holds
    up another trigger's records."""

    def __init__(self, stack: TriggerHost, runtime: FunctionRuntime, trigger: StreamTrigger) -> None:
        self.stack = stack
        self.runtime = runtime
        self.trigger = trigger
        self.stream_arn = str(stack.physical[f"{trigger.table}.StreamArn"])
        self.on_failure_url = stack.queue_url(trigger.on_failure_queue) if trigger.on_failure_queue else None
        self._batches: queue.Queue[tuple[list[dict[str, Any]], str]] = queue.Queue()
        self._pool = ThreadPoolExecutor(trigger.parallelization_factor, thread_name_prefix=f"s2v-{trigger.name}")

    def submit(self, records: list[dict[str, Any]], shard_id: str) -> None:
        self._batches.put((records, shard_id))

    def run(self) -> None:
        try:
            while not self.stack.stopping.is_set():
                try:
                    records, shard_id = self._batches.get(timeout=0.2)
                except queue.Empty:
                    continue
                lanes = partition_lanes(records, self.trigger.parallelization_factor)
                if len(lanes) == 1:
                    self._run_lane(lanes[0], shard_id)
                else:
                    list(self._pool.map(lambda lane, shard=shard_id: self._run_lane(lane, shard), lanes))
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run_lane(self, records: list[dict[str, Any]], shard_id: str) -> None:
        for start in range(0, len(records), self.trigger.batch_size):
            if self.stack.stopping.is_set():
                return
            self._deliver(records[start:start + self.trigger.batch_size], shard_id, self.trigger.max_retries)

    def _deliver(self, batch: list[dict[str, Any]], shard_id: str, retries_left: int) -> None:
        """In order, with Lambda's stream error handling: retry, bisect, then the on-failure queue."""
        attempts = 0
        while True:
            attempts += 1
            try:
                self.runtime.invoke({"Records": batch},
                                    source=f"stream {self.trigger.table} ({len(batch)})")
                return
            except Exception:
                log.exception("%s failed on %d stream record(s), attempt %d",
                              self.runtime.function.logical_id, len(batch), attempts)
            if self.stack.stopping.is_set():
                return
            if self.trigger.bisect_on_error and len(batch) > 1:
                middle = len(batch) // 2
                self._deliver(batch[:middle], shard_id, retries_left)
                self._deliver(batch[middle:], shard_id, retries_left)
                return
            if retries_left == 0:
                self._send_to_on_failure(batch, shard_id, attempts)
                return
            retries_left = retries_left - 1 if retries_left > 0 else retries_left
            self.stack.stopping.wait(min(0.2 * attempts, 2.0))

    def _send_to_on_failure(self, batch: list[dict[str, Any]], shard_id: str, attempts: int) -> None:
        if self.on_failure_url is None:
            log.error("%s: dropping %d stream record(s) after %d attempts (no on-failure destination)",
                      self.runtime.function.logical_id, len(batch), attempts)
            return
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        # Lambda sends the batch's coordinates, not its records: read them back from the stream.
        message = {
            "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": self.runtime.arn,
                               "condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first.get("SequenceNumber"),
                "endSequenceNumber": last.get("SequenceNumber"),
                "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime")),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        sqs = self.stack.client("sqs", caller=ROUTER)
        sqs.send_message(QueueUrl=self.on_failure_url, MessageBody=json.dumps(message))
        log.error("%s: %d stream record(s) sent to %s after %d attempts", self.runtime.function.logical_id,
                  len(batch), self.trigger.on_failure_queue, attempts)


def _iso(epoch: Any) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
