"""The local stack's data kept between runs: the jobs table's items and the bucket's objects.

moto keeps everything in memory, so without this a stopped stack forgets its jobs and videos:
`make demo` followed by `s2v dashboard` would show nothing. A stack started with a data folder
restores the folder's snapshot before its triggers start (so nothing restored is processed
again) and saves a new one when it stops. The folder is the checkout's own (``home.data_dir``:
``<checkout>/.s2v/local-data`` unless ``$S2V_LOCAL_HOME`` or ``$S2V_LOCAL_DATA`` say otherwise).

A snapshot is ``manifest.json`` (format, when, how many items), ``items.jsonl`` (the table's
items in DynamoDB's wire format, one a line) and ``objects/<n>`` (each object's bytes; its key,
content type and metadata are in the manifest). It is written beside the folder and swapped in
whole, so a stop that dies half way leaves the previous snapshot. Delete the folder to start
empty. Jobs still at the emulator when the stack stopped are not resumed: the next emulator does
not know their tasks, so the poller fails them ("WaveSpeed does not know provider id ...").
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from s2v_local import home

FORMAT = 1
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
OBJECTS = "objects"
BATCH = 25  # DynamoDB's BatchWriteItem limit


def default_data_dir() -> Path:
    return home.data_dir()


class SnapshotError(Exception):
    """The data folder cannot be read; the message names it and what to do."""


def manifest(folder: Path) -> dict[str, Any] | None:
    """The snapshot's manifest, or None when the folder holds none."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"the local stack's saved data in {folder} is unreadable ({exc}); move the folder "
                            "away (or delete it) to start with an empty stack") from exc
    if data.get("format") != FORMAT:
        raise SnapshotError(f"the local stack's saved data in {folder} has format {data.get('format')!r}, not "
                            f"{FORMAT}; move the folder away (or delete it) to start with an empty stack")
    return dict(data)


def save(folder: Path, *, dynamodb: Any, table: str, s3: Any, bucket: str) -> dict[str, Any]:
    """Write the table's items and the bucket's objects as the folder's new snapshot; its manifest."""
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / OBJECTS).mkdir(parents=True)
    items = 0
    with (partial / ITEMS).open("w") as out:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            for item in page.get("Items", []):
                out.write(json.dumps(item, separators=(",", ":")) + "\n")
                items += 1
    objects: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for listed in page.get("Contents", []):
            name = f"{len(objects):06d}"
            answer = s3.get_object(Bucket=bucket, Key=listed["Key"])
            with (partial / OBJECTS / name).open("wb") as body:
                shutil.copyfileobj(answer["Body"], body, 1 << 20)
            objects.append({"key": listed["Key"], "file": name, "content_type": answer.get("ContentType", ""),
                            "metadata": answer.get("Metadata", {})})
    written = {"format": FORMAT, "saved_at": time.time(), "items": items, "objects": objects}
    (partial / MANIFEST).write_text(json.dumps(written, indent=1))
    previous = folder.with_name(f".{folder.name}.previous-{os.getpid()}")
    if folder.exists():
        folder.replace(previous)
    partial.replace(folder)
    shutil.rmtree(previous, ignore_errors=True)
    return written


def restore_items(folder: Path, *, dynamodb: Any, table: str) -> int:
    """Put the snapshot's items into ``table``; how many."""
    if manifest(folder) is None:
        return 0
    batch: list[dict[str, Any]] = []
    count = 0
    with (folder / ITEMS).open() as lines:
        for line in lines:
            if line.strip():
                batch.append({"PutRequest": {"Item": json.loads(line)}})
            if len(batch) == BATCH:
                count += _write(dynamodb, table, batch)
                batch = []
    return count + (_write(dynamodb, table, batch) if batch else 0)


def _write(dynamodb: Any, table: str, batch: list[dict[str, Any]]) -> int:
    pending = {table: batch}
    for _ in range(10):
        pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        if not pending:
            return len(batch)
        time.sleep(0.05)
    raise SnapshotError(f"could not restore {len(pending.get(table, []))} saved item(s) into table {table}")


def restore_objects(folder: Path, *, s3: Any, bucket: str) -> int:
    """Put the snapshot's objects into ``bucket``; how many."""
    saved = manifest(folder)
    if saved is None:
        return 0
    for entry in saved["objects"]:
        extra = {"ContentType": entry["content_type"]} if entry.get("content_type") else {}
        with (folder / OBJECTS / entry["file"]).open("rb") as body:
            s3.put_object(Bucket=bucket, Key=entry["key"], Body=body, Metadata=entry.get("metadata") or {}, **extra)
    return len(saved["objects"])
