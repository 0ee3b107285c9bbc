"""The core flows wired to moto's server and a real HTTP provider, without the router.

``Flow`` lets a test drive each step by hand (ingest an upload, run the poller, deliver a job)
and inject a clock, faults and crashes; the e2e tests use the full local stack instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from helpers.aws import client, create_jobs_table
from s2v.config import Settings
from s2v.deps import Deps
from s2v.flows.ingest import IngestResult
from s2v.flows.uploads import Upload, on_upload
from s2v.model.jobs import Job

FLOW_API_KEY = "flow-test-key"  # what a Flow sends as WAVESPEED_API_KEY


class Clock:
    """A settable clock; starts at the real time so presigned URLs and webhooks stay valid."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Flow:
    endpoint: str
    bucket: str
    table: str
    provider_base_url: str
    env: dict[str, str] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)
    ingest_failures: list[Exception] = field(default_factory=list)  # what drain_ingest's messages raised

    def __post_init__(self) -> None:
        settings = Settings.from_env({
            "S2V_BUCKET": self.bucket, "S2V_JOBS_TABLE": self.table, "WAVESPEED_BASE_URL": self.provider_base_url,
            "WAVESPEED_API_KEY": FLOW_API_KEY, "S2V_WEBHOOK_TOKEN_KEY": "flow-token-key",
            "S2V_LOCAL_MODE": "true", "S2V_OUTPUT_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "S2V_POLL_MIN_SECONDS": "1", "S2V_POLL_MAX_SECONDS": "4", **self.env,
        })
        self.deps = Deps(settings, clock=self.clock, client_factory=lambda service: client(service, self.endpoint))
        self.s3 = client("s3", self.endpoint)

    def put(self, key: str, body: bytes, **kwargs: Any) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, **kwargs)

    def ingest(self, key: str) -> IngestResult:
        return on_upload(Upload(bucket=self.bucket, key=key), self.deps)

    def drain_ingest(self) -> int:
        """Run every message now in the ingest queue as the ingest function would (orphaned jobs the
        poller sent back, a manifest's rows); how many there were."""
        from s2v.flows.batch import ROWS_MESSAGE, on_rows
        from s2v.flows.resume import on_resume, resume_request

        sqs, url = self.deps.sqs, self.deps.settings.ingest_queue_url
        count = 0
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                body = json.loads(message["Body"])
                job_id = resume_request(body)
                try:
                    if job_id is not None:
                        on_resume(job_id, self.deps)
                    elif ROWS_MESSAGE in body:
                        on_rows(body[ROWS_MESSAGE], self.deps)
                except Exception as exc:  # the function failed this message: SQS retries it, then its DLQ
                    self.ingest_failures.append(exc)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                count += 1
        return count

    def job(self, job_id: str) -> Job:
        job = self.deps.store.get(job_id)
        assert job is not None, f"no job {job_id}"
        return job

    def jobs(self) -> list[Job]:
        return list(self.deps.store.scan_jobs())


def make_flow(endpoint: str, unique: str, provider_base_url: str, *, versioned: bool = False, **env: str) -> Flow:
    """``versioned``: the bucket keeps object versions, as the stack's does (template.yaml)."""
    bucket, table = f"media-{unique}", f"jobs-{unique}"
    client("s3", endpoint).create_bucket(Bucket=bucket)
    if versioned:
        client("s3", endpoint).put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    create_jobs_table(endpoint, table)
    client("events", endpoint)  # the default bus exists in moto
    if "S2V_INGEST_QUEUE_URL" not in env:  # where the poller sends orphaned jobs back to ingest
        env = {**env, "S2V_INGEST_QUEUE_URL": client("sqs", endpoint).create_queue(
            QueueName=f"ingest-{unique}")["QueueUrl"]}
    return Flow(endpoint=endpoint, bucket=bucket, table=table, provider_base_url=provider_base_url, env=dict(env))
