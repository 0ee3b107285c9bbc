"""Provider callbacks: authenticate, deduplicate, confirm, then apply the one status update.

A callback is a hint, never the truth: it must carry our per-job token and WaveSpeed's signature,
and the status it claims is confirmed against the result endpoint before anything is written.
Every authentication failure and unknown job gets the same bare 401 (no job enumeration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from s2v.deps import Deps
from s2v.flows.status import apply_prediction
from s2v.model.jobs import Job, Status
from s2v.model.reconcile import carries_inputs, recorded_inputs

if TYPE_CHECKING:
    from s2v.adapters.providers.wavespeed import Prediction

logger = Logger(child=True)
WEBHOOK_SEEN_PREFIX = "#webhook#"


@dataclass(frozen=True)
class CallbackResult:
    status_code: int
    message: str
    bad_signature: bool = False  # our token was right but the provider's signature was not (counted)


UNAUTHORIZED = CallbackResult(401, "unauthorized")
BAD_SIGNATURE = CallbackResult(401, "unauthorized", bad_signature=True)  # the same bare 401 to the caller
MALFORMED = CallbackResult(400, "malformed body")


def handle_callback(job_id: str, token: str, headers: Mapping[str, str], body: bytes | None,
                    deps: Deps) -> CallbackResult:
    """``body``: the raw bytes, None when the request's body could not be turned into bytes (bad
    base64). Everything is compared as bytes before anything is decoded."""
    from s2v.adapters.providers.wavespeed import parse_webhook_task, verify_webhook  # requests: 200 ms, measured

    settings = deps.settings
    if body is not None and len(body) > settings.webhook_max_body_bytes:
        return CallbackResult(413, "payload too large")
    if not job_id or not token or not deps.secrets.callback_token_matches(job_id, token):
        return UNAUTHORIZED
    if body is None:
        return MALFORMED
    now = deps.clock()
    headers = {k.lower(): v for k, v in headers.items()}
    secrets, fetch = deps.secrets, deps.provider.webhook_secret

    def signed() -> bool:
        return any(verify_webhook(headers, body, secret, now=now, tolerance_seconds=settings.webhook_tolerance_seconds)
                   for secret in secrets.webhook_signing_secrets(fetch, now))

    # A valid token with a bad signature: the provider may have rotated its secret; ask it again (rate-limited).
    if not signed() and not (secrets.refresh_signing_secret(fetch, now) and signed()):
        logger.warning("webhook signature did not verify", extra={"job_id": job_id})
        return BAD_SIGNATURE
    try:
        task = parse_webhook_task(body)
    except ValueError:
        return MALFORMED
    job = deps.store.get(job_id)
    if job is None or not _may_attach(job, task):
        return UNAUTHORIZED
    webhook_id = headers.get("webhook-id", "")
    if deps.store.seen(WEBHOOK_SEEN_PREFIX + webhook_id):
        return CallbackResult(200, "duplicate")
    if job.is_terminal or job.status is Status.COMPLETED:
        return CallbackResult(200, "already final")
    confirmed = deps.provider.result(task.id)
    if confirmed.id != task.id:
        return UNAUTHORIZED
    updated = _apply_confirmed(job, confirmed, deps, task_input=task.input)  # the result shows no input
    deps.store.remember(WEBHOOK_SEEN_PREFIX + webhook_id, ttl_seconds=86400)
    logger.info("webhook applied", extra={"job_id": job_id, "provider_status": confirmed.status,
                                          "changed": updated is not None})
    return CallbackResult(200, "ok")


def _may_attach(job: Job, task: Prediction, *, task_input: Mapping[str, Any] | None = None) -> bool:
    """A callback speaks for the job's own task; a job with no provider id yet (its submit's answer
    was lost) takes a task only if the task's inputs are the URLs it recorded before sending."""
    if job.provider_id:
        return task.id == job.provider_id
    recorded = job.sent_inputs or recorded_inputs(job.sent_model, job.sent_image_sha256, job.sent_audio_sha256)
    return bool(job.sent_at) and carries_inputs(recorded, task.input if task_input is None else task_input)


def _apply_confirmed(job: Job, confirmed: Prediction, deps: Deps, *, task_input: Mapping[str, Any],
                     attempts: int = 3) -> Job | None:
    """Apply the confirmed status. A write that lost to a concurrent one (the submitter recording its
    timeout, a poll) is tried again on the fresh job rather than dropped; a status that does not
    apply to the job as it now stands is a no-op."""
    for _ in range(attempts):
        updated = apply_prediction(job, confirmed, deps, source="webhook")
        if updated is not None:
            return updated
        fresh = deps.store.get(job.job_id)
        if fresh is None or fresh.version == job.version or fresh.is_terminal:
            return None
        if not _may_attach(fresh, confirmed, task_input=task_input):
            return None  # the job took another task meanwhile (adopted from the list), or sent again
        job = fresh
    return None
