"""moto's server on loopback, with DynamoDB requests made linearizable.

moto's backends are plain Python objects without locks: two concurrent conditional writes to one
item can both pass their condition, which real DynamoDB never allows. s2v's exactly-once and
spend-guard guarantees rest on those conditions, so DynamoDB calls are serialized here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


def _serialize_dynamodb(app: Callable[..., Any]) -> Callable[..., Iterable[bytes]]:
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return wrapped


class MotoServer(ThreadedMotoServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)

    def _server_entry(self) -> None:
        app = _serialize_dynamodb(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"
