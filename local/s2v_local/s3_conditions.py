"""S3's conditional writes, as AWS enforces them, on moto's server.

moto 5.2 checks ``If-Match``/``If-None-Match`` on PutObject and ``If-Match`` on DeleteObject, but a
CopyObject's destination conditions (``If-Match``, ``If-None-Match: *``) and its source condition
(``x-amz-copy-source-if-match``) are accepted and ignored, and no check is atomic with its write.
``s2v.flows.outputs`` rests on these conditions (the newest job takes a name, nothing overwrites what
it did not read), so here every object write that carries a condition is checked and done under one
lock, like one S3 request. Installed once, when the local stack's moto server module is imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

from moto.s3.exceptions import MissingKey, PreconditionFailed
from moto.s3.responses import S3Response

_WRITE_LOCK = threading.RLock()
_CONDITIONS = ("If-Match", "If-None-Match", "x-amz-copy-source-if-match")
_installed = False


def _etag(value: str) -> str:
    return value.strip().strip('"')


def _check_copy(response: Any) -> None:
    headers = response.headers
    if_match, if_none_match = headers.get("If-Match"), headers.get("If-None-Match")
    source_match = headers.get("x-amz-copy-source-if-match")
    if source_match:
        source = urlparse(headers.get("x-amz-copy-source", ""))
        bucket, key = unquote(source.path).lstrip("/").split("/", 1)
        found = response.backend.get_object(bucket, key)
        if found is None or _etag(found.etag) != _etag(source_match):
            raise PreconditionFailed("x-amz-copy-source-If-Match")
    if if_match or if_none_match:
        existing = response.backend.get_object(response.bucket_name, response.parse_key_name())
        if if_none_match == "*" and existing is not None:
            raise PreconditionFailed("If-None-Match")
        if if_match:
            if existing is None:
                raise MissingKey
            if _etag(existing.etag) != _etag(if_match):
                raise PreconditionFailed("If-Match")


def _atomic(original: Callable[..., Any], check: Callable[[Any], None] | None = None) -> Callable[..., Any]:
    def write(response: Any) -> Any:
        if not any(name in response.headers for name in _CONDITIONS):
            return original(response)
        with _WRITE_LOCK:
            if check is not None:
                check(response)
            return original(response)

    return write


def install() -> None:
    """Patch moto's S3 responses (idempotent)."""
    global _installed
    if _installed:
        return
    S3Response.copy_object = _atomic(S3Response.copy_object, _check_copy)  # type: ignore[method-assign]
    S3Response.put_object = _atomic(S3Response.put_object)  # type: ignore[method-assign]
    S3Response.delete_object = _atomic(S3Response.delete_object)  # type: ignore[method-assign]
    _installed = True
