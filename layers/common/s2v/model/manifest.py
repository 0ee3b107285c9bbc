"""Batch manifests: ``*.batch.json`` / ``*.batch.csv`` under ``inputs/``, one row per video. Pure: no I/O.

A manifest lists rows: ``image`` and ``audio`` (a key relative to the manifest's folder, or one
starting with ``/`` from the bucket's root; either way under ``inputs/``), and optionally the params
a sidecar may set (``prompt``, ``resolution``, ``seed``, ``output_name``, and any the stack adds).
A manifest that cannot be read as a whole (not JSON/CSV, unknown columns, no rows, too many rows)
is refused as a whole: ``ManifestError``. A row that cannot be valid (a bad key, a bad value, the
duplicate of an earlier row) carries its ``InputError``: that row fails, never submitted; the other
rows go on.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s2v.model import documents
from s2v.model.errors import InputError
from s2v.model.pairing import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, MANIFEST_SUFFIXES
from s2v.model.params import Layer, check_values, document_keys

FILE_COLUMNS = ("image", "audio")
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_KEY_BYTES = 1024
# A row names its columns (a dozen are known), so a JSON manifest is a shallow list of small objects.
JSON_BOUNDS = documents.Bounds(max_bytes=MAX_MANIFEST_BYTES, max_depth=3, max_keys=32, check_text=False,
                               syntax_code="invalid_manifest")
MAX_COLUMNS = 32
CSV_EXAMPLE = "image,audio,prompt\nalice.png,alice.wav,a warm greeting"
JSON_EXAMPLE = '{"rows": [{"image": "alice.png", "audio": "alice.wav", "prompt": "a warm greeting"}]}'


class ManifestError(InputError):
    """The manifest as a whole cannot be used: nothing in it is submitted."""


def is_manifest(name: str) -> bool:
    return name.lower().endswith(MANIFEST_SUFFIXES)


def manifest_stem(key: str) -> str:
    """``inputs/shows/ep1.batch.csv`` → ``ep1.batch`` (its report is ``ep1.batch.report.json``)."""
    return posixpath.basename(key).rsplit(".", 1)[0]


def batch_id_for(key: str, content: bytes) -> str:
    """Same key and same bytes → same batch: uploading one manifest twice makes no new jobs."""
    digest = hashlib.sha256(content).hexdigest()
    return hashlib.sha256(f"batch\x1f{key}\x1f{digest}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Row:
    number: int  # 1-based, as a person counts rows (CSV: not counting the header)
    image_key: str
    audio_key: str
    params: Mapping[str, Any] = field(default_factory=dict)
    from_json: bool = True  # CSV cells are text, like object metadata
    error: InputError | None = None

    @property
    def source(self) -> str:
        return f"row {self.number}"

    @property
    def stem(self) -> str:
        """The name a row's video takes by default: its image's."""
        name = posixpath.basename(self.image_key)
        return name.rsplit(".", 1)[0] if "." in name else name


@dataclass(frozen=True)
class Manifest:
    key: str
    folder: str  # relative to the input prefix, "" at the top
    rows: tuple[Row, ...]

    @property
    def valid_rows(self) -> int:
        return sum(1 for r in self.rows if r.error is None)


def parse_manifest(raw: bytes, key: str, *, input_prefix: str, max_rows: int, max_prompt_chars: int) -> Manifest:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{key} is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB: split it into several "
                            "manifests.", code="manifest_too_large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{key} is not UTF-8 text (bad byte at offset {exc.start}): save it as UTF-8.",
                            code="invalid_manifest") from exc
    records = _csv_records(text, key) if key.lower().endswith(".csv") else _json_records(text, key)
    if not records:
        raise ManifestError(f"{key} has no rows: list one row per video, like {_example(key)}.", code="empty_manifest")
    if len(records) > max_rows:
        raise ManifestError(f"{key} has {len(records):,} rows; the limit is {max_rows:,} (MaxManifestRows): split it "
                            "into several manifests.", code="too_many_rows")
    folder = posixpath.dirname(key[len(input_prefix):])
    from_json = not key.lower().endswith(".csv")
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        row = _row(number, record, key, folder, input_prefix, from_json, max_prompt_chars)
        if row.error is None:
            identity = json.dumps([row.image_key, row.audio_key, dict(row.params)], sort_keys=True, default=str)
            if identity in seen:
                row = Row(number, row.image_key, row.audio_key, row.params, from_json, InputError(
                    f"{key} row {number} repeats row {seen[identity]} (same files, same params): delete one; to "
                    "render the same files twice, give the rows different params or output names.",
                    code="duplicate_row"))
            else:
                seen[identity] = number
        rows.append(row)
    return Manifest(key=key, folder=folder, rows=tuple(rows))


def _example(key: str) -> str:
    return repr(CSV_EXAMPLE) if key.lower().endswith(".csv") else JSON_EXAMPLE


def _allowed_columns() -> tuple[str, ...]:
    return (*FILE_COLUMNS, *document_keys())


def _check_columns(columns: list[str], key: str, where: str) -> None:
    allowed = _allowed_columns()
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        described = []
        for name in (documents.storable(str(c), max_chars=60) for c in unknown[:10]):  # a few are enough
            close = difflib.get_close_matches(name.lower(), allowed, n=1)
            described.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
        more = f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else ""
        raise ManifestError(f"{key} {where} unknown columns: {', '.join(described)}{more}; the columns are "
                            f"{', '.join(allowed)}. Nothing in it was submitted.", code="unknown_columns")
    missing = [c for c in FILE_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"{key} {where} no {' and no '.join(missing)} column: every row names an image and an "
                            f"audio file, like {_example(key)}.", code="missing_columns")


def _csv_records(text: str, key: str) -> list[dict[str, Any]]:
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        lines = [line for line in reader if any(cell.strip() for cell in line)]
    except csv.Error as exc:
        raise ManifestError(f"{key} is not valid CSV ({exc}): write a header line and one line per video, like "
                            f"{CSV_EXAMPLE!r}.", code="invalid_manifest") from exc
    if not lines:
        return []
    if len(lines[0]) > MAX_COLUMNS:
        raise ManifestError(f"{key} has {len(lines[0]):,} columns in its header; a manifest has at most {MAX_COLUMNS} "
                            f"(the columns are {', '.join(_allowed_columns())}).", code="too_many_columns")
    header = [h.strip().lower() for h in lines[0]]
    if len(set(header)) != len(header):
        raise ManifestError(f"{key} names a column twice in its header: keep one of each.", code="unknown_columns")
    _check_columns(header, key, "has")
    records = []
    for number, line in enumerate(lines[1:], start=1):
        if len(line) > len(header):
            raise ManifestError(f"{key} row {number} has {len(line)} cells but the header has {len(header)} "
                                "columns: quote cells that hold commas.", code="invalid_manifest")
        records.append({name: cell for name, cell in zip(header, line, strict=False) if cell.strip() != ""})
    return records


def _json_records(text: str, key: str) -> list[dict[str, Any]]:
    # Text is checked row by row (_row): one row's lone surrogate fails that row, not the manifest.
    document = documents.parse(text, key, JSON_BOUNDS, example=JSON_EXAMPLE, error=ManifestError)
    rows = document.get("rows") if isinstance(document, dict) and set(document) == {"rows"} else document
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ManifestError(f"{key} must hold a list of rows (objects), like {JSON_EXAMPLE}.",
                            code="invalid_manifest")
    for number, row in enumerate(rows, start=1):
        _check_columns(list(row), key, f"row {number} has")
    return rows


def _row(number: int, record: Mapping[str, Any], key: str, folder: str, input_prefix: str, from_json: bool,
         max_prompt_chars: int) -> Row:
    params = {k: v for k, v in record.items() if k not in FILE_COLUMNS}
    image_key = audio_key = ""
    try:
        documents.check_text(dict(record), f"{key} row {number}")
        image_key = row_key(record.get("image"), "image", folder, input_prefix, f"{key} row {number}")
        audio_key = row_key(record.get("audio"), "audio", folder, input_prefix, f"{key} row {number}")
        check_values(Layer(source=f"{key} row {number}", document=params, from_json=from_json), max_prompt_chars)
    except InputError as exc:
        # A refused row's values are kept only to show what it held: storable whatever they were.
        return Row(number, image_key, audio_key, documents.storable(params), from_json, exc)
    return Row(number, image_key, audio_key, params, from_json)


def row_key(value: object, column: str, folder: str, input_prefix: str, where: str) -> str:
    """The bucket key a row's cell names, or an ``InputError``: never outside ``input_prefix``."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {column} is empty; name the {column} file (relative to the manifest's folder, "
                         f"or from the bucket's root starting with '/').", code="invalid_row")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InputError(f"{where}: {column} {value!r} holds control characters.", code="invalid_row")
    # "/inputs/x.png" is from the bucket's root; anything else is relative to the manifest's folder.
    absolute = value.startswith("/")
    candidate = value.lstrip("/") if absolute else input_prefix + "/".join(p for p in (folder, value) if p)
    parts = candidate.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InputError(f"{where}: {column} {value!r} has an empty, '.' or '..' part; name the file without them.",
                         code="invalid_row")
    if not candidate.startswith(input_prefix):
        raise InputError(f"{where}: {column} {value!r} is not under {input_prefix}: rows may only use files under "
                         f"{input_prefix} (write '/{input_prefix}...' for a key from the bucket's root).",
                         code="invalid_row")
    if len(candidate.encode()) > MAX_KEY_BYTES:
        raise InputError(f"{where}: {column} key is longer than S3's {MAX_KEY_BYTES} bytes.", code="invalid_row")
    extension = candidate.rsplit(".", 1)[-1].lower() if "." in parts[-1] else ""
    allowed = IMAGE_EXTENSIONS if column == "image" else AUDIO_EXTENSIONS
    if extension not in allowed:
        raise InputError(f"{where}: {column} {value!r} must end in {', '.join(sorted(allowed))}.",
                         code="invalid_row")
    return candidate
