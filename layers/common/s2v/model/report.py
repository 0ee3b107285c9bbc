"""The documents written next to a finished job. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from s2v.model.jobs import Job


def _iso(ts: float) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def _inputs(job: Job) -> dict[str, Any]:
    return {
        "image": {"key": job.image.key, "etag": job.image.etag, "bytes": job.image.size} if job.image else None,
        "audio": {"key": job.audio.key, "etag": job.audio.etag, "bytes": job.audio.size} if job.audio else None,
        "params_file": job.sidecar_key or None,
    }


def _history(job: Job) -> list[dict[str, Any]]:
    return [{"status": h.get("status"), "at": _iso(float(h.get("at", 0))), "note": h.get("note", "")}
            for h in job.history]


def job_report(job: Job) -> dict[str, Any]:
    """``outputs/.../<stem>.json``: everything about how the video was made."""
    return {
        "job_id": job.job_id,
        "status": str(job.status),
        "retry_of": job.retry_of or None,
        "inputs": _inputs(job),
        "params": job.params,
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
        "history": _history(job),
    }


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
        "param_sources": job.param_sources,
        "provider_id": job.provider_id or None,
        "retry": f"s2v retry {job.job_id}",
        "inputs_untouched": True,
        "history": _history(job),
    }


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
