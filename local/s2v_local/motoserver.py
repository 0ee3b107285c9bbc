"""moto's server on loopback, with DynamoDB requests made linearizable and every request counted.

moto's backends are plain Python objects without locks: two concurrent conditional writes to one
item can both pass their condition, which real DynamoDB never allows. s2v's exactly-once and
spend-guard guarantees rest on those conditions, so DynamoDB calls are serialized here.

Requests are counted by (caller, service, operation) for bench/'s cost model. The caller is the
tag a client adds to its User-Agent (``user_agent_extra``), or "app" without one.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import StreamShard
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


def _keep_stream_shard(shard: StreamShard, memo: dict[int, Any]) -> StreamShard:
    return shard  # see _transact_keeping_the_stream


def _transact_keeping_the_stream(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto deep-copies every table before a TransactWriteItems and, when the transaction fails,
    puts the copies in place of the tables. Two problems with the stream:

    - the copy held a new stream shard, so every open shard iterator (the local stream reader's)
      went on reading the discarded one: after one failed transaction nothing was delivered;
    - the copy included every stream record ever written, so transactions slowed as the table aged.

    So the copy shares the live shard, and a failure cuts off the records it added and re-points
    the shard at the restored table. (Calls are serialized by _serialize_dynamodb.)"""

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> Any:
        shards = {name: (table.stream_shard, len(table.stream_shard.items))
                  for name, table in backend.tables.items() if table.stream_shard is not None}
        try:
            return original(backend, transact_items)
        except Exception:
            for name, (shard, length) in shards.items():
                restored = backend.tables.get(name)
                del shard.items[length:]
                if restored is not None:
                    shard.table = restored
                    restored.stream_shard = shard
            raise

    return transact_write_items


StreamShard.__deepcopy__ = _keep_stream_shard  # type: ignore[attr-defined]
DynamoDBBackend.transact_write_items = _transact_keeping_the_stream(  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items)


def _serialize_dynamodb(app: Callable[..., Any]) -> Callable[..., Iterable[bytes]]:
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return wrapped


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


def _count_requests(app: Callable[..., Any], counts: Counter[tuple[str, str, str]]) -> Callable[..., Any]:
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        key = describe_request(environ)
        with lock:
            counts[key] += 1
        return app(environ, start_response)

    return wrapped


class MotoServer(ThreadedMotoServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self.request_counts: Counter[tuple[str, str, str]] = Counter()

    def _server_entry(self) -> None:
        app = _count_requests(_serialize_dynamodb(DomainDispatcherApplication(create_backend_app)),
                              self.request_counts)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"
