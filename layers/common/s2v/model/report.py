"""The documents written next to a finished job. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from s2v.model.jobs import Job, Status, row_job_id
from s2v.model.models import CATALOG

if TYPE_CHECKING:
    from s2v.model.manifest import Manifest, Row


def _iso(ts: float) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def _inputs(job: Job) -> dict[str, Any]:
    files = {role: {"key": obj.key, "etag": obj.etag, "bytes": obj.size} for role, obj in job.inputs.items()}
    # image and audio are always named (audio is null for a two-speaker set: see left and right).
    return {"image": files.pop("image", None), "audio": files.pop("audio", None), **files,
            "params_file": job.sidecar_key or None}


def _model(job: Job) -> dict[str, Any]:
    model = CATALOG.get(job.model_name)
    return {"name": job.model_name, "title": model.title if model else None, "path": model.path if model else None}


def _history(job: Job) -> list[dict[str, Any]]:
    return [{"status": h.get("status"), "at": _iso(float(h.get("at", 0))), "note": h.get("note", "")}
            for h in job.history]


def job_report(job: Job, batch_progress: tuple[int, int] | None = None) -> dict[str, Any]:
    """``outputs/.../<stem>.json``: everything about how the video was made. ``batch_progress``: a
    manifest row's batch as (rows done, rows) when the report was written, this row counted."""
    return {
        "job_id": job.job_id,
        "status": str(job.status),
        "retry_of": job.retry_of or None,
        "inputs": _inputs(job),
        "params": job.params,
        "model": _model(job),
        "param_sources": job.param_sources,
        "provider": {"name": "wavespeed", "id": job.provider_id, "model": job.provider_model},
        "output": {"key": job.output_key, "bytes": job.video_bytes},
        "audio_seconds": job.audio_seconds,
        "render_seconds": job.render_seconds,
        "estimated_cost_usd": job.estimated_cost_usd,
        "final_cost_usd": job.final_cost_usd,
        "timings": {
            "created_at": _iso(job.created_at),
            "submitted_at": _iso(job.submitted_at),
            "completed_at": _iso(job.completed_at),
            "delivered_at": _iso(job.delivered_at),
            "total_seconds": round(job.delivered_at - job.created_at, 3) if job.delivered_at else None,
        },
        "warnings": list(job.warnings),
        "batch": _batch(job, batch_progress),
        "history": _history(job),
    }


def _batch(job: Job, progress: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """A manifest row's job points at its batch, by name, and says how far it was when written; the
    batch report holds the progress of all rows as it is now."""
    if not job.batch_id:
        return None
    found: dict[str, Any] = {"batch_id": job.batch_id, "manifest": job.batch_key,
                             "name": job.batch_key.rsplit("/", 1)[-1], "row": job.batch_row}
    if progress is not None:
        done, rows = progress
        found.update(progress=f"{done} of {rows} done", done=done, rows=rows)
    return found


def error_report(job: Job) -> dict[str, Any]:
    """``outputs/.../<stem>.error.json``: what went wrong and what to do about it."""
    failure = job.failure
    return {
        "job_id": job.job_id,
        "status": str(job.status),
        "stage": failure.stage if failure else "unknown",
        "code": failure.code if failure else "unknown",
        "reason": failure.reason if failure else "the job failed without a recorded reason",
        "inputs": _inputs(job),
        "params": job.params,
        "model": _model(job),
        "param_sources": job.param_sources,
        "provider_id": job.provider_id or None,
        "retry": f"s2v retry {job.job_id}",
        "inputs_untouched": True,
        "batch": _batch(job),
        "history": _history(job),
        **({"failed_segments": _failed_segments(job)} if job.failed_segments else {}),
    }


def _failed_segments(job: Job) -> list[dict[str, Any]]:
    """A talk's segments that failed for good: which part of the talk, and why."""
    rows = []
    for index, info in sorted(job.failed_segments.items(), key=lambda kv: int(kv[0])):
        rows.append({"segment": int(index) + 1, "start": info.get("start"), "end": info.get("end"),
                     "job_id": info.get("job_id"), "attempts": int(info.get("attempt", 0)) + 1,
                     "code": info.get("code"), "reason": info.get("reason")})
    return rows


def cancel_report(job: Job) -> dict[str, Any]:
    """``outputs/.../<stem>.cancelled.json``: who stopped the job, when, and what it cost."""
    was = next((h.get("note", "") for h in reversed(job.history) if h.get("status") == "CANCELLED"), "")
    return {
        "job_id": job.job_id,
        "status": str(job.status),
        "code": "cancelled",
        "reason": f"cancelled by {job.cancelled_by or 'an operator'} at {_iso(job.cancelled_at)}; "
                  "the video was not and will not be delivered",
        "cancelled_by": job.cancelled_by or None,
        "cancelled_at": _iso(job.cancelled_at),
        "note": was or None,
        "provider": {"name": "wavespeed", "id": job.provider_id or None, "task": job.provider_delete or None},
        "estimated_cost_usd": job.estimated_cost_usd,
        "final_cost_usd": job.final_cost_usd,
        "inputs": _inputs(job),
        "params": job.params,
        "retry": f"s2v retry {job.job_id}",
        "inputs_untouched": True,
        "history": _history(job),
    }


def _batch_header(batch: Mapping[str, Any], now: float) -> dict[str, Any]:
    return {
        "batch_id": batch["batch_id"],
        "manifest": batch["manifest_key"],
        "report": batch["report_key"],
        "created_at": _iso(float(batch.get("created_at", 0))),
        "updated_at": _iso(now),
    }


def rejected_batch_report(batch: Mapping[str, Any], error: Mapping[str, str], now: float) -> dict[str, Any]:
    """A manifest that could not be used at all: why, and that nothing was submitted."""
    return {**_batch_header(batch, now), "state": "rejected", "progress": "0 of 0 done", "error": dict(error),
            "submitted": 0, "totals": {"rows": 0, "done": 0, "delivered": 0, "failed": 0, "cancelled": 0,
                                       "waiting": 0, "in_progress": 0, "cost_usd": 0.0},
            "inputs_untouched": True}


def _row_entry(row: Row, job: Job | None, job_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"row": row.number, "image": row.image_key or None, "audio": row.audio_key or None,
                             "job_id": job_id}
    if job is None:
        entry["state"] = "WAITING"
        entry["note"] = "waiting for its files (or for its turn in the queue)"
        return entry
    entry["state"] = str(job.status)
    entry["cost_usd"] = job.final_cost_usd if job.final_cost_usd is not None else job.estimated_cost_usd
    if job.status is Status.DELIVERED:
        entry.update(output=job.output_key, report=job.report_key)
    elif job.status is Status.FAILED:
        failure = job.failure
        entry["error"] = {"code": failure.code if failure else "unknown",
                          "reason": failure.reason if failure else "no reason recorded",
                          "report": job.error_key or None}
        entry["retry"] = f"s2v retry {job.job_id}"
    elif job.status is Status.CANCELLED:
        entry["cancelled_by"] = job.cancelled_by or None
    return entry


def batch_report(batch: Mapping[str, Any], manifest: Manifest, jobs: Mapping[str, Job], now: float, *,
                 wait_until: float) -> dict[str, Any]:
    """``outputs/.../<manifest>.report.json``, rebuilt from the jobs table: one entry per row, totals."""
    rows = []
    counts = {"delivered": 0, "failed": 0, "cancelled": 0, "waiting": 0, "in_progress": 0}
    cost = 0.0
    for row in manifest.rows:
        job_id = row_job_id(str(batch["batch_id"]), row.number)
        entry = _row_entry(row, jobs.get(job_id), job_id)
        state = entry["state"]
        key = {"DELIVERED": "delivered", "FAILED": "failed", "CANCELLED": "cancelled", "WAITING": "waiting"}.get(
            state, "in_progress")
        counts[key] += 1
        cost += float(entry.get("cost_usd") or 0.0)
        rows.append(entry)
    total = len(manifest.rows)
    done = counts["delivered"] + counts["failed"] + counts["cancelled"]
    totals = {"rows": total, "done": done, **counts, "cost_usd": round(cost, 4)}
    return {**_batch_header(batch, now), "state": "finished" if done == total else "running",
            "progress": f"{done} of {total} done", "totals": totals,
            "waiting_for_files_until": _iso(wait_until) if counts["waiting"] else None,
            "rows": rows, "inputs_untouched": True}
