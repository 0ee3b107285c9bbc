"""The HTTP plumbing both servers share: the documented envelope, files, quiet werkzeug servers."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.utils import secure_filename, send_file
from werkzeug.wrappers import Request, Response

log = logging.getLogger("s2v_local.emulator")


class QuietHandler(WSGIRequestHandler):
    # werkzeug logs every request line to stderr by default, ?webhook= callback token and all.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("%s: " + message, type, *args)


class Server(ThreadedWSGIServer):
    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("%s: " + message, type, *args)


def envelope(code: int, message: str, data: Any = None, *, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps({"code": code, "message": message, "data": data}), status=code,
                    mimetype="application/json", headers=dict(headers or {}))


def file_response(request: Request, path: Path, content_type: str) -> Response:
    return send_file(path, request.environ, mimetype=content_type, max_age=None)


def safe_name(filename: str | None) -> str:
    return secure_filename(filename or "") or "upload"


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
