"""The DynamoDB job store. Every write is conditional; nothing above this module touches DynamoDB.

One table holds the jobs (key ``job_id``) plus bookkeeping items: for the spend guard,
``#guard`` (jobs in flight at the provider) and ``#spend#YYYY-MM-DD`` (estimated spend of that
UTC day); ``#task#<provider id>`` (which job holds a provider task); and markers that expire by
TTL (processed webhook ids, once-a-day events). Admission moves a job to SUBMITTING and reserves a
slot and its estimated cost in one transaction, so concurrent submitters can never exceed either
limit. Any write that first gives a job a provider id claims that task's item in the same
transaction, conditional on the job having no provider id and the task having no other holder:
one task is never held by two jobs, and a job never holds two tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from s2v.model import history
from s2v.model.jobs import IN_FLIGHT, TERMINAL, Event, Job, Status, final_cost, next_status
from s2v.model.provider_facts import RETENTION_SECONDS

GUARD_KEY = "#guard"
QUEUED_HINT = "queued_at"  # on the guard item: when a job last went QUEUED (absent: none waits)
SPEND_PREFIX = "#spend#"
TASK_PREFIX = "#task#"
# A task can be looked for in the provider's list for 7 days; its holder item outlives that.
TASK_CLAIM_TTL_SECONDS = RETENTION_SECONDS + 86400
DUE_INDEX = "due-index"
DUE_BUCKET = "due"  # active jobs, sorted by their next check
QUEUED_BUCKET = "queued"  # jobs waiting for admission, sorted by age
SETS_BUCKET = "sets"  # incomplete two-speaker sets, sorted by when their wait ends
SET_PREFIX = "#set#"
BATCH_PREFIX = "#batch#"  # one item per manifest upload (flows/batch.py)
BATCH_BUCKET = "batch"  # running batches, sorted by when their report is next rewritten
CREATED_INDEX = "created-index"
SPEND_CEILING = "spend ceiling"  # admit's wait reason when the caller's ceiling, not the budget, stopped it
BATCH_GET_LIMIT = 100  # BatchGetItem's most keys per call

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_from_dynamo(v) for v in value]
    return value


def serialize(value: Any) -> dict[str, Any]:
    return _serializer.serialize(_to_dynamo(value))


def deserialize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _won(write: Callable[[], object]) -> bool:
    """Run one conditional write: True when it took effect, False when its condition failed (another
    caller got there first, or the item is not in the state the write expects)."""
    try:
        write()
    except ClientError as exc:
        if _is_condition_failure(exc):
            return False
        raise
    return True


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )


def _cancellation_reasons(exc: ClientError) -> list[str]:
    return [str(r.get("Code") or "") for r in exc.response.get("CancellationReasons", [])]


@dataclass(frozen=True)
class Limits:
    max_in_flight: int
    daily_budget_usd: float


@dataclass(frozen=True)
class GuardState:
    in_flight: int
    spent_today_usd: float
    day: str


class JobStore:
    def __init__(self, client: Any, table: str, *, clock: Any = time.time, ttl_days: int = 30) -> None:
        self._db = client
        self.table = table
        self._clock = clock
        self._ttl_seconds = ttl_days * 86400

    # --- reads -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        resp = self._db.get_item(TableName=self.table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        item = resp.get("Item")
        return Job.from_dict(deserialize_item(item)) if item and not job_id.startswith("#") else None

    def due(self, now: float, *, limit: int = 50) -> list[Job]:
        """Active jobs whose next check is due, most overdue first, through the sparse index."""
        return self._query_bucket(DUE_BUCKET, now, limit)

    def active(self) -> list[Job]:
        """Every active job (the due index's bucket, however far off its next check), all pages."""
        jobs: list[Job] = []
        paginator = self._db.get_paginator("query")
        for page in paginator.paginate(TableName=self.table, IndexName=DUE_INDEX,
                                       KeyConditionExpression="poll_bucket = :b",
                                       ExpressionAttributeValues={":b": {"S": DUE_BUCKET}}):
            jobs += [Job.from_dict(deserialize_item(i)) for i in page.get("Items", [])]
        return jobs

    def queued(self, *, limit: int = 50) -> list[Job]:
        """Jobs waiting for admission, oldest first."""
        return self._query_bucket(QUEUED_BUCKET, float("inf"), limit)

    def _query_bucket(self, bucket: str, until: float, limit: int) -> list[Job]:
        condition = "poll_bucket = :b"
        values: dict[str, Any] = {":b": {"S": bucket}}
        if until != float("inf"):
            condition += " AND next_check_at <= :until"
            values[":until"] = serialize(until)
        resp = self._db.query(TableName=self.table, IndexName=DUE_INDEX, KeyConditionExpression=condition,
                              ExpressionAttributeValues=values, Limit=limit)
        return [Job.from_dict(deserialize_item(i)) for i in resp.get("Items", [])]

    def scan_jobs(self) -> Iterator[Job]:
        """Every job, for the operator CLI only (never on a Lambda hot path)."""
        paginator = self._db.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table):
            for item in page.get("Items", []):
                data = deserialize_item(item)
                if not str(data["job_id"]).startswith("#"):
                    yield Job.from_dict(data)

    def guard_state(self, now: float) -> GuardState:
        day = utc_day(now)
        guard = self._get_raw(GUARD_KEY)
        spend = self._get_raw(SPEND_PREFIX + day)
        return GuardState(
            in_flight=int(guard.get("in_flight", 0)),
            spent_today_usd=float(spend.get("spent", 0.0)),
            day=day,
        )

    def spent_on(self, day: str) -> float:
        """The estimated spend reserved for UTC ``day`` (the spend guard's counter)."""
        return float(self._get_raw(SPEND_PREFIX + day).get("spent", 0.0))

    def task_holder(self, provider_id: str) -> str:
        """The job holding provider task ``provider_id``, or "" when none does."""
        return str(self._get_raw(TASK_PREFIX + provider_id).get("owner", "")) if provider_id else ""

    def _get_raw(self, key: str) -> dict[str, Any]:
        item = self._db.get_item(TableName=self.table, Key={"job_id": {"S": key}}, ConsistentRead=True).get("Item")
        return deserialize_item(item) if item else {}

    # --- writes ------------------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        """Insert ``job`` unless a job with its id exists; return whichever is stored.

        This conditional put is what makes duplicate and concurrent S3 events collapse into one job.
        """
        return self.create_once(job)[0]

    def create_once(self, job: Job) -> tuple[Job, bool]:
        """``create``, saying whether this call inserted the job (True) or found it (False)."""
        item = job.to_item()  # what differs from a new job's defaults (model/jobs.py)
        item["history"] = [{"status": str(job.status), "at": job.created_at, "note": "created"}]
        item.update(self._index_fields(job.status, job.next_check_at or job.created_at))
        if job.status in TERMINAL:
            item["expires_at"] = int(job.updated_at + self._ttl_seconds)
        try:
            self._db.put_item(
                TableName=self.table,
                Item={k: serialize(v) for k, v in item.items() if v is not None},
                ConditionExpression="attribute_not_exists(job_id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",  # the winner's job, without a GetItem
            )
            return Job.from_dict(item), True
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            stored = exc.response.get("Item")
        existing = Job.from_dict(deserialize_item(stored)) if stored else self.get(job.job_id)
        assert existing is not None, "conditional put failed but the job is missing"
        return existing, False

    def transition(self, job: Job, event: Event, *, note: str = "", **fields: Any) -> Job | None:
        """Move ``job`` along ``event`` if it is still at the status and version we read.

        Returns the updated job, or None when the event does not apply or someone else changed
        the job first (both are harmless no-ops for the caller). Leaving an in-flight status
        releases the provider slot in the same transaction.
        """
        new_status = next_status(job.status, event)
        if new_status is None:
            return None
        now = self._clock()
        if new_status in TERMINAL and "final_cost_usd" not in fields:
            fields = {**fields, "final_cost_usd": final_cost(job, refunded=bool(fields.get("refund")))}
        fields = self._defer_fields(job, new_status, fields)
        update = self._job_update(job, new_status, now, note, fields)
        extra: list[dict[str, Any]] = []
        guard: dict[str, Any] | None = None
        if job.status in IN_FLIGHT and new_status not in IN_FLIGHT:
            guard = self._counter_update(GUARD_KEY, "in_flight", -1)
            extra.append(guard)
            # Refund only when the provider certainly did not take the job.
            if new_status is Status.QUEUED or fields.get("refund"):
                extra += self._refund(job)
        if new_status is Status.QUEUED and job.status is not Status.QUEUED:
            # The guard says a job waits: its stream record then wakes the release of queued jobs
            # when a slot frees (flows/stream.py). Cleared by the release that finds none waiting.
            if guard is None:
                guard = {"Update": {"TableName": self.table, "Key": {"job_id": {"S": GUARD_KEY}},
                                    "UpdateExpression": "", "ExpressionAttributeValues": {}}}
                extra.append(guard)
            spec = guard["Update"]
            spec["UpdateExpression"] = (spec["UpdateExpression"] + " SET " + QUEUED_HINT + " = :queued_at").strip()
            spec["ExpressionAttributeValues"][":queued_at"] = serialize(now)
        return self._commit(job, new_status, now, update, extra, fields, note)

    def queued_hint(self) -> float | None:
        """When a job last went QUEUED, as the guard says (None: none waits)."""
        value = self._get_raw(GUARD_KEY).get(QUEUED_HINT)
        return None if value is None else float(value)

    def clear_queued_hint(self, seen: float) -> bool:
        """Drop the guard's "a job waits" hint set at ``seen``; False when a job was queued since."""
        return _won(lambda: self._db.update_item(
            TableName=self.table, Key={"job_id": {"S": GUARD_KEY}}, UpdateExpression=f"REMOVE {QUEUED_HINT}",
            ConditionExpression=f"{QUEUED_HINT} = :seen", ExpressionAttributeValues={":seen": serialize(seen)}))

    def _defer_fields(self, job: Job, new_status: Status, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Back to waiting from an admission: its reservation was refunded, so it holds none. A job
        becoming a parent gets the (empty) tallies its segments are counted into: items are written
        without their defaults, and ``settle_segment``'s condition needs them present."""
        if new_status is Status.QUEUED and job.status in IN_FLIGHT:
            return {**fields, "admitted_day": "", "reserved_cost_usd": 0.0}
        if new_status is Status.SPLITTING:
            return {"rendered": {}, "failed_segments": {}, **fields}
        return dict(fields)

    def adopt(self, job: Job, provider_id: str, *, note: str, **fields: Any) -> tuple[Job | None, str]:
        """Give a SUBMITTING job without a provider id the task found for it (SUBMITTED).

        Returns (job, "") on success; (None, "held") when another job holds the task; (None,
        "changed") when the job is no longer what was read (another reconciler, a webhook, a cancel).
        """
        if job.status is not Status.SUBMITTING or job.provider_id or not provider_id:
            return None, "changed"
        now = self._clock()
        fields = {**fields, "provider_id": provider_id}
        update = self._job_update(job, Status.SUBMITTED, now, note, fields)
        claim = self._claim(job, fields, update, now)
        assert claim is not None
        try:
            self._db.transact_write_items(TransactItems=[update, claim])
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            reasons = _cancellation_reasons(exc)
            if reasons and reasons[0] != "ConditionalCheckFailed" and reasons[-1] == "ConditionalCheckFailed":
                return None, "held"
            return None, "changed"
        return self._after(job, Status.SUBMITTED, now, note, fields), ""

    def admit(self, job: Job, *, cost_usd: float, limits: Limits, spend_ceiling: float | None = None,
              behind_queue: bool = False, **fields: Any) -> tuple[Job | None, str]:
        """Reserve a provider slot and the job's estimated cost, and move it to SUBMITTING.

        ``spend_ceiling``: a second cap on the day's spend counter besides the budget (the counter's
        value at which the provider balance read earlier is used up), checked in the same write.
        ``behind_queue``: wait while the guard says a job waits (``QUEUED_HINT``), checked in the same
        write: a fresh upload never takes a slot ahead of older queued jobs, and costs no query.

        Returns (job, "") when admitted, (None, reason) when a limit says wait (``SPEND_CEILING``
        when the ceiling was the tighter cap), and (None, "") when another submitter won the race.
        """
        if next_status(job.status, Event.ADMIT) is None:
            return None, ""
        now = self._clock()
        day = utc_day(now)
        fields = {**fields, "admitted_at": now, "admitted_day": day, "reserved_cost_usd": cost_usd}
        update = self._job_update(job, Status.SUBMITTING, now, "admitted", fields)
        guard = self._counter_update(GUARD_KEY, "in_flight", 1)
        guard["Update"]["ConditionExpression"] = "(attribute_not_exists(in_flight) OR in_flight < :limit)" + (
            f" AND attribute_not_exists({QUEUED_HINT})" if behind_queue else "")
        guard["Update"]["ExpressionAttributeValues"][":limit"] = serialize(limits.max_in_flight)
        spend = self._counter_update(SPEND_PREFIX + day, "spent", cost_usd)
        # Day items expire like finished jobs instead of piling up one per day forever.
        spend["Update"]["UpdateExpression"] += " SET expires_at = :ttl"
        spend["Update"]["ExpressionAttributeValues"][":ttl"] = serialize(int(now + self._ttl_seconds))
        spend["Update"]["ConditionExpression"] = "attribute_not_exists(spent) OR spent <= :limit"
        budget_cap = round(limits.daily_budget_usd - cost_usd, 6)
        ceiling_cap = None if spend_ceiling is None else round(spend_ceiling - cost_usd, 6)
        capped_by_ceiling = ceiling_cap is not None and ceiling_cap < budget_cap
        spend["Update"]["ExpressionAttributeValues"][":limit"] = serialize(
            ceiling_cap if capped_by_ceiling else budget_cap
        )
        try:
            self._db.transact_write_items(TransactItems=[update, guard, spend])
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return None, ""
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                if behind_queue:
                    return None, (f"older jobs are waiting for a slot, or {limits.max_in_flight} job(s) are "
                                  "already in flight (MaxInFlightJobs)")
                return None, f"{limits.max_in_flight} job(s) already in flight (MaxInFlightJobs)"
            if len(reasons) > 2 and reasons[2] == "ConditionalCheckFailed":
                if capped_by_ceiling:
                    return None, SPEND_CEILING
                return None, f"today's budget of ${limits.daily_budget_usd:.2f} is reached (DailyBudgetUSD)"
            raise
        return self._after(job, Status.SUBMITTING, now, "admitted", fields), ""

    def nudge(self, job_id: str) -> bool:
        """Bump the version of a job being delivered (COMPLETED or STITCHING), so its next versioned
        write fails and its writer reads it again (``flows.outputs``: its output was moved aside
        before its record named it). False for a job in any other state."""
        return _won(lambda: self._db.update_item(
            TableName=self.table, Key={"job_id": {"S": job_id}}, UpdateExpression="SET #v = #v + :one",
            ConditionExpression="#s IN (:completed, :stitching)",
            ExpressionAttributeNames={"#v": "version", "#s": "status"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":completed": {"S": Status.COMPLETED.value},
                                       ":stitching": {"S": Status.STITCHING.value}}))

    def repoint(self, job_id: str, field: str, old: str, new: str) -> bool:
        """Point a job's output field (``output_key``, ``report_key``, ``error_key``) from ``old`` to
        ``new`` (its object was kept aside for a newer job; "" removes it), only while it still names
        ``old``. No version bump: it races no state change, and a DELIVERED write that lands after it
        is checked by its writer (``flows.outputs.settle_location``)."""
        if field not in ("output_key", "report_key", "error_key"):
            raise ValueError(f"not an output field: {field}")
        values: dict[str, Any] = {":old": serialize(old)}
        if new:
            expression, values[":new"] = "SET #f = :new", serialize(new)
        else:
            expression = "REMOVE #f"
        return _won(lambda: self._db.update_item(
            TableName=self.table, Key={"job_id": {"S": job_id}}, UpdateExpression=expression,
            ConditionExpression="#f = :old", ExpressionAttributeNames={"#f": field},
            ExpressionAttributeValues=values))

    def touch(self, job: Job, **fields: Any) -> Job | None:
        """Update fields without a status change (e.g. the next check time), still conditional.

        ``refund=True`` on an ended job gives its day's reservation back in the same write (a
        cancelled job whose POST turned out never to have reached the provider)."""
        now = self._clock()
        extra: list[dict[str, Any]] = []
        if fields.get("refund") and job.status in TERMINAL:
            extra, fields = self._refund(job), {**fields, "final_cost_usd": 0.0}
        update = self._job_update(job, job.status, now, "", fields)
        return self._commit(job, job.status, now, update, extra, fields, "")

    def settle_segment(self, segment: Job, outcome: str, *, failure: Mapping[str, Any] | None = None) -> bool:
        """Count an ended segment on its parent, once: the segment is marked ``outcome`` (rendered |
        failed | retried) and, in the same transaction, the parent (still RENDERING) records it:
        ``rendered[index] = segment id`` and ``segments_rendered + 1``, or ``failed_segments[index]``
        and ``segments_failed + 1``. False when it was counted before or the parent is not SPLITTING
        or RENDERING.

        The counters change without a version bump: segments end concurrently, and each owns its
        index, so they never contend with each other or with the parent's versioned writes.
        """
        mark = {
            "Update": {
                "TableName": self.table,
                "Key": {"job_id": {"S": segment.job_id}},
                "UpdateExpression": "SET segment_settled = :outcome",
                "ConditionExpression": "(attribute_not_exists(segment_settled) OR segment_settled = :none) "
                                       "AND #status = :status",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":outcome": serialize(outcome), ":none": serialize(""),
                                              ":status": serialize(str(segment.status))},
            }
        }
        transact = [mark]
        if outcome != "retried":
            counter, field = ("segments_rendered", "rendered") if outcome == "rendered" else (
                "segments_failed", "failed_segments")
            value = segment.job_id if outcome == "rendered" else dict(failure or {})
            transact.append({
                "Update": {
                    "TableName": self.table,
                    "Key": {"job_id": {"S": segment.parent_id}},
                    "UpdateExpression": f"SET #field.#index = :value ADD {counter} :one",
                    # A segment may end while the rest of its talk is still being cut.
                    "ConditionExpression": "#status IN (:splitting, :rendering) AND attribute_exists(#field) "
                                           "AND attribute_not_exists(#field.#index)",
                    "ExpressionAttributeNames": {"#status": "status", "#field": field,
                                                 "#index": str(segment.segment_index)},
                    "ExpressionAttributeValues": {":value": serialize(value), ":one": serialize(1),
                                                  ":splitting": serialize(str(Status.SPLITTING)),
                                                  ":rendering": serialize(str(Status.RENDERING))},
                }
            })
        return _won(lambda: self._db.transact_write_items(TransactItems=transact))

    def seen(self, marker: str) -> bool:
        return bool(self._get_raw(marker))

    def remember(self, marker: str, *, ttl_seconds: int) -> None:
        """Record a marker (e.g. a processed webhook id) that expires by TTL."""
        self._db.put_item(TableName=self.table, Item={
            "job_id": {"S": marker}, "expires_at": serialize(int(self._clock() + ttl_seconds))})

    def remember_once(self, marker: str, *, ttl_seconds: int) -> bool:
        """Record a marker unless it exists; True only for the one caller that recorded it (e.g.
        the sender of a once-a-day event, however many containers race for it)."""
        item = {"job_id": {"S": marker}, "expires_at": serialize(int(self._clock() + ttl_seconds))}
        return _won(lambda: self._db.put_item(TableName=self.table, Item=item,
                                              ConditionExpression="attribute_not_exists(job_id)"))

    # --- incomplete sets: a set missing a file fails only after a wait -------------------------

    def hold_incomplete_set(self, folder: str, stem: str, *, until: float, missing: str) -> bool:
        """Start the wait for an incomplete set (folder, stem) unless one is running; True when
        this call started it. The sparse index lists it under SETS_BUCKET until ``until``."""
        key = SET_PREFIX + "/".join((folder, stem))
        item = {"job_id": {"S": key}, "poll_bucket": {"S": SETS_BUCKET}, "next_check_at": serialize(until),
                "folder": {"S": folder}, "stem": {"S": stem}, "missing": {"S": missing},
                "expires_at": serialize(int(until + self._ttl_seconds))}
        return _won(lambda: self._db.put_item(
            TableName=self.table, Item=item,
            ConditionExpression="attribute_not_exists(job_id) OR attribute_not_exists(poll_bucket)"))

    # --- batches -----------------------------------------------------------------------------
    # A batch item is bookkeeping, not a job: ``#batch#<id>``, ``record_type`` "batch" (so the
    # created-index lists batches newest first), no ``status``. While it runs it sits in the due
    # index under its own bucket; ``rev`` counts "a row changed" nudges and ``lease_until`` makes one
    # writer at a time rewrite its report.

    def create_batch(self, batch: Mapping[str, Any]) -> bool:
        """Record a batch unless one with its id exists; True only for the one caller that did."""
        item = {**batch, "job_id": BATCH_PREFIX + str(batch["batch_id"]), "record_type": "batch"}
        stored = {k: serialize(v) for k, v in item.items() if v is not None}
        return _won(lambda: self._db.put_item(TableName=self.table, Item=stored,
                                              ConditionExpression="attribute_not_exists(job_id)"))

    def due_incomplete_sets(self, now: float, *, limit: int = 50) -> list[dict[str, Any]]:
        """Incomplete sets whose wait has ended: {"key", "folder", "stem", "missing"}."""
        return [{"key": d["job_id"], "folder": d["folder"], "stem": d["stem"], "missing": d.get("missing", "")}
                for d in self._due(SETS_BUCKET, now, limit)]

    def _due(self, bucket: str, now: float, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` items of one due-index bucket whose check time has come."""
        resp = self._db.query(TableName=self.table, IndexName=DUE_INDEX,
                              KeyConditionExpression="poll_bucket = :b AND next_check_at <= :until",
                              ExpressionAttributeValues={":b": {"S": bucket}, ":until": serialize(now)},
                              Limit=limit)
        return [deserialize_item(i) for i in resp.get("Items", [])]

    def release_incomplete_set(self, key: str) -> bool:
        """End a set's wait (it left the index; TTL removes the item). True for the one caller
        that ended it, so concurrent pollers judge each set once."""
        return _won(lambda: self._db.update_item(TableName=self.table, Key={"job_id": {"S": key}},
                                                 UpdateExpression="REMOVE poll_bucket, next_check_at",
                                                 ConditionExpression="attribute_exists(poll_bucket)"))

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._get_raw(BATCH_PREFIX + batch_id) or None

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":f{i}": serialize(v) for i, v in enumerate(fields.values())}
        self._db.update_item(TableName=self.table, Key={"job_id": {"S": BATCH_PREFIX + batch_id}},
                             UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
                             ConditionExpression="attribute_exists(job_id)",
                             ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def nudge_batch(self, batch_id: str) -> None:
        """A row of the batch changed: whoever holds (or next takes) the lease rewrites the report."""
        try:
            self._db.update_item(TableName=self.table, Key={"job_id": {"S": BATCH_PREFIX + batch_id}},
                                 UpdateExpression="ADD rev :one", ConditionExpression="attribute_exists(job_id)",
                                 ExpressionAttributeValues={":one": serialize(1)})
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise

    def claim_batch(self, batch_id: str, now: float, *, lease_seconds: float,
                    written_before: float | None = None) -> dict[str, Any] | None:
        """Take the batch's report lease; the batch as it is now, or None while someone else holds it
        (or, with ``written_before``, when its report was written after that time: too recently)."""
        condition = "attribute_exists(job_id) AND (attribute_not_exists(lease_until) OR lease_until < :now)"
        values = {":until": serialize(now + lease_seconds), ":now": serialize(now)}
        if written_before is not None:
            condition += " AND (attribute_not_exists(written_at) OR written_at <= :before)"
            values[":before"] = serialize(written_before)
        try:
            resp = self._db.update_item(
                TableName=self.table, Key={"job_id": {"S": BATCH_PREFIX + batch_id}},
                UpdateExpression="SET lease_until = :until", ConditionExpression=condition,
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
        except ClientError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        return deserialize_item(resp["Attributes"])

    def release_batch(self, batch_id: str, *, seen_rev: int, fields: Mapping[str, Any],
                      running: bool, next_check_at: float) -> bool:
        """Drop the lease and store what was written. False when a row changed meanwhile (``rev``
        moved): the lease is dropped anyway and the caller writes again."""
        sets = {**fields, "lease_until": 0}
        if running:
            sets.update(poll_bucket=BATCH_BUCKET, next_check_at=next_check_at)
        names = {f"#f{i}": k for i, k in enumerate(sets)}
        values = {f":f{i}": serialize(v) for i, v in enumerate(sets.values())}
        expression = "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(sets)))
        if not running:
            expression += " REMOVE poll_bucket, next_check_at"
        key = {"job_id": {"S": BATCH_PREFIX + batch_id}}
        try:
            self._db.update_item(TableName=self.table, Key=key, UpdateExpression=expression,
                                 ConditionExpression="attribute_not_exists(rev) OR rev = :seen",
                                 ExpressionAttributeNames=names,
                                 ExpressionAttributeValues={**values, ":seen": serialize(seen_rev)})
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            self._db.update_item(TableName=self.table, Key=key, UpdateExpression="SET lease_until = :zero",
                                 ExpressionAttributeValues={":zero": serialize(0)})
            return False
        return True

    def count_row_end(self, batch_id: str, job_id: str) -> tuple[int, int] | None:
        """Count a row's job as ended, once however often it is reported (a marker item in the same
        transaction). The batch's (ended rows, rows) after this call, or None if already counted."""
        try:
            self._db.transact_write_items(TransactItems=[
                # An update that creates the marker: the deliver role may update items, not put them.
                {"Update": {"TableName": self.table,
                            "Key": {"job_id": {"S": f"{BATCH_PREFIX}{batch_id}#ended#{job_id}"}},
                            "UpdateExpression": "SET expires_at = :ttl",
                            "ConditionExpression": "attribute_not_exists(job_id)",
                            "ExpressionAttributeValues": {":ttl": serialize(int(self._clock() + self._ttl_seconds))}}},
                {"Update": {"TableName": self.table, "Key": {"job_id": {"S": BATCH_PREFIX + batch_id}},
                            "UpdateExpression": "ADD ended :one", "ConditionExpression": "attribute_exists(job_id)",
                            "ExpressionAttributeValues": {":one": serialize(1)}}},
            ])
        except ClientError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        batch = self.get_batch(batch_id) or {}
        return int(batch.get("ended", 0)), int(batch.get("rows", 0))

    def row_progress(self, batch_id: str, job_id: str) -> tuple[int, int] | None:
        """The batch's (rows done, rows) counting this row's job as done, whether or not it has been
        counted yet (its marker item says); None when the batch is unknown."""
        batch = self.get_batch(batch_id)
        if not batch:
            return None
        rows, ended = int(batch.get("rows", 0)), int(batch.get("ended", 0))
        counted = bool(self._get_raw(f"{BATCH_PREFIX}{batch_id}#ended#{job_id}"))
        return min(rows, ended + (0 if counted else 1)), rows

    def finish_batch(self, batch_id: str, now: float) -> bool:
        """Mark the batch finished; True only for the one caller that did (it sends the event)."""
        return _won(lambda: self._db.update_item(
            TableName=self.table, Key={"job_id": {"S": BATCH_PREFIX + batch_id}},
            UpdateExpression="SET finished_at = :now, expires_at = :ttl",
            ConditionExpression="attribute_exists(job_id) AND attribute_not_exists(finished_at)",
            ExpressionAttributeValues={":now": serialize(now), ":ttl": serialize(int(now + self._ttl_seconds))}))

    def due_batches(self, now: float, *, limit: int = 10) -> list[dict[str, Any]]:
        return self._due(BATCH_BUCKET, now, limit)

    def batches(self, *, limit: int = 0) -> Iterator[dict[str, Any]]:
        """Batches, newest first, through the created-index (operator reads)."""
        paginator = self._db.get_paginator("query")
        count = 0
        for page in paginator.paginate(TableName=self.table, IndexName=CREATED_INDEX, ScanIndexForward=False,
                                       KeyConditionExpression="record_type = :t",
                                       ExpressionAttributeValues={":t": {"S": "batch"}}):
            for item in page.get("Items", []):
                yield deserialize_item(item)
                count += 1
                if limit and count >= limit:
                    return

    def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs among ``job_ids`` that exist, by id: BatchGetItem, 100 keys a call."""
        found: dict[str, Job] = {}
        for start in range(0, len(job_ids), BATCH_GET_LIMIT):
            keys: list[dict[str, Any]] = [{"job_id": {"S": i}} for i in job_ids[start:start + BATCH_GET_LIMIT]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(8):
                resp = self._db.batch_get_item(RequestItems=request)
                for item in resp.get("Responses", {}).get(self.table, []):
                    job = Job.from_dict(deserialize_item(item))
                    found[job.job_id] = job
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2 ** attempt))  # throttled: back off, then ask for the rest
        return found

    # --- helpers -----------------------------------------------------------------------------

    def _index_fields(self, status: Status, next_check_at: float) -> dict[str, Any]:
        if status in TERMINAL:
            return {}
        return {"poll_bucket": QUEUED_BUCKET if status is Status.QUEUED else DUE_BUCKET,
                "next_check_at": next_check_at}

    def _job_update(self, job: Job, new_status: Status, now: float, note: str,
                    fields: Mapping[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in fields.items() if k != "refund"}
        # An ended job leaves the poller's index, except a cancelled one whose POST may still have
        # reached the provider: it stays due (``next_check_at``) until its task is settled.
        # A later touch of an ended job changes its place only when it names ``next_check_at``.
        reindex = new_status is not job.status or "next_check_at" in fields
        settle_at = fields.get("next_check_at")
        keep_due = new_status is Status.CANCELLED and bool(settle_at)
        if new_status in TERMINAL:
            fields = {k: v for k, v in fields.items() if k not in ("poll_bucket", "next_check_at")}
        names = {"#status": "status", "#version": "version", "#updated": "updated_at"}
        values: dict[str, Any] = {
            ":cur": serialize(str(job.status)),
            ":ver": serialize(job.version),
            ":new": serialize(str(new_status)),
            ":next": serialize(job.version + 1),
            ":now": serialize(now),
        }
        sets = ["#status = :new", "#version = :next", "#updated = :now"]
        removes: list[str] = []
        if new_status is not job.status or note:
            # The whole bounded history (model/history.py): the write is conditional on the version
            # read, so ``job.history`` is the stored one.
            values[":hist"] = serialize(list(_next_history(job, new_status, now, note)))
            sets.append("history = :hist")
        if new_status in TERMINAL:
            if keep_due:
                values[":bucket"], values[":due"] = serialize(DUE_BUCKET), serialize(settle_at)
                sets += ["poll_bucket = :bucket", "next_check_at = :due"]
            elif reindex:
                removes += ["poll_bucket", "next_check_at"]
            sets.append("expires_at = :ttl")
            values[":ttl"] = serialize(int(now + self._ttl_seconds))
        else:
            values[":bucket"] = serialize(QUEUED_BUCKET if new_status is Status.QUEUED else DUE_BUCKET)
            sets.append("poll_bucket = :bucket")
            if new_status is Status.QUEUED and "next_check_at" not in fields:
                # Queued jobs sort by age in their own partition: the poller releases oldest first.
                fields = {**fields, "next_check_at": job.created_at}
        for i, (name, value) in enumerate(fields.items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":f{i}"] = serialize(value.to_dict() if hasattr(value, "to_dict") else _plain(value))
                sets.append(f"#f{i} = :f{i}")
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"job_id": {"S": job.job_id}},
                "UpdateExpression": expression,
                "ConditionExpression": "#status = :cur AND #version = :ver",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _counter_update(self, key: str, attr: str, delta: float) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"job_id": {"S": key}},
                "UpdateExpression": f"ADD {attr} :delta",
                "ExpressionAttributeValues": {":delta": serialize(delta)},
            }
        }

    def _refund(self, job: Job) -> list[dict[str, Any]]:
        day, cost = job.admitted_day, job.reserved_cost_usd
        return [self._counter_update(SPEND_PREFIX + day, "spent", -cost)] if day and cost else []

    def _claim(self, job: Job, fields: Mapping[str, Any], update: dict[str, Any],
               now: float) -> dict[str, Any] | None:
        """When this write first gives ``job`` a provider id: the task's holder item, to write in
        the same transaction, and ``update`` made conditional on the job still having no id."""
        provider_id = fields.get("provider_id")
        if not provider_id or job.provider_id:
            return None
        spec = update["Update"]
        spec["ConditionExpression"] += " AND (attribute_not_exists(#pid) OR #pid = :noid)"
        spec["ExpressionAttributeNames"]["#pid"] = "provider_id"
        spec["ExpressionAttributeValues"][":noid"] = serialize("")
        return {
            "Put": {
                "TableName": self.table,
                "Item": {"job_id": {"S": TASK_PREFIX + str(provider_id)}, "owner": {"S": job.job_id},
                         "expires_at": serialize(int(now + TASK_CLAIM_TTL_SECONDS))},
                "ConditionExpression": "attribute_not_exists(job_id) OR #owner = :me",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {":me": {"S": job.job_id}},
            }
        }

    def _commit(self, job: Job, new_status: Status, now: float, update: dict[str, Any],
                extra: list[dict[str, Any]], fields: Mapping[str, Any], note: str) -> Job | None:
        claim = self._claim(job, fields, update, now)
        if claim is not None:
            extra = [*extra, claim]
        try:
            if extra:
                self._db.transact_write_items(TransactItems=[update, *extra])
            else:
                self._db.update_item(**update["Update"])
        except ClientError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        return self._after(job, new_status, now, note, fields)

    def _after(self, job: Job, new_status: Status, now: float, note: str,
               fields: Mapping[str, Any]) -> Job:
        defaults = Job.__dataclass_fields__
        known = {k: (v if v is not None else defaults[k].default) for k, v in fields.items() if k in defaults}
        entries = _next_history(job, new_status, now, note) if new_status is not job.status or note else job.history
        return job.with_changes(status=new_status, version=job.version + 1, updated_at=now,
                                history=entries, **known)


def _next_history(job: Job, new_status: Status, now: float, note: str) -> tuple[dict[str, Any], ...]:
    return history.append(job.history, history.entry(str(new_status), now, note))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return value
