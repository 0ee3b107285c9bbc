"""moto's item answers as plain JSON (motoserver.py) are the answers moto's own serializer gives: the
same requests, on generated items of every attribute type, through both paths."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.aws import client
from s2v_local import motoserver
from s2v_local.motoserver import MotoServer


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


names = st.text("abcdefghij_", min_size=1, max_size=6)
numbers = st.one_of(st.integers(-10**12, 10**12), st.decimals(-10**6, 10**6, places=4, allow_nan=False,
                                                              allow_infinity=False)).map(lambda n: str(n))
scalars = st.one_of(
    st.text(min_size=1, max_size=20).map(lambda t: {"S": t}),
    numbers.map(lambda n: {"N": n}),
    st.binary(min_size=1, max_size=12).map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(st.text(min_size=1, max_size=6), min_size=1, max_size=3).map(lambda s: {"SS": sorted(s)}),
    st.sets(st.integers(0, 999), min_size=1, max_size=3).map(lambda s: {"NS": sorted(str(n) for n in s)}),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda v: {"L": v}),
    st.dictionaries(names, inner, max_size=3).map(lambda v: {"M": v})), max_leaves=8)
items = st.dictionaries(names, values, max_size=6)


def answers(ddb: Any, table: str, item: dict[str, Any]) -> list[tuple[str, int, str, dict[str, Any]]]:
    """Every item operation the stack uses, on ``item``: (operation, status, content type, parsed body) each."""
    seen: list[tuple[str, int, str, dict[str, Any]]] = []

    def capture(response_dict: dict[str, Any], operation_model: Any, **_: Any) -> None:
        seen.append((operation_model.name, response_dict["status_code"], response_dict["headers"].get("content-type"),
                     json.loads(response_dict["body"] or b"{}")))

    ddb.meta.events.register("before-parse.dynamodb.*", capture)
    try:
        key = {"pk": {"S": "k"}}
        ddb.put_item(TableName=table, Item={**item, **key, "bucket": {"S": "due"}, "at": {"N": "1.5"}})
        ddb.put_item(TableName=table, Item={**key, "bucket": {"S": "due"}, "at": {"N": "2"}}, ReturnValues="ALL_OLD")
        ddb.put_item(TableName=table, Item={**item, **key, "bucket": {"S": "due"}, "at": {"N": "1.5"}})
        ddb.get_item(TableName=table, Key=key, ConsistentRead=True)
        ddb.get_item(TableName=table, Key={"pk": {"S": "missing"}})
        ddb.get_item(TableName=table, Key=key, ProjectionExpression="pk, #b", ExpressionAttributeNames={"#b": "bucket"})
        ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #v = :v ADD n :one",
                        ExpressionAttributeNames={"#v": "version"},
                        ExpressionAttributeValues={":v": {"N": "3"}, ":one": {"N": "1"}}, ReturnValues="ALL_NEW")
        ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #v = :v",
                        ExpressionAttributeNames={"#v": "version"}, ExpressionAttributeValues={":v": {"N": "4"}})
        ddb.query(TableName=table, KeyConditionExpression="pk = :k", ExpressionAttributeValues={":k": {"S": "k"}})
        ddb.query(TableName=table, IndexName="due", KeyConditionExpression="#b = :b AND #a <= :a", Limit=1,
                  ExpressionAttributeNames={"#b": "bucket", "#a": "at"},
                  ExpressionAttributeValues={":b": {"S": "due"}, ":a": {"N": "5"}})
        ddb.query(TableName=table, IndexName="due", Select="COUNT", KeyConditionExpression="#b = :b",
                  ExpressionAttributeNames={"#b": "bucket"}, ExpressionAttributeValues={":b": {"S": "due"}})
        ddb.scan(TableName=table, Limit=5)
        ddb.batch_get_item(RequestItems={table: {"Keys": [key, {"pk": {"S": "missing"}}], "ConsistentRead": True}})
        ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": key}}])
        ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
    finally:
        ddb.meta.events.unregister("before-parse.dynamodb.*", capture)
    return seen


def fresh_table(ddb: Any, name: str) -> str:
    # (list_tables answers 100 names a page, and the session's moto holds more: delete by name)
    with contextlib.suppress(ddb.exceptions.ResourceNotFoundException):
        ddb.delete_table(TableName=name)
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "bucket", "AttributeType": "S"},
                                           {"AttributeName": "at", "AttributeType": "N"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     GlobalSecondaryIndexes=[{"IndexName": "due", "Projection": {"ProjectionType": "ALL"},
                                              "KeySchema": [{"AttributeName": "bucket", "KeyType": "HASH"},
                                                            {"AttributeName": "at", "KeyType": "RANGE"}]}])
    return name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item=items)
def test_item_answers_as_plain_json_equal_motos_serialized_answers(moto: MotoServer, item: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    item = {k: v for k, v in item.items() if k not in ("pk", "bucket", "at", "version", "n")}
    ddb = client("dynamodb", moto.endpoint_url)
    name = f"answers-{uuid.uuid4().hex[:8]}"  # the same table, made afresh for each path
    monkeypatch.setattr(motoserver, "plain_json_item_answers", False)
    by_moto = answers(ddb, fresh_table(ddb, name), item)
    monkeypatch.setattr(motoserver, "plain_json_item_answers", True)
    as_json = answers(ddb, fresh_table(ddb, name), item)
    assert as_json == by_moto
    assert [op for op, *_ in as_json].count("GetItem") == 3
