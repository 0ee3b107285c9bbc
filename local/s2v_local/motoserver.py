"""moto's server on loopback, with DynamoDB requests made linearizable and every request counted.

moto's backends are plain Python objects without locks: two concurrent conditional writes to one
item can both pass their condition, which real DynamoDB never allows. s2v's exactly-once and
spend-guard guarantees rest on those conditions, so DynamoDB calls are serialized here, and
DynamoDB Streams calls with them, so a stream reader never sees a transaction half done.

Requests are counted by (caller, service, operation) for bench/'s cost model. The caller is the
tag a client adds to its User-Agent (``user_agent_extra``), or "app" without one.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from boto3.dynamodb.types import TypeSerializer
from botocore.utils import merge_dicts
from moto.core.responses import ActionContext, ActionResult
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import find_nested_key
from moto.dynamodb.responses import DynamoResult
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs.models import SQSBackend
from werkzeug.serving import make_server

from s2v_local import s3_conditions


def _transact_with_item_backups(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto backs up a TransactWriteItems by deep-copying every table it touches, and on failure
    puts the copies in place of the tables. That cost grew with the table and its stream (47 ms
    a transaction after a 100-pair burst), and the copied table held a new stream shard, so every
    open shard iterator (the stream reader's) read a dead one: after one failed transaction
    nothing more was delivered. Here tables are not copied; the transaction's own items and the
    stream's length are saved, and put back on failure. (Calls, stream reads included, are serialized
    by _serialize_dynamodb: no reader sees the records taken back.)"""

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> Any:
        saved: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            key = op.get("Item") if op_type == "Put" else op.get("Key")
            if table is None or not isinstance(key, dict) or table.hash_key_attr not in key:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr in key else None
            saved.append((table, hash_value, range_value, copy.deepcopy(_stored(table, hash_value, range_value))))
        streams = {id(t): (t.stream_shard, len(t.stream_shard.items)) for t, *_ in saved if t.stream_shard}
        Table.__deepcopy__ = _no_copy  # type: ignore[attr-defined]
        try:
            return original(backend, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(saved):
                _restore(table, hash_value, range_value, item)
            for shard, length in streams.values():
                del shard.items[length:]
            raise
        finally:
            del Table.__deepcopy__  # type: ignore[attr-defined]

    return transact_write_items


def _no_copy(table: Table, memo: dict[int, Any]) -> Table:
    return table


def _stored(table: Table, hash_value: Any, range_value: Any) -> Any:
    if range_value is None:
        return table.items.get(hash_value)
    return table.items.get(hash_value, {}).get(range_value)


def _restore(table: Table, hash_value: Any, range_value: Any, item: Any) -> None:
    if range_value is None:
        if item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item
    elif item is None:
        table.items.get(hash_value, {}).pop(range_value, None)
    else:
        table.items[hash_value][range_value] = item


DynamoDBBackend.transact_write_items = _transact_with_item_backups(  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items)
s3_conditions.install()  # CopyObject's conditions enforced, each conditional write atomic, as on AWS


_serializer = TypeSerializer()


def _sorted_by_native_keys(table: Table, hash_key_attrs: list[str], range_key_attrs: list[str | None],
                           items: list[Any]) -> list[Any]:
    """moto sorts a query's candidates with tuples of its DynamoType objects as keys, and a
    DynamoType compares by converting its value (``cast_value``: a Decimal for a number) at every
    comparison: at 10,000 jobs that was 270,000 conversions and about 0.6 s per query of the
    dashboard's jobs page. Converting once per item gives the same order (``__lt__`` and
    ``__eq__`` compare exactly those values)."""
    attrs = table._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
    items.sort(key=lambda item: tuple(item.attrs[attr].cast_value for attr in attrs))
    return items


def _all_items_by_native_keys(table: Table) -> list[Any]:
    """moto's ``all_items`` (every item, in key order), sorted as in ``_sorted_by_native_keys``."""
    items: list[Any] = []
    for hash_set in table.items.values():
        if table.range_key_attr:
            items.extend(hash_set.values())
        else:
            items.append(hash_set)
    return sorted(items, key=lambda x: (x.hash_key.cast_value, x.range_key.cast_value) if x.range_key
                  else x.hash_key.cast_value)


def _project_from_one_json(item: Item, projection_expressions: list[list[str]]) -> Item:
    """moto's ``Item.project``, with the item turned into JSON once instead of once per attribute
    asked for (the dashboard's list asks for 12: 12 conversions of a ~2.4 KB item per row)."""
    whole = item.to_regular_json()
    result: dict[str, Any] = {}
    for expression in projection_expressions:
        merge_dicts(result, find_nested_key(expression, whole))
    return Item(hash_key=item.hash_key, range_key=item.range_key, attrs=_serializer.serialize(result)["M"])


Item.project = _project_from_one_json  # type: ignore[method-assign,assignment]
Table.sorted_items = _sorted_by_native_keys  # type: ignore[method-assign,assignment]
Table.all_items = _all_items_by_native_keys  # type: ignore[method-assign,assignment]


def _retention_check_in_constant_time(backend: SQSBackend, queue_name: str, message: Any) -> bool:
    """moto checks each received message against the queue's retention period by building all of
    the queue's attributes, which counts every message in it: with 2000 S3 notifications waiting,
    a 10-message receive walked the queue some 50 times and took a quarter of the machine. The
    period is one attribute; read it directly."""
    queue = backend.get_queue(queue_name)
    retention = int(queue.message_retention_period)  # type: ignore[attr-defined]
    return retention + message.sent_timestamp / 1000 > time.time()


SQSBackend.is_message_valid_based_on_retention_period = _retention_check_in_constant_time  # type: ignore[method-assign,assignment]


def _get_records_as_json(handler: DynamoDBStreamsHandler) -> str:
    """moto's generic response serializer walks every attribute of every stream record against the
    API model: 36 ms per GetRecords of full job images, the stack's largest cost per job. The
    records are already in DynamoDB's wire format, so plain JSON is the same answer."""
    limit = handler._get_param("Limit") or 1000
    result = handler.backend.get_records(handler._get_param("ShardIterator"), limit)
    return json.dumps(result, default=_epoch_seconds)


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, datetime):  # moto's naive UTC; the JSON protocol sends epoch seconds
        return value.replace(tzinfo=UTC).timestamp() if value.tzinfo is None else value.timestamp()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _wire_value(value: Any) -> Any:
    """What the JSON protocol sends for the values moto keeps as Python objects."""
    if isinstance(value, bytes | bytearray):  # a B / BS attribute: base64 text
        return base64.b64encode(value).decode()
    return _epoch_seconds(value)


DynamoDBStreamsHandler.get_records = _get_records_as_json  # type: ignore[assignment]


# Item operations answered as plain JSON. moto builds their answer (DynamoResult) already in
# DynamoDB's wire format, then walks it attribute by attribute against the API model to write the
# same JSON: ~90 % of a GetItem of a job item (8.7 -> 1.6 ms). The headers still come from moto's
# serializer, given an empty result (cheap). test_motoserver checks both answers are the same.
PLAIN_JSON_ITEM_OPERATIONS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
                                        "BatchGetItem", "TransactGetItems"})
plain_json_item_answers = True  # False: every answer through moto's serializer (the equivalence test)
_serialized_by_moto = DynamoResult.execute_result


def _item_answer_as_json(result: DynamoResult, context: ActionContext) -> Any:
    if not plain_json_item_answers or context.operation_model.name not in PLAIN_JSON_ITEM_OPERATIONS:
        return _serialized_by_moto(result, context)
    status, headers, _ = ActionResult({}).execute_result(context)
    answer = result.result
    if isinstance(answer, dict):  # as the serializer does: only what the API's output shape names
        members = context.operation_model.output_shape.members  # type: ignore[union-attr]
        answer = {k: v for k, v in answer.items() if k in members}
    return status, headers, json.dumps(answer, default=_wire_value)


DynamoResult.execute_result = _item_answer_as_json  # type: ignore[method-assign,assignment]


class _CachedDispatcher(DomainDispatcherApplication):
    """moto finds the service of every request by listing its own package directory on disk
    (``list_of_moto_modules``), ~12 % of its CPU under load; the answer per host never changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backend_for_host: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backend_for_host:
            self._backend_for_host[host] = super().get_backend_for_host(host)
        return self._backend_for_host[host]


_SERIALIZED = ("DynamoDB_", "DynamoDBStreams_")  # X-Amz-Target prefixes: tables and their streams


def _serialize_dynamodb(app: Callable[..., Any]) -> Callable[..., Iterable[bytes]]:
    """One DynamoDB or DynamoDB Streams request at a time. Stream reads take the writes' lock: a
    transaction appends its items' stream records as it goes and takes them back if a condition
    fails, so a GetRecords in between returned records that were then withdrawn, and the next
    write reused their sequence numbers, which the reader's iterator had already passed: that
    committed write was never delivered. Under the lock a reader sees only committed records."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_SERIALIZED):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return wrapped


# S3 refuses object keys longer than 1,024 bytes of UTF-8 (KeyTooLongError); moto stores them.
S3_MAX_KEY_BYTES = 1024
_KEY_TOO_LONG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>KeyTooLongError</Code>'
                 b"<Message>Your key is too long</Message></Error>")


def _refuse_long_keys(app: Callable[..., Any]) -> Callable[..., Iterable[bytes]]:
    """Answer a write of an over-long key as S3 does, so the local stack cannot store (and ingest)
    a key that AWS would refuse. Path-style requests only: the local stack's clients use them."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _creates_object(environ) and _s3_key_bytes(environ) > S3_MAX_KEY_BYTES:
            start_response("400 Bad Request", [("Content-Type", "application/xml"),
                                               ("Content-Length", str(len(_KEY_TOO_LONG)))])
            return [_KEY_TOO_LONG]
        return app(environ, start_response)

    return wrapped


def _creates_object(environ: dict[str, Any]) -> bool:
    if environ.get("HTTP_X_AMZ_TARGET") or environ.get("REQUEST_METHOD") not in ("PUT", "POST"):
        return False
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if environ["REQUEST_METHOD"] == "POST":
        return "uploads" in query  # CreateMultipartUpload (a form POST names its key in the body)
    return not query.keys() & {"partNumber", "tagging", "acl", "retention", "legal-hold"}


def _s3_key_bytes(environ: dict[str, Any]) -> int:
    # WSGI carries the decoded path as latin-1 text, one character per byte of the request.
    path = environ.get("PATH_INFO", "").encode("latin-1", "replace")
    _bucket, _, key = path.lstrip(b"/").partition(b"/")
    return len(key)


CALLER_TAGS = ("s2v-bench", "s2v-local-router")
_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


def describe_request(environ: dict[str, Any]) -> tuple[str, str, str]:
    """(caller, service, operation) of one request to moto."""
    agent = environ.get("HTTP_USER_AGENT", "")
    caller = next((tag for tag in CALLER_TAGS if tag in agent), "app")
    query = environ.get("QUERY_STRING", "")
    params = parse_qs(query)
    found = _SERVICE.search(environ.get("HTTP_AUTHORIZATION", "")) or _SERVICE.search(
        "Credential=" + params.get("X-Amz-Credential", [""])[0])  # SigV4 presigned URL
    service = found.group(1) if found else "s3" if "AWSAccessKeyId" in params else "unknown"  # SigV2: S3 only
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return caller, service, target.rsplit(".", 1)[-1]
    return caller, service, _s3_operation(environ, parse_qs(query, keep_blank_values=True))


def _s3_operation(environ: dict[str, Any], query: dict[str, list[str]]) -> str:
    method = environ.get("REQUEST_METHOD", "GET")
    object_key = "/" in environ.get("PATH_INFO", "").strip("/")
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        if "tagging" in query:
            return "PutObjectTagging"
        if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
            return "CopyObject"
        return "PutObject" if object_key else "CreateBucket"
    if method == "POST":
        return ("CreateMultipartUpload" if "uploads" in query else
                "CompleteMultipartUpload" if "uploadId" in query else
                "DeleteObjects" if "delete" in query else "PostObject")
    if method == "GET":
        if not object_key:
            return "ListObjects"
        return "GetObjectTagging" if "tagging" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject" if object_key else "HeadBucket"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return method


class _Counted:
    """Counts each request, and the CPU time moto spends answering it."""

    def __init__(self, app: Callable[..., Any], counts: Counter[tuple[str, str, str]]) -> None:
        self.app, self.counts = app, counts
        self.cpu_seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        key = describe_request(environ)
        started = time.thread_time()
        body = list(self.app(environ, start_response))
        used = time.thread_time() - started
        with self._lock:
            self.counts[key] += 1
            self.cpu_seconds += used
        return body


class MotoServer(ThreadedMotoServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self.request_counts: Counter[tuple[str, str, str]] = Counter()
        self._counted: _Counted | None = None

    @property
    def cpu_seconds(self) -> float:
        """CPU time moto has spent answering requests (its threads only)."""
        return self._counted.cpu_seconds if self._counted is not None else 0.0

    def _server_entry(self) -> None:
        moto_app = _refuse_long_keys(_serialize_dynamodb(_CachedDispatcher(create_backend_app)))
        app = self._counted = _Counted(moto_app, self.request_counts)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"
