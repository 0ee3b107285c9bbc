"""A job's history, bounded. Pure: no I/O.

Every write that changes a job's status (or says why) adds an entry. Left alone that list grows
with the job's life: a QUEUED job under a busy provider is admitted and deferred again on every
poll run (``admitted`` + ``provider busy``), ~310 bytes a run, and after a day its item would reach
DynamoDB's 400 KB limit, after which no write to it succeeds. So a cycle that repeats is one
counted entry (``cycles``, ``last_at``), each note is cut to ``MAX_NOTE_CHARS``, and past
``MAX_ENTRIES`` the oldest entries after the first are dropped, counted in an ``omitted`` entry.
The whole history is then at most a few tens of KB, whatever happens to the job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_ENTRIES = 40
MAX_NOTE_CHARS = 400
KEEP_FIRST = 1  # "created": when and how the job began stays visible
OMITTED_NOTE = "earlier entries omitted"

Entry = Mapping[str, Any]


def entry(status: str, at: float, note: str) -> dict[str, Any]:
    """One entry, its note cut short and storable (no lone surrogate reaches the table)."""
    text = note.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_NOTE_CHARS:
        text = text[:MAX_NOTE_CHARS - 1] + "…"
    return {"status": status, "at": at, "note": text}


def append(history: Sequence[Entry], new: Entry) -> tuple[dict[str, Any], ...]:
    """``history`` with ``new`` added: repeats collapsed into counts, and the length capped."""
    entries = [dict(e) for e in history]
    at = new["at"]
    if entries and _same(entries[-1], new):
        # The same step again (a QUEUED job deferred for the same reason): count it.
        entries[-1] = _counted(entries[-1], at, 1)
    elif len(entries) >= 3 and _same(entries[-2], new) and _same(entries[-3], entries[-1]):
        # A two-step cycle again (admitted, provider busy, admitted, ...): [A, B, A] + B -> [A, B] counted.
        first, second = entries[-3], entries[-2]
        last = entries[-1]
        entries = [*entries[:-3], _counted(first, last.get("last_at", last["at"]), int(last.get("cycles", 1))),
                   _counted(second, at, 1)]
    else:
        entries.append(dict(new))
    return tuple(_capped(entries))


def _same(a: Entry, b: Entry) -> bool:
    return (a.get("status"), a.get("note")) == (b.get("status"), b.get("note"))


def _counted(e: dict[str, Any], at: float, more: int) -> dict[str, Any]:
    return {**e, "cycles": int(e.get("cycles", 1)) + more, "last_at": at}


def _capped(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(entries) <= MAX_ENTRIES:
        return entries
    head = entries[:KEEP_FIRST]
    marker_at = KEEP_FIRST if len(entries) > KEEP_FIRST and entries[KEEP_FIRST].get("note") == OMITTED_NOTE else -1
    omitted = int(entries[marker_at]["omitted"]) if marker_at >= 0 else 0
    rest = [e for i, e in enumerate(entries[KEEP_FIRST:], start=KEEP_FIRST) if i != marker_at]
    keep = MAX_ENTRIES - KEEP_FIRST - 1
    dropped = rest[:len(rest) - keep]
    marker = {"status": str(dropped[-1].get("status", "")), "at": dropped[-1].get("at", 0), "note": OMITTED_NOTE,
              "omitted": omitted + sum(int(e.get("cycles", 1)) for e in dropped)}
    return [*head, marker, *rest[len(rest) - keep:]]
