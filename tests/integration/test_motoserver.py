"""Our moto server: streams survive failed transactions, requests are counted, index queries keep their order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from helpers.aws import client
from s2v_local.motoserver import MotoServer


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def table(moto: MotoServer) -> Iterator[tuple[Any, Any, str]]:
    ddb = client("dynamodb", moto.endpoint_url)
    name = "stream-table"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    streams = client("dynamodbstreams", moto.endpoint_url)
    yield ddb, streams, name
    ddb.delete_table(TableName=name)


def put(id_: str, *, if_absent: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"TableName": "stream-table", "Item": {"id": {"S": id_}}}
    if if_absent:
        item["ConditionExpression"] = "attribute_not_exists(id)"
    return {"Put": item}


def test_a_failed_transaction_neither_kills_open_stream_iterators_nor_leaves_records(table: Any) -> None:
    ddb, streams, name = table
    arn = ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]

    ddb.transact_write_items(TransactItems=[put("a")])
    with pytest.raises(ClientError, match="TransactionCanceled"):
        # "b" is written first, then "a" fails its condition: the whole transaction rolls back.
        ddb.transact_write_items(TransactItems=[put("b"), put("a")])
    ddb.transact_write_items(TransactItems=[put("c")])

    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in records] == ["a", "c"]
    assert "Item" not in ddb.get_item(TableName=name, Key={"id": {"S": "b"}})


def test_requests_are_counted_by_caller_service_and_operation(moto: MotoServer) -> None:
    import boto3
    from botocore.config import Config

    before = dict(moto.request_counts)
    tagged = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(user_agent_extra="s2v-bench"))
    s3 = client("s3", moto.endpoint_url)
    tagged.create_bucket(Bucket="counted")
    s3.put_object(Bucket="counted", Key="k", Body=b"x")
    s3.head_object(Bucket="counted", Key="k")
    s3.get_object(Bucket="counted", Key="k")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "counted", "Key": "k"})
    assert requests.get(url, timeout=10).content == b"x"

    after = moto.request_counts
    grew = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert grew == {("s2v-bench", "s3", "CreateBucket"): 1, ("app", "s3", "PutObject"): 1,
                    ("app", "s3", "HeadObject"): 1, ("app", "s3", "GetObject"): 2}


def test_sqs_still_drops_messages_past_their_retention_period(moto: MotoServer) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    sqs = client("sqs", moto.endpoint_url)
    url = sqs.create_queue(QueueName="retention", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    queue = sqs_backends[DEFAULT_ACCOUNT_ID][sqs.meta.region_name].get_queue("retention")
    queue._messages[0].sent_timestamp -= 120_000  # sent two minutes ago: past the 60 s retention
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)

    sqs.send_message(QueueUrl=url, MessageBody="fresh")
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert bodies == ["fresh"]


def test_stream_records_keep_their_aws_shape(table: Any) -> None:
    import time
    from datetime import UTC, datetime

    ddb, streams, name = table
    arn = ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    item = {"id": {"S": "x"}, "n": {"N": "1.5"}, "history": {"L": [{"M": {"at": {"N": "2"}}}]}}
    ddb.put_item(TableName=name, Item=item)
    ddb.put_item(TableName=name, Item={**item, "n": {"N": "2"}})

    response = streams.get_records(ShardIterator=iterator)
    first, second = response["Records"]
    assert (first["eventName"], second["eventName"]) == ("INSERT", "MODIFY")
    assert first["dynamodb"]["NewImage"] == item and second["dynamodb"]["OldImage"] == item
    assert int(second["dynamodb"]["SequenceNumber"]) > int(first["dynamodb"]["SequenceNumber"])
    created = first["dynamodb"]["ApproximateCreationDateTime"]
    assert isinstance(created, datetime) and abs(created.timestamp() - time.time()) < 60
    assert created.tzinfo is not None and created.utcoffset() == UTC.utcoffset(None)
    assert streams.get_records(ShardIterator=response["NextShardIterator"])["Records"] == []


def test_every_committed_write_reaches_the_stream_once_while_failing_transactions_roll_back(
    moto: MotoServer,
) -> None:
    import threading
    import time
    import uuid

    # Given a streamed table, an item that makes a transaction fail after its first write, and a
    # reader following the stream as the local stack's stream reader does
    ddb, streams = client("dynamodb", moto.endpoint_url), client("dynamodbstreams", moto.endpoint_url)
    name = f"tx-stream-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    ddb.put_item(TableName=name, Item={"id": {"S": "taken"}})
    arn = ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    writes = 300
    seen: list[str] = []
    writing = threading.Event()
    writing.set()
    failed: list[BaseException] = []

    def fail_transactions() -> None:
        # Ten "rolled-back-…" items are written first, then "taken" fails its condition: all roll back.
        doomed = 0
        while writing.is_set():
            doomed += 1
            try:
                ddb.transact_write_items(TransactItems=[
                    *({"Put": {"TableName": name, "Item": {"id": {"S": f"rolled-back-{doomed}-{n}"}}}}
                      for n in range(10)),
                    {"Put": {"TableName": name, "Item": {"id": {"S": "taken"}},
                             "ConditionExpression": "attribute_not_exists(id)"}}])
            except ClientError as error:
                if "TransactionCanceled" not in str(error):
                    failed.append(error)
            except BaseException as error:
                failed.append(error)

    def read_stream() -> None:
        position = iterator
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (writing.is_set() or len(seen) < writes):
            response = streams.get_records(ShardIterator=position, Limit=100)
            seen.extend(r["dynamodb"]["Keys"]["id"]["S"] for r in response["Records"])
            position = response["NextShardIterator"]
            if not response["Records"] and not writing.is_set():
                break  # drained

    threads = [threading.Thread(target=fail_transactions), threading.Thread(target=fail_transactions),
               threading.Thread(target=read_stream)]
    for thread in threads:
        thread.start()
    try:
        # When committed writes happen meanwhile
        for n in range(writes):
            ddb.put_item(TableName=name, Item={"id": {"S": f"committed-{n}"}})
    finally:
        writing.clear()
        for thread in threads:
            thread.join(timeout=90)
        ddb.delete_table(TableName=name)

    # Then the reader saw each committed write once, in order, and nothing rolled back
    assert failed == []
    committed = [key for key in seen if key.startswith("committed-")]
    assert len(committed) == writes and committed == [f"committed-{n}" for n in range(writes)], (
        f"{writes - len(set(committed))} of {writes} committed writes missing from the stream")
    assert [key for key in seen if key.startswith("rolled-back-")] == []


def test_index_queries_keep_dynamodb_order_for_number_and_string_keys(moto: MotoServer) -> None:
    # moto's sort is replaced (native keys, for speed): the order must stay DynamoDB's, numbers by
    # value (not as text), ties on the index key broken by the table key, both directions.
    ddb = client("dynamodb", moto.endpoint_url)
    name = "order-table"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t in
                                           (("id", "S"), ("bucket", "S"), ("at", "N"), ("label", "S"))],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     GlobalSecondaryIndexes=[
                         {"IndexName": "by-at", "KeySchema": [{"AttributeName": "bucket", "KeyType": "HASH"},
                                                              {"AttributeName": "at", "KeyType": "RANGE"}],
                          "Projection": {"ProjectionType": "ALL"}},
                         {"IndexName": "by-label", "KeySchema": [{"AttributeName": "bucket", "KeyType": "HASH"},
                                                                 {"AttributeName": "label", "KeyType": "RANGE"}],
                          "Projection": {"ProjectionType": "KEYS_ONLY"}}])
    values = ["10", "9", "-2.5", "100", "0.001", "9", "1e3", "-10"]
    labels = ["b", "a", "B", "aa", "", "a", "Z", "é"]
    for i, (at, label) in enumerate(zip(values, labels, strict=True)):
        item = {"id": {"S": f"id-{7 - i}"}, "bucket": {"S": "x"}, "at": {"N": at}}
        if label:
            item["label"] = {"S": label}
        ddb.put_item(TableName=name, Item=item)
    ddb.put_item(TableName=name, Item={"id": {"S": "other"}, "bucket": {"S": "y"}, "at": {"N": "5"}})

    def ids(index: str, forward: bool) -> list[str]:
        pages = ddb.get_paginator("query").paginate(
            TableName=name, IndexName=index, KeyConditionExpression="#b = :b",
            ExpressionAttributeNames={"#b": "bucket"}, ExpressionAttributeValues={":b": {"S": "x"}},
            ScanIndexForward=forward, PaginationConfig={"PageSize": 3})
        return [i["id"]["S"] for p in pages for i in p["Items"]]

    by_value = sorted(((float(v), f"id-{7 - i}") for i, v in enumerate(values)))
    assert ids("by-at", True) == [i for _, i in by_value]
    assert ids("by-at", False) == [i for _, i in reversed(by_value)]
    by_label = sorted((label, f"id-{7 - i}") for i, label in enumerate(labels) if label)
    assert ids("by-label", True) == [i for _, i in by_label]
    ddb.delete_table(TableName=name)


@pytest.mark.parametrize("write", ["put", "multipart", "copy", "presigned put"])
@pytest.mark.parametrize("key_bytes", [1025, 1100])
def test_keys_longer_than_1024_utf8_bytes_are_refused_like_s3(moto: MotoServer, write: str, key_bytes: int) -> None:
    # Given a bucket and keys just within and just past S3's limit (1,024 bytes of UTF-8, not characters)
    s3 = client("s3", moto.endpoint_url)
    s3.create_bucket(Bucket="long-keys")
    s3.put_object(Bucket="long-keys", Key="source", Body=b"x")
    fits = "inputs/" + "é" * ((1024 - 7) // 2) + "a" * ((1024 - 7) % 2)
    too_long = "inputs/" + "é" * ((key_bytes - 7) // 2) + "a" * ((key_bytes - 7) % 2)
    assert len(fits.encode()) == 1024 and len(too_long.encode()) == key_bytes

    def attempt(key: str) -> None:
        if write == "put":
            s3.put_object(Bucket="long-keys", Key=key, Body=b"x")
        elif write == "multipart":
            s3.create_multipart_upload(Bucket="long-keys", Key=key)
        elif write == "copy":
            s3.copy_object(Bucket="long-keys", Key=key, CopySource={"Bucket": "long-keys", "Key": "source"})
        else:
            url = s3.generate_presigned_url("put_object", Params={"Bucket": "long-keys", "Key": key})
            response = requests.put(url, data=b"x", timeout=10)
            if response.status_code >= 300:
                raise ClientError({"Error": {"Code": "KeyTooLongError" if b"KeyTooLongError" in response.content
                                             else str(response.status_code)}}, "PutObject")

    # When each is written, Then the 1,024-byte key is stored and the longer one is refused as S3 refuses it
    attempt(fits)
    with pytest.raises(ClientError) as refused:
        attempt(too_long)
    assert refused.value.response["Error"]["Code"] == "KeyTooLongError"
    assert all(len(o["Key"].encode()) <= 1024
               for o in s3.list_objects_v2(Bucket="long-keys").get("Contents", []))
