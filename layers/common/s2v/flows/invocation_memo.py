"""What one ingest invocation remembers, so a batch of S3 events costs fewer requests.

- **A folder's ``_defaults.json``** is read once per folder per invocation, and a folder found
  without one is not asked again for ``ABSENT_SECONDS`` (in this container). Every pair of a burst
  would otherwise GET the ``_defaults.json`` of each folder above it, found or not (two ranged GETs
  per pair in a two-level folder). ``ABSENT_SECONDS`` is shorter than the ingest queue's settle
  delay (``DelaySeconds``, 10 s in template.yaml): a pair is processed at least that long after its
  upload, so a defaults file uploaded with or before its pairs is always seen; one added to a
  folder later applies to pairs processed from ``ABSENT_SECONDS`` after it was written.
- **A pair handled once**: the image's and the audio's events (and a sidecar's) usually arrive in
  one batch. The first lists the folder after every upload in the batch was made (each event is
  sent after its upload), so it already saw the newest files of the set: a later event of the same
  set in the same invocation would find the same job, and is skipped (a set whose handling raised
  is not remembered: its next event tries again).

Outside ``one_invocation()`` (tests, the CLI) nothing is remembered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from s2v.deps import Deps

ABSENT_SECONDS = 5.0
_invocation: ContextVar[_Memo | None] = ContextVar("s2v_ingest_invocation", default=None)
_absent_since: dict[str, float] = {}  # bucket/key -> when this container found it missing (_clock)
_clock = time.monotonic


@dataclass
class _Memo:
    defaults: dict[str, bytes | None] = field(default_factory=dict)  # key -> its bytes, None: absent
    sets: dict[tuple[str, str], str] = field(default_factory=dict)  # (folder, stem) -> its job's id


@contextmanager
def one_invocation() -> Iterator[None]:
    """The span of one handler call: what is read or handled in it is not again."""
    token = _invocation.set(_Memo())
    try:
        yield
    finally:
        _invocation.reset(token)


def read_defaults(key: str, limit: int, deps: Deps) -> bytes | None:
    """The first ``limit`` + 1 bytes of the defaults file ``key``, or None when there is none."""
    found = _invocation.get()
    if found is None:
        return deps.objects.read_small_if_exists(key, limit)
    memo = found.defaults
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


def set_handled(folder: str, stem: str) -> str | None:
    """The job id a set (folder, stem) was handled as earlier in this invocation, or None."""
    memo = _invocation.get()
    return None if memo is None else memo.sets.get((folder, stem))


def remember_set(folder: str, stem: str, job_id: str) -> None:
    memo = _invocation.get()
    if memo is not None:
        memo.sets[(folder, stem)] = job_id
