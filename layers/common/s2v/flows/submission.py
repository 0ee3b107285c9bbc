"""Admission and the single paid call: submit a job to the provider exactly once.

The order is the contract: reserve (RECEIVED/QUEUED → SUBMITTING, conditional) → POST →
record (SUBMITTED). Only the caller whose conditional admission won ever sends the POST. A POST
whose outcome is unknown leaves the job SUBMITTING for the poller to reconcile; it is never resent.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from s2v.adapters.notify import BUDGET_REACHED, job_summary
from s2v.deps import Deps
from s2v.model.errors import ProviderError, SubmitNotAccepted, SubmitOutcomeUnknown
from s2v.model.jobs import Event, Failure, Job, Status, poll_delay

logger = Logger(child=True)


def admit_and_submit(job: Job, deps: Deps, **validated: Any) -> Job:
    """Admit ``job`` within the spend guard and submit it; or queue it when a limit says wait."""
    now = deps.clock()
    if job.status is Status.RECEIVED and deps.store.queued(limit=1):
        # Older jobs are waiting: a fresh upload queues behind them instead of taking a freed slot.
        wait_reason = "older jobs are waiting for a slot"
        queued = deps.store.transition(job, Event.DEFER, note=f"waiting: {wait_reason}",
                                       **{**validated, "queue_reason": wait_reason})
        return queued or job
    admitted, wait_reason = deps.store.admit(job, cost_usd=validated.get("estimated_cost_usd",
                                                                         job.estimated_cost_usd),
                                             limits=deps.limits, **validated)
    if admitted is None:
        if not wait_reason:
            return deps.store.get(job.job_id) or job  # another submitter won; report what it made
        if job.status is Status.QUEUED:
            return job  # still waiting: writing again would only grow its history
        queued = deps.store.transition(job, Event.DEFER, note=f"waiting: {wait_reason}",
                                       **{**validated, "queue_reason": wait_reason})
        if queued and job.status is not Status.QUEUED and "budget" in wait_reason:
            deps.events.publish(BUDGET_REACHED, {**job_summary(queued), "reason": wait_reason})
        logger.info("job queued", extra={"job_id": job.job_id, "reason": wait_reason})
        return queued or job
    return _send(admitted, deps, now)


def _media_urls(job: Job, deps: Deps) -> tuple[str, str]:
    assert job.image and job.audio
    settings = deps.settings
    if settings.media_mode == "upload":
        urls = []
        for obj in (job.image, job.audio):
            name = obj.key.rsplit("/", 1)[-1]
            urls.append(deps.provider.upload_media(deps.objects.open_stream(obj.key), name,
                                                   "application/octet-stream"))
        return urls[0], urls[1]
    return (deps.objects.presign_get(job.image.key, settings.presign_expiry_seconds),
            deps.objects.presign_get(job.audio.key, settings.presign_expiry_seconds))


def webhook_url(job_id: str, deps: Deps) -> str | None:
    base = deps.settings.webhook_base_url
    if not base:
        return None
    return f"{base}/webhook/{job_id}?token={deps.secrets.callback_token(job_id)}"


def _send(job: Job, deps: Deps, now: float) -> Job:
    from s2v.adapters.providers.wavespeed import SubmitRequest

    settings = deps.settings
    try:
        deps.secrets.api_key()  # a missing or unreachable key must fail here, before anything is sent
        image_url, audio_url = _media_urls(job, deps)
        callback = webhook_url(job.job_id, deps)
    except Exception:
        # Nothing was sent: hand the slot back and let the platform retry.
        deps.store.transition(job, Event.DEFER, note="could not prepare the inputs for the provider")
        raise
    request = SubmitRequest(image_url=image_url, audio_url=audio_url, prompt=job.params.get("prompt", ""),
                            resolution=job.params.get("resolution", settings.default_resolution),
                            seed=int(job.params.get("seed", settings.default_seed)))
    try:
        prediction = deps.provider.submit(request, webhook_url=callback)
    except SubmitNotAccepted as exc:
        delay = max(exc.retry_after or 0.0, float(settings.poll_min_seconds))
        logger.warning("provider did not accept the job; it waits", extra={"job_id": job.job_id,
                                                                         "status_code": exc.status_code})
        return deps.store.transition(job, Event.DEFER, note=f"provider busy: {exc.message}",
                                     queue_reason=f"provider busy: {exc.message}",
                                     not_before=now + delay) or job
    except SubmitOutcomeUnknown as exc:
        logger.error("submit outcome unknown; the poller reconciles it", extra={"job_id": job.job_id})
        return deps.store.touch(job, submit_note=exc.message,
                                next_check_at=now + settings.poll_min_seconds) or job
    except ProviderError as exc:
        failure = Failure(stage="submit", code="provider_rejected",
                          reason=f"WaveSpeed rejected the job: {exc.message}. Fix the input or the "
                                 "parameters, then upload the pair again.")
        return deps.store.transition(job, Event.FAIL, note=failure.reason, failure=failure, refund=True) or job
    accepted = deps.store.transition(
        job, Event.SUBMIT_ACCEPTED, note=f"provider id {prediction.id}",
        provider_id=prediction.id, provider_model=prediction.model, submitted_at=now,
        check_count=0, next_check_at=now + poll_delay(0, minimum=settings.poll_min_seconds,
                                                      maximum=settings.poll_max_seconds),
    )
    logger.info("job submitted", extra={"job_id": job.job_id, "provider_id": prediction.id})
    return accepted or job
