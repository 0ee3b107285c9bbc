"""Batches: a manifest upload → one ordinary job per row → one report rewritten as rows end.

Identity: a batch is (manifest key, manifest bytes), so uploading the same manifest again finds
the batch and makes nothing new; a row's job id is (batch, row number), so each row is one job
however often its message is delivered, and two rows naming the same files are two jobs.

Fan-out: the manifest's ingest records the batch (a conditional put: one winner), writes the
first report and sends the rows to the ingest queue in chunks of ``CHUNK_ROWS``, so a 10,000-row
manifest is 1,000 small messages, each well inside one ingest invocation. A chunk makes a job for
each row whose files are there; rows still missing a file are sent again (the queue's per-message
delay) until the batch's wait window ends, and then fail with the missing key named.

Report: ``outputs/<folder>/<manifest name>.report.json`` is always rebuilt from the jobs table
(row jobs are read by their computed ids, 100 a call), never patched, by one writer at a time (a
lease on the batch item). A row that ends bumps the batch's ``rev``; the writer compares ``rev``
before dropping the lease and writes again if a row ended meanwhile, so the last report written
always reflects the table after the last row ended. The writer that first sees every row ended
marks the batch finished (conditional) and sends the "Batch finished" event once. The poller
also rewrites due batches, so a crashed writer or a lost nudge only delays the report.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from s2v.adapters.notify import BATCH_FINISHED
from s2v.deps import Deps
from s2v.flows import outputs
from s2v.flows.ingest import ORPHAN_AFTER_SECONDS, IngestResult, process_received
from s2v.model.errors import ConfigError, InputError
from s2v.model.jobs import Failure, InputObject, Job, Status, row_job_id
from s2v.model.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestError,
    Row,
    batch_id_for,
    manifest_stem,
    parse_manifest,
)
from s2v.model.naming import output_base
from s2v.model.report import batch_report, rejected_batch_report

if TYPE_CHECKING:
    from s2v.flows.ingest import IngestResult

logger = Logger(child=True)
CHUNK_ROWS = 10
ROWS_MESSAGE = "s2v_batch_rows"
LEASE_SECONDS = 120.0
MAX_SQS_DELAY_SECONDS = 900
REWRITES_PER_CALL = 5


def report_key(manifest_key: str, deps: Deps) -> str:
    settings = deps.settings
    folder = posixpath.dirname(manifest_key[len(settings.input_prefix):])
    return output_base(folder, manifest_stem(manifest_key), settings.output_prefix) + ".report.json"


def on_manifest(key: str, deps: Deps) -> IngestResult:
    """A manifest was uploaded: record its batch once, write its first report, fan its rows out."""
    settings = deps.settings
    raw = deps.objects.read_small(key, MAX_MANIFEST_BYTES)
    batch_id = batch_id_for(key, raw)
    now = deps.clock()
    report = report_key(key, deps)
    base: dict[str, Any] = {"batch_id": batch_id, "manifest_key": key, "report_key": report, "created_at": now}
    try:
        manifest = parse_manifest(raw, key, input_prefix=settings.input_prefix, max_rows=settings.max_manifest_rows,
                                  max_prompt_chars=settings.max_prompt_chars)
    except ManifestError as exc:
        error = {"code": exc.code, "reason": exc.reason}
        if deps.store.create_batch({**base, "state": "rejected", "rows": 0, "error": error, "finished_at": now,
                                    "expires_at": int(now + settings.job_ttl_days * 86400)}):
            outputs.put_batch_report(deps, report, rejected_batch_report(base, error, now), batch_id=batch_id)
        logger.info("manifest rejected", extra={"key": key, "code": exc.code})
        return IngestResult("failed", batch_id, detail=exc.reason)
    if not settings.ingest_queue_url:
        raise ConfigError("S2V_INGEST_QUEUE_URL is not set: a manifest's rows are fanned out through the ingest queue")
    created = deps.store.create_batch({
        **base, "state": "running", "rows": len(manifest.rows), "valid_rows": manifest.valid_rows,
        "folder": manifest.folder, "wait_until": now + settings.batch_wait_seconds, "rev": 0, "lease_until": 0,
        "fanned_out": False, "poll_bucket": "batch", "next_check_at": now + settings.batch_retry_seconds,
    })
    batch = deps.store.get_batch(batch_id) or {}
    if not created and batch.get("fanned_out"):
        return IngestResult("duplicate", batch_id, detail=f"this manifest is already batch {batch_id}")
    # The first report, then the rows: re-sending them after a crash here is harmless (rows are idempotent).
    advance(batch_id, deps)
    numbers = [row.number for row in manifest.rows]
    send_rows(batch_id, numbers, deps, delay=0)
    deps.store.update_batch(batch_id, fanned_out=True)
    logger.info("manifest fanned out", extra={"key": key, "batch_id": batch_id, "rows": len(numbers)})
    return IngestResult("batch", batch_id, detail=f"{len(numbers)} rows")


def send_rows(batch_id: str, numbers: list[int], deps: Deps, *, delay: int) -> None:
    entries = [{"Id": str(i), "DelaySeconds": delay,
                "MessageBody": json.dumps({ROWS_MESSAGE: {"batch_id": batch_id,
                                                          "rows": numbers[start:start + CHUNK_ROWS]}})}
               for i, start in enumerate(range(0, len(numbers), CHUNK_ROWS))]
    for start in range(0, len(entries), 10):  # SendMessageBatch takes ten
        resp = deps.sqs.send_message_batch(QueueUrl=deps.settings.ingest_queue_url, Entries=entries[start:start + 10])
        if resp.get("Failed"):
            raise RuntimeError(f"the ingest queue refused batch rows: {resp['Failed']}")


def load_manifest(batch: dict[str, Any], deps: Deps) -> Manifest | None:
    """The batch's manifest as it was uploaded; None if it was replaced or deleted since."""
    settings = deps.settings
    key = str(batch["manifest_key"])
    raw = deps.objects.read_small_if_exists(key, MAX_MANIFEST_BYTES)
    if raw is None or batch_id_for(key, raw) != batch["batch_id"]:
        return None
    return parse_manifest(raw, key, input_prefix=settings.input_prefix, max_rows=settings.max_manifest_rows,
                          max_prompt_chars=settings.max_prompt_chars)


def on_rows(message: dict[str, Any], deps: Deps, *, deadline: float | None = None) -> str:
    """A chunk of a batch's rows: make each row's job once, or let the row wait for its files.

    ``deadline`` (a ``time.monotonic()`` value): rows not reached by then are queued again, so a
    slow provider never makes an ingest invocation time out half-way through its messages."""
    batch_id = str(message["batch_id"])
    batch = deps.store.get_batch(batch_id)
    if not batch or batch.get("state") != "running":
        return "ignored"
    manifest = load_manifest(batch, deps)
    if manifest is None:
        logger.warning("manifest replaced; its rows stop", extra={"batch_id": batch_id})
        deps.store.update_batch(batch_id, state="superseded")
        return "superseded"
    now = deps.clock()
    waiting: list[int] = []
    later: list[int] = []
    numbers = [int(n) for n in message["rows"]]
    existing = deps.store.get_many([row_job_id(batch_id, n) for n in numbers])
    heads: dict[str, dict[str, Any] | None] = {}  # rows often share a portrait: one HEAD per key per chunk

    def head(key: str) -> dict[str, Any] | None:
        if key not in heads:
            heads[key] = deps.objects.head(key)
        return heads[key]

    for number in numbers:
        if deadline is not None and time.monotonic() > deadline:
            later.append(number)
            continue
        row = manifest.rows[number - 1]
        try:
            if _on_row(row, manifest, batch, existing, head, now, deps):
                waiting.append(row.number)
        except Exception:
            # One row never fails its chunk. It is tried again within the wait window; a row that
            # never made a job is then failed by the poller (row_lost), a job that exists ends by
            # its own bounded attempts.
            logger.exception("batch row failed", extra={"batch_id": batch_id, "row": row.number,
                                                        "job_id": row_job_id(batch_id, row.number)})
            if now < float(batch["wait_until"]):
                waiting.append(row.number)
    if waiting:
        delay = int(min(MAX_SQS_DELAY_SECONDS, deps.settings.batch_retry_seconds,
                        max(1.0, float(batch["wait_until"]) - now + 1)))
        send_rows(batch_id, waiting, deps, delay=delay)
    if later:
        send_rows(batch_id, later, deps, delay=0)
    return f"{len(numbers) - len(waiting) - len(later)} rows done, {len(waiting)} waiting, {len(later)} later"


def _on_row(row: Row, manifest: Manifest, batch: dict[str, Any], existing: dict[str, Job],
            head: Callable[[str], dict[str, Any] | None], now: float, deps: Deps) -> bool:
    """Make one row's job (or fail the row); True when the row waits for its files."""
    batch_id = str(batch["batch_id"])
    job_id = row_job_id(batch_id, row.number)
    if job_id in existing:
        return False
    if row.error is not None:
        _fail_row(job_id, row, manifest, batch_id, row.error, deps)
        return False
    image, audio = head(row.image_key), head(row.audio_key)
    if image is None or audio is None:
        if now < float(batch["wait_until"]):
            return True
        missing = " and ".join(k for k, h in ((row.image_key, image), (row.audio_key, audio)) if h is None)
        minutes = max(1, round(deps.settings.batch_wait_seconds / 60))
        _fail_row(job_id, row, manifest, batch_id, InputError(
            f"{manifest.key} row {row.number}: {missing} was not in the bucket within {minutes} minute(s) of the "
            f"manifest. Upload it, then run `s2v retry {job_id}` to render this row (no other row renders again).",
            code="missing_input"), deps)
        return False
    job = deps.store.create(_row_job(job_id, row, manifest, batch_id, _input(row.image_key, image),
                                     _input(row.audio_key, audio), now, now + ORPHAN_AFTER_SECONDS))
    if job.status is Status.RECEIVED:
        process_received(job, deps)
    return False


def _input(key: str, head: dict[str, Any]) -> InputObject:
    return InputObject(key=key, etag=str(head.get("ETag", "")).strip('"'), size=int(head.get("ContentLength", 0)))


def _row_job(job_id: str, row: Row, manifest: Manifest, batch_id: str, image: InputObject | None,
             audio: InputObject | None, now: float, next_check_at: float) -> Job:
    return Job(job_id=job_id, status=Status.RECEIVED, version=0, folder=manifest.folder,
               stem=row.stem or f"{manifest_stem(manifest.key)}-row{row.number}", image=image, audio=audio,
               created_at=now, updated_at=now, next_check_at=next_check_at, batch_id=batch_id,
               batch_key=manifest.key, batch_row=row.number, row_params=dict(row.params),
               row_text=not row.from_json, row_image_key=row.image_key, row_audio_key=row.audio_key)


def _fail_row(job_id: str, row: Row, manifest: Manifest, batch_id: str, error: InputError, deps: Deps) -> Job:
    """A row that cannot be valid is a FAILED job: never submitted, counted, and reported with its reason."""
    now = deps.clock()
    job = _row_job(job_id, row, manifest, batch_id, None, None, now, 0.0)
    failure = Failure(stage="validate", code=error.code, reason=error.reason)
    job = job.with_changes(status=Status.FAILED, failure=failure,
                           output_name=f"{job.stem}.row{row.number}")  # its error report is the row's own
    return deps.store.create(job)  # the row's job as stored: this one, or one made meanwhile


def _fail_lost_rows(batch_id: str, manifest: Manifest, jobs: dict[str, Job], deps: Deps) -> dict[str, Job]:
    """Rows with no job long after the wait window: their fan-out message never made one (it went to
    the ingest DLQ, or was lost), so without this the batch would never finish. Each becomes a FAILED
    job like any row that cannot be valid; the conditional create keeps one job per row should the
    message still be processed, and its stream record counts the row and rewrites the report."""
    failed: dict[str, Job] = {}
    hours = max(1, round((deps.settings.batch_wait_seconds + deps.settings.batch_row_lost_seconds) / 3600))
    for row in manifest.rows:
        job_id = row_job_id(batch_id, row.number)
        if job_id in jobs:
            continue
        reason = (f"{manifest.key} row {row.number} was never turned into a job within about {hours} hour(s) of "
                  "the manifest (its message from the manifest's fan-out went to the ingest dead-letter queue, "
                  f"IngestDLQ, or was lost); nothing was submitted for it. Run `s2v retry {job_id}` to render it.")
        failed[job_id] = _fail_row(job_id, row, manifest, batch_id, InputError(reason, code="row_lost"), deps)
        logger.warning("batch row lost before it became a job", extra={"batch_id": batch_id, "row": row.number})
    return failed


def row_ended(job: Job, deps: Deps) -> str:
    """A row's job ended (deliver calls this). Each job is counted once (a conditional counter on the
    batch); the row that brings the count to the number of rows forces the final rewrite at once,
    others rewrite only if the report is older than ``batch_report_seconds``."""
    counted = deps.store.count_row_end(job.batch_id, job.job_id)
    last = counted is not None and counted[0] >= counted[1]
    return advance(job.batch_id, deps, force=last)


def advance(batch_id: str, deps: Deps, *, nudge: bool = True, force: bool = True, fail_lost: bool = False) -> str:
    """Rewrite the batch's report from the jobs table (one writer at a time), and finish the batch
    when every row has ended. Without ``force``, a report written less than ``batch_report_seconds``
    ago is left for the poller's next run (the batch is due then). ``fail_lost`` (the poller's
    runs, whose role may create jobs): rows lost on the way to a job are failed, see below."""
    if nudge and force:
        deps.store.nudge_batch(batch_id)  # only a forced rewrite must not be lost to a writer mid-way
    outcome = "busy"
    interval = deps.settings.batch_report_seconds
    for attempt in range(REWRITES_PER_CALL):
        now = deps.clock()
        batch = deps.store.claim_batch(batch_id, now, lease_seconds=LEASE_SECONDS,
                                       written_before=None if force or attempt else now - interval)
        if batch is None:
            return outcome  # the holder sees the nudge when it drops the lease, and writes again
        if batch.get("state") != "running" or batch.get("finished_at"):
            deps.store.release_batch(batch_id, seen_rev=int(batch.get("rev", 0)), fields={}, running=False,
                                     next_check_at=0)
            return str(batch.get("state"))
        manifest = load_manifest(batch, deps)
        if manifest is None:
            deps.store.release_batch(batch_id, seen_rev=int(batch.get("rev", 0)), fields={"state": "superseded"},
                                     running=False, next_check_at=0)
            return "superseded"
        jobs = deps.store.get_many([row_job_id(batch_id, r.number) for r in manifest.rows])
        if fail_lost and now > float(batch["wait_until"]) + deps.settings.batch_row_lost_seconds:
            jobs.update(_fail_lost_rows(batch_id, manifest, jobs, deps))
        report = batch_report(batch, manifest, jobs, now, wait_until=float(batch["wait_until"]))
        outputs.put_batch_report(deps, str(batch["report_key"]), report, batch_id=batch_id)
        totals = report["totals"]
        done = totals["done"] == totals["rows"]
        released = deps.store.release_batch(
            batch_id, seen_rev=int(batch.get("rev", 0)),
            fields={"totals": totals, "state": "finished" if done else "running", "written_at": now},
            running=not done, next_check_at=now + interval)
        if done and deps.store.finish_batch(batch_id, now):
            deps.events.publish(BATCH_FINISHED, {"batch_id": batch_id, "manifest_key": batch["manifest_key"],
                                                 "report_key": batch["report_key"], "totals": totals})
            logger.info("batch finished", extra={"batch_id": batch_id, **totals})
        outcome = "finished" if done else "written"
        if released or done:
            return outcome
    return outcome


def run_due(deps: Deps, *, limit: int = 10) -> int:
    """The poller's share: rewrite the reports of running batches that are due (a safety net)."""
    count = 0
    for batch in deps.store.due_batches(deps.clock(), limit=limit):
        try:
            advance(str(batch["batch_id"]), deps, nudge=False, force=False, fail_lost=True)
            count += 1
        except Exception:
            logger.exception("batch report failed; the next run tries again", extra={"batch_id": batch["batch_id"]})
    return count
