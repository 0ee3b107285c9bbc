"""The operator's reads of the jobs table, through its indexes: never a scan per page view.

Two indexes serve them (template.yaml, JobsTable):

- ``status-index`` (``status``, ``created_at``): the jobs in one state, newest first. Bookkeeping
  items (``#guard``, ``#spend#<day>``, markers) have no status, so they are never in it.
- ``created-index`` (``record_type``, ``created_at``): every job, newest first, whatever its state;
  each job item carries ``record_type = "job"`` (``Job.record_type``).

A page is one query when nothing but state and dates is asked (those are key conditions). Folder
and name are filters: a page reads at most ``read_limit`` jobs, and when that bound is reached
before the page is full it says so and hands back a cursor to keep searching from there.

Read-only, for the CLI and the dashboard; the Lambda functions never import it.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from s2v.adapters.store import SPEND_PREFIX, deserialize_item, serialize
from s2v.model.jobs import Job, Status
from s2v_cli.views import name_label

STATUS_INDEX = "status-index"
CREATED_INDEX = "created-index"
JOB_RECORD = "job"  # Job.record_type
PAGE_SIZE = 50
READ_LIMIT = 1000  # jobs one page view may read when folder/name filters drop most of them
FIRST_CHUNK = 100  # ... read in chunks that double: few queries on DynamoDB, an early stop on a slow one
# What a list shows of a job, no more: a query's cost in moto (the local stack) grows with the number
# of attributes asked for times the item's size, and in DynamoDB less is sent. A Job read from a list
# has these fields only (the rest are defaults); get the whole job with JobStore.get.
LIST_ATTRIBUTES = ("job_id", "created_at", "status", "folder", "stem", "image", "audio", "extra_inputs",
                   "provider_id",
                   "estimated_cost_usd", "final_cost_usd", "submitted_at", "failure",
                   # a long talk's progress, and a segment's place in its talk
                   "segment_count", "segments_rendered", "segments_failed", "parent_id", "segment_index",
                   # what tells rows of one batch apart (views.inputs_label)
                   "output_name", "batch_id", "batch_key", "batch_row",
                   "output_key")  # for `s2v jobs --json`
# What a folder/name search reads of every job it passes: the keys and what the name column shows.
SEARCH_ATTRIBUTES = ("job_id", "created_at", "status", "folder", "stem", "image", "audio", "extra_inputs",
                     "parent_id", "segment_index", "output_name", "batch_id", "batch_key", "batch_row")
# What `s2v cost` needs of each job (views.cost_rows).
COST_ATTRIBUTES = ("job_id", "created_at", "status", "folder", "estimated_cost_usd", "final_cost_usd",
                   "provider_id", "submitted_at", "failure", "admitted_day", "segment_count")


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    cursor: str  # where the next page starts; "" when there is nothing after this page
    searched: int  # jobs read to fill this page
    partial: bool  # the read bound was reached before the page filled: the cursor keeps searching


def in_folder(folder: str, wanted: str) -> bool:
    """``talks`` means talks and everything below it."""
    wanted = wanted.strip("/")
    return not wanted or folder == wanted or folder.startswith(wanted + "/")


class JobQueries:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    # --- lists -------------------------------------------------------------------------------

    def page(self, *, status: Status | None = None, since: float | None = None, until: float | None = None,
             folder: str = "", name: str = "", cursor: str = "", size: int = PAGE_SIZE,
             read_limit: int = READ_LIMIT, read_seconds: float | None = None) -> Page:
        """One page of jobs, newest first, matching every filter given.

        ``name`` matches what the list shows as the job's name (``views.inputs_label``: folder, stem,
        inputs, output name, batch row) anywhere, ignoring case. The jobs carry the
        list's attributes only (``LIST_ATTRIBUTES``: no history, params...); get one whole with
        ``JobStore.get``. With folder/name filters the query reads just the keys, folder and name
        of up to ``read_limit`` jobs (in growing chunks, and no more chunks once ``read_seconds``
        have passed), and the page's matches are then read in one BatchGetItem.
        """
        started = time.monotonic()
        request = self._request(status, since, until)
        start = _decode_cursor(cursor, request["IndexName"])
        if start:
            request["ExclusiveStartKey"] = start
        filtered = bool(folder.strip("/") or name.strip())
        _project(request, SEARCH_ATTRIBUTES if filtered else LIST_ATTRIBUTES)
        index = request["IndexName"]
        needle = name.strip().casefold()
        matched: list[dict[str, Any]] = []
        last: Mapping[str, Any] = {}
        searched = 0

        def done(cursor_key: Mapping[str, Any] | None, partial: bool = False) -> Page:
            found = self._whole(matched) if filtered else matched
            return Page([list_job(item) for item in found], _encode_cursor(index, cursor_key) if cursor_key else "",
                        searched, partial)

        while True:
            # Unfiltered: one more than the page tells whether another page exists, in one query.
            chunk = min(read_limit - searched, max(FIRST_CHUNK, searched))  # 100, 100, 200, 400, ...
            request["Limit"] = max(1, chunk) if filtered else size + 1 - len(matched)
            response = self._db.query(**request)
            for raw in response.get("Items", []):
                item = deserialize_item(raw)
                if not in_folder(str(item.get("folder", "")), folder) or needle not in _shown_name(item):
                    searched += 1
                    continue
                if len(matched) == size:  # a further match: the next page starts after the last shown
                    return done(_key(last, index))
                searched += 1
                matched.append(item)
                last = raw
            after = response.get("LastEvaluatedKey")
            if not after:
                return done(None)
            if not filtered and len(matched) == size:
                return done(_key(last, index))
            out_of_time = read_seconds is not None and time.monotonic() - started >= read_seconds
            if filtered and (searched >= read_limit or out_of_time):
                return done(after, partial=True)
            request["ExclusiveStartKey"] = after

    def _whole(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The list attributes of these jobs (one BatchGetItem per 100), in the order given."""
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 100):
            spec: dict[str, Any] = {"Keys": [{"job_id": {"S": str(k["job_id"])}} for k in keys[i:i + 100]]}
            _project(spec, LIST_ATTRIBUTES)
            request: dict[str, Any] = {self.table: spec}
            for _ in range(8):
                response = self._db.batch_get_item(RequestItems=request)
                for raw in response.get("Responses", {}).get(self.table, []):
                    item = deserialize_item(raw)
                    found[str(item["job_id"])] = item
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05)
        return [found[str(k["job_id"])] for k in keys if str(k["job_id"]) in found]

    def jobs(self, *, status: Status | None = None, since: float | None = None, until: float | None = None,
             attributes: tuple[str, ...] = LIST_ATTRIBUTES) -> Iterator[Job]:
        """Every job matching, newest first, page by page, with ``attributes`` only (see ``list_job``)."""
        request = self._request(status, since, until)
        _project(request, attributes)
        while True:
            response = self._db.query(**request)
            for raw in response.get("Items", []):
                yield list_job(deserialize_item(raw))
            if not response.get("LastEvaluatedKey"):
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def values(self, status: Status, *, since: float, attributes: tuple[str, ...],
               limit: int = 2000) -> list[dict[str, Any]]:
        """Some attributes of the newest jobs in ``status`` created since ``since`` (at most ``limit``):
        what the overview needs for failures by code and render percentiles, without whole items."""
        request = self._request(status, since, None)
        names = {f"#a{i}": a for i, a in enumerate(attributes)}
        request["ProjectionExpression"] = ", ".join(names)
        request["ExpressionAttributeNames"].update(names)
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            request["Limit"] = limit - len(found)
            response = self._db.query(**request)
            found += [deserialize_item(i) for i in response.get("Items", [])]
            if not response.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found

    # --- counts and spend ----------------------------------------------------------------------

    def count(self, status: Status, *, since: float | None = None) -> int:
        """How many jobs are in ``status`` (COUNT queries: the items are read, not returned)."""
        request = {**self._request(status, since, None), "Select": "COUNT"}
        total = 0
        while True:
            response = self._db.query(**request)
            total += int(response.get("Count", 0))
            if not response.get("LastEvaluatedKey"):
                return total
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def counts(self) -> dict[Status, int]:
        return {status: self.count(status) for status in Status}

    def spend_by_day(self, days: list[str]) -> dict[str, float]:
        """The spend guard's estimated spend of each UTC day (``#spend#<day>`` items; 0 when none)."""
        spent = dict.fromkeys(days, 0.0)
        for i in range(0, len(days), 100):
            keys: list[dict[str, Any]] = [{"job_id": {"S": SPEND_PREFIX + d}} for d in days[i:i + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ProjectionExpression": "job_id, spent"}}
            for _ in range(8):
                response = self._db.batch_get_item(RequestItems=request)
                for raw in response.get("Responses", {}).get(self.table, []):
                    item = deserialize_item(raw)
                    spent[str(item["job_id"])[len(SPEND_PREFIX):]] = round(float(item.get("spent", 0.0)), 6)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05)
        return spent

    # --- helpers -----------------------------------------------------------------------------

    def _request(self, status: Status | None, since: float | None, until: float | None) -> dict[str, Any]:
        names = {"#h": "status" if status else "record_type"}
        if since is not None or until is not None:
            names["#c"] = "created_at"
        values = {":h": serialize(str(status) if status else JOB_RECORD)}
        condition = "#h = :h"
        if since is not None and until is not None:
            condition += " AND #c BETWEEN :since AND :until"
        elif since is not None:
            condition += " AND #c >= :since"
        elif until is not None:
            condition += " AND #c <= :until"
        if since is not None:
            values[":since"] = serialize(float(since))
        if until is not None:
            values[":until"] = serialize(float(until))
        return {"TableName": self.table, "IndexName": STATUS_INDEX if status else CREATED_INDEX,
                "KeyConditionExpression": condition, "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values, "ScanIndexForward": False}



def find_batch(batches: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    """The newest of ``batches`` (``JobStore.batches``: the created-index, newest first, no scan) for
    the manifest ``name``: its key, its key below inputs/, or its file name when one folder has it."""
    wanted = name.strip().strip("/")
    found = [b for b in batches if _names_manifest(str(b.get("manifest_key", "")), wanted)]
    if not found:
        raise LookupError(f"no batch for a manifest named {name!r}; a manifest's key or file name "
                          "(e.g. inputs/show/episode.batch.csv or episode.batch.csv) names its batch")
    keys = sorted({str(b["manifest_key"]) for b in found})
    if len(keys) > 1:
        raise LookupError(f"{name!r} names {len(keys)} manifests: {', '.join(keys)}; give the key")
    return found[0]  # the index projects every attribute


def _names_manifest(key: str, wanted: str) -> bool:
    return bool(wanted) and (key == wanted or key.endswith("/" + wanted))


def _shown_name(item: dict[str, Any]) -> str:
    """The name the list shows for this job (``views.inputs_label``), as a search compares it."""
    inputs = {role: str(item[role]["key"]) for role in ("image", "audio") if isinstance(item.get(role), dict)}
    inputs.update({role: str(obj["key"]) for role, obj in (item.get("extra_inputs") or {}).items()})
    segment = int(item.get("segment_index", 0)) if item.get("parent_id") else None
    return name_label(str(item.get("folder", "")), str(item.get("stem", "")), inputs, segment=segment,
                      output_name=str(item.get("output_name", "")), batch_key=str(item.get("batch_key", "")),
                      batch_row=int(item.get("batch_row", 0))).casefold()


def list_job(item: dict[str, Any]) -> Job:
    """A Job from a list's attributes (LIST_ATTRIBUTES); the fields not read keep their defaults."""
    return Job.from_dict({"version": 0, "folder": "", "stem": "", "image": None, "audio": None,
                          "updated_at": item.get("created_at", 0.0), **item})


def _key(raw: Mapping[str, Any], index: str) -> dict[str, Any]:
    """An item's key in ``index`` (the table's key and the index's), to start the next page after it."""
    hash_value = raw["status"] if index == STATUS_INDEX else {"S": JOB_RECORD}
    return {"job_id": raw["job_id"], "created_at": raw["created_at"],
            "status" if index == STATUS_INDEX else "record_type": hash_value}


def _project(request: dict[str, Any], attributes: tuple[str, ...]) -> None:
    """Ask for these attributes only (by placeholder: several are reserved words)."""
    names = request.setdefault("ExpressionAttributeNames", {})
    placeholders = []
    for i, attribute in enumerate(attributes):
        names[f"#p{i}"] = attribute
        placeholders.append(f"#p{i}")
    request["ProjectionExpression"] = ", ".join(placeholders)


def _encode_cursor(index: str, key: Mapping[str, Any]) -> str:
    text = json.dumps({"i": index, "k": key}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, index: str) -> dict[str, Any] | None:
    """The start key in ``cursor``, or None when there is none or it belongs to another query."""
    if not cursor:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict) or data.get("i") != index or not isinstance(data.get("k"), dict):
        return None
    key = data["k"]
    wanted = {"job_id", "created_at", "status" if index == STATUS_INDEX else "record_type"}
    valid = all(isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("S", "N") for v in key.values())
    return {k: key[k] for k in wanted} if valid and wanted <= set(key) else None


def segments_of(store: Any, parent: Job, *, max_attempts: int = 10) -> Iterator[Job]:
    """A long talk's segment jobs (each index, each attempt, in talk order), read by their ids: a
    segment's id is made of its parent's, its index and its attempt (``model/longform.py``)."""
    from s2v.model.longform import segment_job_id

    for record in parent.segments:
        for attempt in range(max_attempts):
            job = store.get(segment_job_id(parent, int(record["index"]), attempt))
            if job is None:
                break
            yield job
