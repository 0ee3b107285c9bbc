"""What `--json` prints: plain documents with the fields a script needs. Pure: no I/O.

Times are epoch seconds (UTC) and money is USD as numbers; the same names as the job record
(`s2v show --json`) where a field is the record's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from s2v.adapters.store import GuardState
from s2v.model.jobs import Job, Status
from s2v_cli import views


def job(found: Job, bucket: str) -> dict[str, Any]:
    """One row of `s2v jobs --json`: what the table shows, unabridged."""
    failure = found.failure
    return {
        "job_id": found.job_id,
        "name": views.inputs_label(found),
        "folder": found.folder,
        "stem": found.stem,
        "status": str(found.status),
        "created_at": found.created_at,
        "inputs": {role: obj.key for role, obj in found.inputs.items()},
        "provider_id": found.provider_id or None,
        "estimated_cost_usd": found.estimated_cost_usd,
        "charged": views.is_charged(found),
        "output": views.s3_uri(bucket, found.output_key) if found.output_key else None,
        "failure": {"stage": failure.stage, "code": failure.code, "reason": failure.reason} if failure else None,
        "retry_possible": views.retry_possible(found),
        "batch": {"manifest": found.batch_key, "row": found.batch_row} if found.batch_id else None,
        "parent_id": found.parent_id or None,
    }


def status(description: str, bucket: str, table: str, counts: dict[Status, int], queued: Iterable[Job],
           guard: GuardState, limits: views.StackLimits, balance: views.Balance) -> dict[str, Any]:
    waiting: dict[str, int] = {}
    for one in queued:
        reason = one.queue_reason or "waiting"
        waiting[reason] = waiting.get(reason, 0) + 1
    return {
        "target": description,
        "bucket": bucket,
        "table": table,
        "jobs_by_state": {str(s): n for s, n in counts.items()},
        "jobs": sum(counts.values()),
        "in_flight": guard.in_flight,
        "max_in_flight": limits.max_in_flight,
        "day": guard.day,
        "spent_today_usd": guard.spent_today_usd,
        "daily_budget_usd": limits.daily_budget_usd,
        "balance_usd": balance.usd,
        "balance_problem": balance.problem or None,
        "queued_because": waiting,
    }


def cost(rows: list[views.CostRow], *, budget_usd: float | None) -> dict[str, Any]:
    return {
        "rows": [asdict(r) for r in rows],
        "total_usd": round(sum(r.usd for r in rows), 4),
        "jobs": sum(r.jobs for r in rows),
        "daily_budget_usd": budget_usd,
    }


def batch(found: dict[str, Any], bucket: str, jobs: list[Job], progress: views.BatchProgress) -> dict[str, Any]:
    return {
        "manifest": str(found.get("manifest_key", "")),
        "batch_id": str(found.get("batch_id", "")),
        "state": str(found.get("state", "")),
        "report": views.s3_uri(bucket, str(found["report_key"])) if found.get("report_key") else None,
        "rejected": str((found.get("error") or {}).get("reason", "")) or None,
        "progress": {"rows": progress.rows, "done": progress.done, "delivered": progress.delivered,
                     "failed": progress.failed, "cancelled": progress.cancelled, "pending": progress.pending},
        "jobs": [job(j, bucket) for j in jobs],
    }
