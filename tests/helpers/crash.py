"""Crash injection and a loopback webhook route, for the exactly-once tests.

``crash_after(target, "method")`` lets the real call happen, then raises ``Crash``: the function
died right after a side effect (a conditional put, a paid POST, an S3 upload), the way a Lambda
invocation dies on a timeout or an out-of-memory kill. ``Crash`` is a ``BaseException`` so that no
``except Exception`` in the core can swallow it: a dead process runs no handler.

``WebhookReceiver`` is the HttpApi → webhook function route on loopback: the provider's callback
``POST /webhook/{job_id}?token=…`` goes to ``s2v.flows.webhook.handle_callback`` with its own ``Deps``
(another Lambda), so crashes injected into a test's ``flow.deps`` never reach it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from s2v.deps import Deps
from s2v.flows.webhook import handle_callback


class Crash(BaseException):
    """The process died here."""


@dataclass
class Injection:
    where: str
    fired: int = 0


def _install(target: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]
             ) -> Callable[[], None]:
    original = getattr(target, name)
    own = name in vars(target)  # a module function, or a method already patched on the instance
    setattr(target, name, make(original))

    def restore() -> None:
        if own:
            setattr(target, name, original)
        else:
            delattr(target, name)  # the class's method shows through again

    return restore


@contextmanager
def crash_after(target: Any, name: str, *, when: Callable[..., bool] = lambda result, *a, **k: True,
                times: int = 1) -> Iterator[Injection]:
    """Run ``target.name`` for real, then raise ``Crash`` (the first ``times`` calls for which
    ``when(result, *args, **kwargs)`` holds)."""
    injection = Injection(f"after {name}")

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if injection.fired < times and when(result, *args, **kwargs):
                injection.fired += 1
                raise Crash(injection.where)
            return result
        return wrapper

    restore = _install(target, name, make)
    try:
        yield injection
    finally:
        restore()


@dataclass(frozen=True)
class Answer:
    job_id: str
    status_code: int
    message: str


@dataclass
class WebhookReceiver:
    """``S2V_WEBHOOK_BASE_URL`` for a Flow: set ``deps`` before the first callback arrives."""

    deps: Deps | None = None
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                job_id = unquote(parts[1]) if len(parts) == 2 and parts[0] == "webhook" else ""
                token = (parse_qs(url.query).get("token") or [""])[0]
                assert receiver.deps is not None, "attach the flow's settings before callbacks arrive"
                try:
                    result = handle_callback(job_id, token, dict(self.headers.items()), body, receiver.deps)
                    status, message = result.status_code, result.message
                except Exception as exc:  # a crash in the handler is a 500, and the test sees it
                    status, message = 500, f"{type(exc).__name__}: {exc}"
                with receiver._lock:
                    receiver.answers.append(Answer(job_id, status, message))
                payload = message.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()

    def attach(self, deps: Deps) -> None:
        """Handle callbacks as a separate webhook function would: same settings and clock, own clients."""
        self.deps = Deps(deps.settings, clock=deps.clock, client_factory=deps.client_factory)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
