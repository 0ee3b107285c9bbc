"""Reading a folder's ``_defaults.json`` for ingest: once per folder per invocation, and a folder
found without one is not asked again for ``ABSENT_SECONDS`` (in this container).

Every pair of a burst would otherwise GET the ``_defaults.json`` of each folder above it, found or
not (two ranged GETs per pair in a two-level folder). ``ABSENT_SECONDS`` is shorter than the ingest
queue's settle delay (``DelaySeconds``, 10 s in template.yaml): a pair is processed at least that
long after its upload, so a defaults file uploaded with or before its pairs is always seen; one
added to a folder later applies to pairs processed from ``ABSENT_SECONDS`` after it was written.
Outside ``one_invocation()`` (tests, the CLI) every read goes to S3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from s2v.deps import Deps

ABSENT_SECONDS = 5.0
_invocation: ContextVar[dict[str, bytes | None] | None] = ContextVar("s2v_folder_defaults", default=None)
_absent_since: dict[str, float] = {}  # bucket/key -> when this container found it missing (_clock)
_clock = time.monotonic


@contextmanager
def one_invocation() -> Iterator[None]:
    """The span in which a folder's defaults file, once read, is not read again (one handler call)."""
    token = _invocation.set({})
    try:
        yield
    finally:
        _invocation.reset(token)


def read_defaults(key: str, limit: int, deps: Deps) -> bytes | None:
    """The first ``limit`` + 1 bytes of the defaults file ``key``, or None when there is none."""
    memo = _invocation.get()
    if memo is None:
        return deps.objects.read_small_if_exists(key, limit)
    if key in memo:
        return memo[key]
    where = f"{deps.objects.bucket}/{key}"
    missing_since = _absent_since.get(where)
    if missing_since is not None and 0 <= _clock() - missing_since < ABSENT_SECONDS:
        return None
    raw = deps.objects.read_small_if_exists(key, limit)
    memo[key] = raw
    if raw is None:
        _absent_since[where] = _clock()
    else:
        _absent_since.pop(where, None)
    return raw
