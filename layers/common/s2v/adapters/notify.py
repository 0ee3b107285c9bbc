"""Job notifications as EventBridge events (an optional SNS topic subscribes to them)."""

from __future__ import annotations

import json
from typing import Any

from s2v.model.jobs import Job

VIDEO_DELIVERED = "Video delivered"
JOB_FAILED = "Job failed"
BUDGET_REACHED = "Budget reached"
BALANCE_LOW = "Balance low"  # at most one a UTC day
JOB_CANCELLED = "Job cancelled"
BATCH_FINISHED = "Batch finished"  # the last row of a manifest ended (flows/batch.py)


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": str(job.status),
        "folder": job.folder,
        "stem": job.stem,
        "image_key": job.image.key if job.image else "",
        "audio_key": job.audio.key if job.audio else "",
        "output_key": job.output_key,
        "report_key": job.report_key,
        "error_key": job.error_key,
        "provider_id": job.provider_id,
        "estimated_cost_usd": job.estimated_cost_usd,
        "failure": job.failure.__dict__ if job.failure else None,
        **({"cancelled_by": job.cancelled_by, "cancelled_at": job.cancelled_at,
            "provider_delete": job.provider_delete} if job.cancelled_at else {}),
    }


class EventPublisher:
    def __init__(self, client: Any, *, bus: str, source: str) -> None:
        self._events = client
        self._bus = bus
        self._source = source

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        resp = self._events.put_events(
            Entries=[
                {
                    "Source": self._source,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": self._bus,
                }
            ]
        )
        if resp.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge rejected the {detail_type!r} event: {resp['Entries']}")
