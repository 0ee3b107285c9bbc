"""Loopback HTTP servers for the provider tests.

``LoopbackServer`` answers every request with whatever its ``respond`` function returns (a
``Reply``: any status, body and headers, late, or with the connection dropped) and records what
it received. ``scripted`` plays a fixed list of replies; ``site`` serves files and records POSTs
(test inputs for the emulator, and a webhook receiver). ``refusing_port`` and ``unresponsive_port``
give addresses where a connection is refused or never completes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    drop: str = ""  # "before_status": close without answering; "mid_body": half the promised bytes

    def payload(self) -> bytes:
        return json.dumps(self.json).encode() if self.json is not None else self.body


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


class LoopbackServer:
    def __init__(self, respond: Callable[[Recorded], Reply]) -> None:
        self.respond = respond
        self.received: list[Recorded] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def wait_for(self, count: int, *, method: str = "POST", timeout: float = 10.0) -> list[Recorded]:
        def matching() -> list[Recorded]:
            return [r for r in self.received if r.method == method]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"{len(matching())} of {count} {method} requests after {timeout} s")
            return matching()

    def _record(self, request: Recorded) -> Reply:
        with self._changed:
            self.received.append(request)
            self._changed.notify_all()
        return self.respond(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = owner._record(Recorded(self.command, self.path, dict(self.headers.items()), body))
                if reply.delay and owner._stop.wait(reply.delay):
                    return
                self.close_connection = True
                if reply.drop == "before_status":
                    return
                payload = reply.payload()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json" if reply.json is not None else "text/plain",
                           **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload) * (2 if reply.drop == "mid_body" else 1)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def scripted(*replies: Reply) -> LoopbackServer:
    """Answers the n-th request with the n-th reply; the last reply repeats."""
    script = list(replies)
    lock = threading.Lock()

    def respond(_: Recorded) -> Reply:
        with lock:
            return script.pop(0) if len(script) > 1 else script[0]

    return LoopbackServer(respond)


def site(files: dict[str, tuple[bytes, str]] | None = None, *, post_status: int = 200) -> LoopbackServer:
    """Serves ``files`` (path → (bytes, content type)) to GET, answers POSTs with ``post_status``."""
    served = dict(files or {})

    def respond(request: Recorded) -> Reply:
        if request.method in ("GET", "HEAD"):
            path = request.path.split("?", 1)[0]
            if path not in served:
                return Reply(404, body=b"not found")
            data, content_type = served[path]
            return Reply(200, body=data, headers={"Content-Type": content_type})
        return Reply(post_status, body=b"ok")

    return LoopbackServer(respond)


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextmanager
def unresponsive_port() -> Iterator[int]:
    """A loopback port where a connection never completes: its accept queue is full."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                with suppress(BlockingIOError):  # the handshake completes (or not) in the background
                    filler.connect(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()
