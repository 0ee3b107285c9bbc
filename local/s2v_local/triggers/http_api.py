"""HTTP → function: an API Gateway HTTP API (payload format 2.0) on loopback."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from s2v_local.template import HttpTrigger
from s2v_local.triggers import log
from s2v_local.triggers.host import TriggerHost

MAX_HTTP_BODY = 10 * 1024 * 1024  # API Gateway's payload limit


_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded", "+json", "+xml")


def http_api_event(trigger: HttpTrigger, *, method: str, raw_path: str, raw_query: str,
                   headers: list[tuple[str, str]], body: bytes, source_ip: str,
                   path_parameters: Mapping[str, str]) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2.0 event, as Lambda receives it."""
    lowered: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    now = datetime.now(UTC)
    host = lowered.get("host", "127.0.0.1")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": trigger.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": lowered,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": lowered.get("user-agent", "")},
            "requestId": uuid.uuid4().hex,
            "routeKey": trigger.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = {k: unquote(v) for k, v in path_parameters.items()}
    if body:
        content_type = lowered.get("content-type", "text/plain").lower()
        try:
            if not any(t in content_type for t in _TEXT_TYPES):
                raise UnicodeDecodeError("utf-8", body, 0, 0, "binary content type")
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def http_api_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Lambda's result to (status, headers, body) by the payload v2.0 rules: a dict with
    statusCode is used as is; anything else is a 200 JSON response of the value."""
    if isinstance(result, Mapping) and "statusCode" in result:
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        headers += [("set-cookie", str(cookie)) for cookie in result.get("cookies") or []]
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        return int(result["statusCode"]), headers, raw
    return 200, [("content-type", "application/json")], json.dumps(result).encode()


_JSON = [("content-type", "application/json")]


class HttpApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stack: TriggerHost) -> None:
        super().__init__(("127.0.0.1", 0), _HttpApiHandler)
        self.stack = stack

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _HttpApiHandler(BaseHTTPRequestHandler):
    server: HttpApiServer
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_HTTP_BODY:
            self._reply(413, _JSON, b'{"message":"Request Entity Too Large"}')
            return
        body = self.rfile.read(length) if length else b""
        for trigger, runtime in self.server.stack.http_routes():
            path_parameters = trigger.match(self.command, parts.path)
            if path_parameters is None:
                continue
            event = http_api_event(trigger, method=self.command, raw_path=parts.path, raw_query=parts.query,
                                   headers=list(self.headers.items()), body=body,
                                   source_ip=self.client_address[0], path_parameters=path_parameters)
            try:
                status, headers, payload = http_api_response(
                    runtime.invoke(event, source=f"http {trigger.route_key}"))
            except Exception:
                log.exception("%s failed on %s %s", runtime.function.logical_id, self.command, parts.path)
                status, headers, payload = 500, _JSON, b'{"message":"Internal Server Error"}'
            self._reply(status, headers, payload)
            return
        self._reply(404, _JSON, b'{"message":"Not Found"}')

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http api: " + format, *args)
