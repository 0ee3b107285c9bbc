"""One idempotent status update, shared by the webhook and the poller."""

from __future__ import annotations

from typing import Any

from s2v.deps import Deps
from s2v.model.jobs import Event, Failure, Job, Status, poll_delay

# How long a COMPLETED job may wait for delivery before the poller re-triggers it.
DELIVERY_GRACE_SECONDS = 300


def provider_failure_reason(status: str, error: str, code: int | None = None) -> str:
    message = error or "no message"
    hint = "Check the inputs, then upload the pair again or run `s2v retry JOB`."
    lowered = message.lower()
    if code == 1402 or "media access" in lowered or "download" in lowered:
        hint = ("The provider could not download the inputs; a presigned URL may have expired while "
                "the job waited. Run `s2v retry JOB` or upload the pair again.")
    elif code == 1200 or "moderation" in lowered or "nsfw" in lowered:
        hint = "The content was refused by moderation; use a different image, audio or prompt."
    return f"WaveSpeed reported the render as {status}: {message}. {hint}"


def next_check(job: Job, deps: Deps, now: float) -> dict[str, Any]:
    settings = deps.settings
    delay = poll_delay(job.check_count + 1, minimum=settings.poll_min_seconds, maximum=settings.poll_max_seconds)
    return {"check_count": job.check_count + 1, "next_check_at": now + delay}


def apply_prediction(job: Job, prediction: Any, deps: Deps, *, source: str) -> Job | None:
    """Record what the provider says about ``job``. Late, duplicated or out-of-order statuses are
    no-ops (the transition table never moves backwards). Returns the updated job or None."""
    now = deps.clock()
    note = f"{source}: provider status {prediction.status}"
    ids = {"provider_id": prediction.id, "provider_model": prediction.model or job.provider_model}
    if prediction.is_completed:
        if prediction.nsfw:
            failure = Failure(stage="render", code="nsfw",
                              reason="WaveSpeed flagged the output as NSFW, so it was not delivered. "
                                     "Use a different image, audio or prompt.")
            return deps.store.transition(job, Event.FAIL, note=note, failure=failure, **ids)
        if not prediction.outputs:
            failure = Failure(stage="render", code="no_output",
                              reason="WaveSpeed reported the render completed but returned no video. "
                                     "Run `s2v retry JOB` to render it again.")
            return deps.store.transition(job, Event.FAIL, note=note, failure=failure, **ids)
        return deps.store.transition(
            job, Event.PROVIDER_COMPLETED, note=note, output_url=prediction.outputs[0],
            render_seconds=(prediction.inference_ms or 0) / 1000.0, completed_at=now,
            next_check_at=now + DELIVERY_GRACE_SECONDS, **ids,
        )
    if prediction.is_failed:
        failure = Failure(stage="render", code="provider_failed",
                          reason=provider_failure_reason(prediction.status, prediction.error))
        return deps.store.transition(job, Event.FAIL, note=note, failure=failure, **ids)
    event = Event.PROVIDER_PROCESSING if prediction.status == "processing" else Event.PROVIDER_CREATED
    if (job.status, event) in (
        (Status.SUBMITTING, Event.PROVIDER_CREATED),
        (Status.SUBMITTING, Event.PROVIDER_PROCESSING),
        (Status.SUBMITTED, Event.PROVIDER_PROCESSING),
    ):
        return deps.store.transition(job, event, note=note, submit_note=None, **ids, **next_check(job, deps, now))
    if job.status in (Status.SUBMITTED, Status.PROCESSING):
        return deps.store.touch(job, **next_check(job, deps, now))
    return None
