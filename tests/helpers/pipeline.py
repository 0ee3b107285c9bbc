"""Helpers for tests that drive the whole local stack."""

from __future__ import annotations

import time
from typing import Any

from s2v.adapters.store import deserialize_item
from s2v.model.jobs import Job


def jobs_for(stack: Any, folder: str, stem: str) -> list[dict[str, Any]]:
    ddb = stack.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=stack.table_name):
        items += [deserialize_item(i) for i in page.get("Items", [])]
    # Bookkeeping items ("#..."; e.g. an incomplete set's wait) are not jobs. A job item holds only what
    # differs from the defaults (Job.to_item): each is read as the store reads it, defaults filled in.
    return [{**Job.from_dict(j).to_dict(), **j} for j in items
            if j.get("folder") == folder and j.get("stem") == stem and not j["job_id"].startswith("#")]


def wait_for_job(stack: Any, folder: str, stem: str, *, statuses: tuple[str, ...] = ("DELIVERED", "FAILED"),
                 timeout: float = 90.0, reported: bool = True) -> dict[str, Any]:
    """Wait until the job for folder/stem reaches one of ``statuses`` (and, for FAILED, until its
    error report is written)."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        last = jobs_for(stack, folder, stem)
        for job in last:
            if job["status"] in statuses and (not reported or job["status"] != "FAILED" or job.get("error_key")):
                return job
        time.sleep(0.2)
    raise AssertionError(f"no job for {folder}/{stem} reached {statuses} in {timeout} s; saw {last}")


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount")) and any(
        o["Key"] == key for o in s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"])


def keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))
