"""What a job's outputs are called, and which job a name belongs to. Pure: no I/O.

Every object under ``outputs/`` is one of these, for an output base ``outputs/<folder>/<name>``:

==========================  ==================================================================
``<name>.mp4``              the video of the newest job for that name (by rank, below)
``<name>.json``             that video's job report
``<name>.error.json``       the newest failed job's error report (while no newer video exists)
``<name>.cancelled.json``   the newest cancelled job's entry (likewise)
``<name>.<job12>.<kind>``   any of the above, kept aside for a job that is not (or no longer) the
                            newest for the name: nothing a job delivered is ever overwritten
``<manifest>.report.json``  a batch's report (one writer: the batch it names)
==========================  ==================================================================

Rank: a job is newer than another for the same name when it was recorded later (``created_at``,
then its id to break ties). A re-upload or a retry is recorded after the job it replaces, so it
takes the plain name whatever order the renders finish in.

Reserved names: a stem (or rendered ``output_name``) ending in ``.error``, ``.cancelled`` or
``.report`` would read as another stem's report, so ingest refuses it (``reserved_name``); and
``naming.output_base`` never produces a last segment ending in one of those, in ``.<12 hex>``
(a kept-aside name) or in ``.previous-<12 hex>`` (an object from before ranks, kept aside): it adds
an underscore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from s2v.model.errors import InputError

JOB_PART = 12  # characters of a job id in a kept-aside name (as ``{job}`` in templates)


@dataclass(frozen=True)
class Kind:
    """One kind of output: its suffix after the base, and the record field that names it."""

    suffix: str
    field: str


VIDEO = Kind(".mp4", "output_key")
REPORT = Kind(".json", "report_key")
ERROR = Kind(".error.json", "error_key")
CANCELLED = Kind(".cancelled.json", "report_key")
MARKERS = (ERROR, CANCELLED)  # what a newer outcome for the name moves aside
KINDS = (VIDEO, REPORT, ERROR, CANCELLED)

# Metadata on every object this module writes (S3 user metadata is ASCII: ids and ranks are).
META_JOB = "s2v-job-id"
META_RANK = "s2v-rank"
META_REPLACED = "s2v-replaced"  # the job whose object this one replaced at a plain name

_REPORT_WORDS = re.compile(r"\.(error|cancelled|report)$", re.IGNORECASE)
# ``.previous-<12 hex>``: where an object from before ranks is kept aside (``flows.outputs._keep_aside``).
_RESERVED = re.compile(r"\.(error|cancelled|report|[0-9a-f]{12}|previous-[0-9a-f]{12})$", re.IGNORECASE)


def rank(created_at: float, job_id: str) -> str:
    """A string that sorts like (created_at, job_id): zero-padded microseconds, then the id."""
    return f"{round(max(created_at, 0.0) * 1_000_000):020d}:{job_id}"


def plain_key(base: str, kind: Kind) -> str:
    return base + kind.suffix


def aside_key(base: str, kind: Kind, job_id: str) -> str:
    """Where ``job_id``'s output of this kind lives when it does not hold the plain name."""
    return f"{base}.{job_id[:JOB_PART]}{kind.suffix}"


def owner(head: dict[str, Any] | None) -> tuple[str, str]:
    """(job id, rank) recorded on an object; ("", "") for none or one written before ranks existed
    (which therefore ranks below every job that writes a rank)."""
    meta = (head or {}).get("Metadata", {}) or {}
    return str(meta.get(META_JOB, "")), str(meta.get(META_RANK, ""))


def is_reserved(name: str) -> bool:
    """True for a last path segment that ends like a report or a kept-aside output."""
    return bool(_RESERVED.search(name.rsplit("/", 1)[-1]))


def check_name(name: str, source: str) -> None:
    """Refuse a stem or rendered output name that ends like a report (``b.error``): its outputs would
    read as stem ``b``'s. (A name ending in a dot and 12 hex digits, as ``{stem}.{job}`` renders, is
    only given an underscore by ``unreserved``: it is a job's own name, not a report.)"""
    if _REPORT_WORDS.search(name.rsplit("/", 1)[-1]):
        raise InputError(
            f"{source} {name!r}, which ends like one of s2v's own report names (.error, .cancelled, .report), "
            f"so its video or report could be mistaken for another job's. "
            f"Rename the files (for example {name.rsplit('.', 1)[0] + '-' + name.rsplit('.', 1)[-1]!r}) "
            "and upload them again.",
            code="reserved_name",
        )


def unreserved(segment: str) -> str:
    """``segment``, with an underscore added when it ends like a reserved name (so an error report
    of a refused ``b.error`` goes to ``b.error_.error.json``, never onto stem ``b``'s report)."""
    return segment + "_" if is_reserved(segment) else segment
