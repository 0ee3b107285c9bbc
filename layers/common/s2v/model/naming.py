"""Output names: the ``output_name`` template and the one rule that keeps every output under ``outputs/``.

A template such as ``"{date}/{stem}-{resolution}"`` names a job's video (and its report) below
the job's output folder, ``outputs/<folder>/``. Placeholders: ``{stem}`` (the input's name),
``{folder}`` (the last part of the input folder, "" at the top level), ``{resolution}``,
``{date}`` (the job's UTC day, ``YYYY-MM-DD``) and ``{job}`` (the first 12 characters of the job
id, unique per job). Whatever a template, a file name or a manifest holds, ``safe_relative`` turns it
into path segments that cannot leave the output folder: no ``.``/``..``/empty segments, no control
characters, and a bounded length. Pure: no I/O.

Collision rule (what happens when two jobs' names render alike): the newer job (recorded later)
holds the plain name, whatever order they finish in; the other's video and report are kept beside it
as ``<name>.<its job id[:12]>.mp4/.json``. Nothing is overwritten (``s2v.model.outputs``,
``s2v.flows.outputs``).
"""

from __future__ import annotations

import hashlib
import posixpath
import string
import unicodedata
from datetime import UTC, datetime

from s2v.model.errors import InputError
from s2v.model.outputs import unreserved

PLACEHOLDERS = ("stem", "folder", "resolution", "date", "job")
MAX_TEMPLATE_CHARS = 256
MAX_SEGMENT_BYTES = 200
# S3 keys are at most 1,024 bytes. A base name is followed by at most ".<12 hex>.json",
# ".cancelled.json" or ".error.json" (and a previous job's ".<12 hex>" when kept), so bases stay
# below this and a too-long one is cut and marked with a digest of what was cut.
MAX_BASE_BYTES = 960
JOB_PART = 12


def check_template(value: object, source: str) -> str:
    """A template as written, or an ``InputError`` saying what is wrong with it."""
    example = '"{stem}-{resolution}"'
    if not isinstance(value, str):
        raise InputError(f"{source} output_name must be text in quotes like {example}, not {type(value).__name__}.",
                         code="invalid_output_name")
    if not value.strip():
        raise InputError(f"{source} output_name is empty: remove it to keep the input's name, or write a name "
                         f"like {example}.", code="invalid_output_name")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise InputError(f"{source} output_name is {len(value)} characters long; the limit is "
                         f"{MAX_TEMPLATE_CHARS}.", code="invalid_output_name")
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise InputError(f"{source} output_name {value!r} is not a valid template ({exc}); write braces only "
                         "around a placeholder, like " + example + ".", code="invalid_output_name") from exc
    allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    for name, spec, conv in parsed:
        if name not in PLACEHOLDERS:
            raise InputError(f"{source} output_name uses {{{name}}}, which is not a placeholder; use {allowed}.",
                             code="invalid_output_name")
        if spec or conv:
            raise InputError(f"{source} output_name: write placeholders plainly, like {{{name}}}, without "
                             "':' or '!'.", code="invalid_output_name")
    return value


def render(template: str, *, stem: str, folder: str, resolution: str, created_at: float, job_id: str) -> str:
    """The name a checked template gives a job, relative to its output folder ("" if it renders empty)."""
    values = {
        "stem": stem,
        "folder": posixpath.basename(folder.rstrip("/")),
        "resolution": resolution,
        "date": datetime.fromtimestamp(created_at, UTC).strftime("%Y-%m-%d"),
        "job": job_id[:JOB_PART],
    }
    # Placeholder values are single segments: a '/' inside one must not create folders.
    values = {k: v.replace("/", "_") for k, v in values.items()}
    return safe_relative(template.format(**values))


def _clean_segment(segment: str) -> str:
    # Control characters (newlines, NUL, escapes) go; any other character is a valid key character.
    segment = "".join(ch for ch in segment if unicodedata.category(ch) != "Cc")
    if segment in ("", ".", ".."):
        return ""
    if segment.startswith("."):  # hidden names would be ignored by most tools
        segment = "_" + segment[1:]
    return _cut(segment, MAX_SEGMENT_BYTES)


def safe_relative(path: str) -> str:
    """``path`` as segments that stay inside the folder they are joined to."""
    segments = (_clean_segment(s) for s in path.split("/"))
    return "/".join(s for s in segments if s)


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` UTF-8 bytes; a cut one ends in ``~`` and 8 hex digits of the whole."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    mark = "~" + hashlib.sha256(raw).hexdigest()[:8]
    head = raw[: limit - len(mark)].decode("utf-8", errors="ignore")
    return head + mark


def output_base(folder: str, name: str, output_prefix: str) -> str:
    """``outputs/<folder>/<name>`` (add ``.mp4``/``.json``), safe and bounded whatever the inputs.

    ``name`` falls back to ``"video"`` when nothing usable is left of it."""
    relative = "/".join(p for p in (safe_relative(folder), safe_relative(name) or "video") if p)
    head, _, last = relative.rpartition("/")
    relative = (head + "/" if head else "") + unreserved(last)  # never onto another output's key
    return output_prefix + _cut(relative, MAX_BASE_BYTES - len(output_prefix.encode()))
