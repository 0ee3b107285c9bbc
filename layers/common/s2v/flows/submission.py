"""Admission and the single paid call: submit a job to the provider exactly once.

The order is the contract: check the provider balance (cached) → reserve (RECEIVED/QUEUED →
SUBMITTING, conditional) → record what will be sent (digests of the input URLs, the model, the
time; conditional, so a job cancelled meanwhile is never sent) → POST → record (SUBMITTED). Only
the caller whose conditional admission won ever sends the POST. A POST whose outcome is unknown
leaves the job SUBMITTING for the poller to find in the provider's list; it is never resent.
"""

from __future__ import annotations

import weakref
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from aws_lambda_powertools import Logger

from s2v.adapters.notify import BALANCE_LOW, BUDGET_REACHED, job_summary
from s2v.adapters.store import SPEND_CEILING, utc_day
from s2v.deps import Deps
from s2v.flows.cancel import settle_ambiguous, settle_late_task, settle_unanswered
from s2v.model.errors import InputError, ProviderError, SubmitNotAccepted, SubmitOutcomeUnknown
from s2v.model.jobs import Event, Failure, Job, Status, poll_delay
from s2v.model.models import CATALOG
from s2v.model.reconcile import input_digests, input_hosts

logger = Logger(child=True)

# The provider balance is read at most once a minute per container (and per provider client).
BALANCE_CACHE_SECONDS = 60.0
BALANCE_LOW_MARKER = "#event#balance-low#"  # + UTC day: one "Balance low" event per day
BALANCE_LOW_REASON = "provider balance"
_balances: weakref.WeakKeyDictionary[Any, _Balance] = weakref.WeakKeyDictionary()
# What a fresh admission clears: the previous attempt's record of what it sent.
_FRESH_ATTEMPT = dict.fromkeys(("sent_at", "sent_until", "sent_model", "sent_inputs", "sent_input_hosts",
                                "sent_image_sha256",
                                "sent_audio_sha256", "submit_note", "reconciled_by"))


@dataclass(frozen=True)
class _Balance:
    read_at: float
    usd: float | None
    day: str  # the UTC day whose spend counter ``spent_usd`` was read from
    spent_usd: float  # that day's reserved spend just before the balance was read
    fresh: bool = True  # read for this admission (not from the cache)

    @property
    def ceiling(self) -> float | None:
        """The day's spend counter value at which this balance is used up (None: balance unknown)."""
        return None if self.usd is None else round(self.spent_usd + self.usd, 6)


@dataclass(frozen=True)
class Submission:
    job: Job  # as this caller last saw it
    raced: bool = False  # another caller changed the job first (e.g. admitted it); this one did nothing


def admit_and_submit(job: Job, deps: Deps, **validated: Any) -> Job:
    """Admit ``job`` within the spend guard and submit it; or queue it when a limit says wait."""
    return submit(job, deps, **validated).job


def submit(job: Job, deps: Deps, **validated: Any) -> Submission:
    """As ``admit_and_submit``, and says whether another caller won the job first."""
    now = deps.clock()
    cost = float(validated.get("estimated_cost_usd", job.estimated_cost_usd))
    balance = _balance_read(deps)
    ceiling = None if balance is None else balance.ceiling
    if balance is not None and balance.usd is not None and balance.usd < cost:
        # Short before any admission since the read; a cached one says by how much now (one counter read).
        left = balance.usd if balance.fresh else round(balance.usd + balance.spent_usd - deps.store.spent_on(
            balance.day), 6)
        return Submission(_wait_for_balance(job, deps, min(left, balance.usd), cost, validated))
    admitted, wait_reason = deps.store.admit(
        job, cost_usd=cost, limits=deps.limits, spend_ceiling=ceiling,
        # While older jobs wait, a fresh upload queues behind them instead of taking a freed slot.
        behind_queue=job.status is Status.RECEIVED, **{**validated, **_FRESH_ATTEMPT},
        # The poller leaves the job alone while its POST may be in flight.
        next_check_at=now + deps.settings.provider_timeout_seconds + deps.settings.poll_min_seconds)
    if admitted is None and wait_reason == SPEND_CEILING and ceiling is not None:
        # The balance read earlier is used up by admissions since: the one read of the counter, to say by how much.
        left = round(ceiling - deps.store.spent_on(utc_day(now)), 6)
        return Submission(_wait_for_balance(job, deps, left, cost, validated))
    if admitted is None:
        if not wait_reason:
            # Another submitter won (or the job was cancelled): report what it made.
            return Submission(deps.store.get(job.job_id) or job, raced=True)
        if job.status is Status.QUEUED:
            return Submission(job)  # still waiting: writing again would only grow its history
        queued = _queue(job, deps, wait_reason, validated)
        if queued is not job and "budget" in wait_reason:
            deps.events.publish(BUDGET_REACHED, {**job_summary(queued), "reason": wait_reason})
        return Submission(queued)
    return Submission(_send(admitted, deps))


def _queue(job: Job, deps: Deps, reason: str, validated: dict[str, Any]) -> Job:
    queued = deps.store.transition(job, Event.DEFER, note=f"waiting: {reason}",
                                   **{**validated, "queue_reason": reason})
    if queued is not None:
        logger.info("job queued", extra={"job_id": job.job_id, "reason": reason})
    return queued or job


# --- the provider balance -----------------------------------------------------------------------

def _balance_read(deps: Deps) -> _Balance | None:
    """The provider balance as last read by this container: read (with the day's spend counter) at
    most once a minute; between reads, admissions are held to it by the admit transaction's
    ceiling on the spend counter (``_Balance.ceiling``), so a cached balance costs no request.
    None when the provider object cannot be cached."""
    now = deps.clock()
    day = utc_day(now)
    provider = deps.provider
    cached: _Balance | None = None
    with suppress(KeyError, TypeError):
        cached = _balances[provider]
    if cached is not None and 0 <= now - cached.read_at < BALANCE_CACHE_SECONDS and cached.day == day:
        return replace(cached, fresh=False)
    spent = deps.store.spent_on(day)  # before the balance: an admission in between is counted, not missed
    balance: float | None
    try:
        balance = float(provider.balance())
    except Exception as exc:  # any failure: go on without the check
        logger.warning("provider balance unavailable; admitting within the daily budget only",
                       extra={"error": getattr(exc, "message", None) or type(exc).__name__})
        balance = None
    read = _Balance(now, balance, day, spent)
    with suppress(TypeError):  # a provider object that cannot be weakly referenced is not cached
        _balances[provider] = read
    return read


def forget_balance() -> None:
    """Drop cached balances (tests; a container never needs to)."""
    _balances.clear()


def balance_reason(balance: float, cost: float) -> str:
    return f"{BALANCE_LOW_REASON} ${balance:.2f} is below this job's estimate ${cost:.2f}"


def _wait_for_balance(job: Job, deps: Deps, balance: float, cost: float, validated: dict[str, Any]) -> Job:
    reason = balance_reason(balance, cost)
    if job.status is Status.QUEUED:
        # Still waiting; say why when it was waiting for something else (no history entry).
        waiting = job if job.queue_reason.startswith(BALANCE_LOW_REASON) else (
            deps.store.touch(job, queue_reason=reason) or job)
    else:
        waiting = _queue(job, deps, reason, validated)
    now = deps.clock()
    if waiting.status is Status.QUEUED and deps.store.remember_once(BALANCE_LOW_MARKER + utc_day(now),
                                                                    ttl_seconds=2 * 86400):
        try:
            deps.events.publish(BALANCE_LOW, {**job_summary(waiting), "reason": reason, "balance_usd": balance})
        except Exception:  # the job is queued either way; the event is a courtesy
            logger.exception("could not send the Balance low event")
    return waiting


# --- the one POST ---------------------------------------------------------------------------------

def _media_urls(job: Job, deps: Deps) -> dict[str, str]:
    """A URL the provider can fetch for each input file, by bucket role: for exactly the bytes that
    were validated. The version validation read is named; without one (a bucket without versioning)
    the object must still have the job's ETag, or the job fails ``input_changed`` (InputError)."""
    settings = deps.settings
    urls = {}
    for role, obj in job.inputs.items():
        version = job.input_versions.get(role, "")
        if settings.media_mode == "upload":
            name = obj.key.rsplit("/", 1)[-1]
            stream = deps.objects.open_stream(obj.key, version_id=version, etag=obj.etag)
            urls[role] = deps.provider.upload_media(stream, name, "application/octet-stream")
            continue
        if not version and obj.etag:
            deps.objects.check_unchanged(obj.key, obj.etag)
        urls[role] = deps.objects.presign_get(obj.key, settings.presign_expiry_seconds, version)
    return urls


def webhook_url(job_id: str, deps: Deps) -> str | None:
    base = deps.settings.webhook_base_url
    if not base:
        return None
    return f"{base}/webhook/{job_id}?token={deps.secrets.callback_token(job_id)}"


def _record_sending(job: Job, deps: Deps, inputs: dict[str, str], model: str,
                    hosts: dict[str, str] | None = None) -> Job | None:
    """Record what is about to be sent (``inputs``: request field -> digest of its URL). None when
    the job changed since admission in a way that forbids sending (cancelled); a mere touch (the
    poller's) is retried on the fresh read."""
    settings = deps.settings
    for _ in range(3):
        now = deps.clock()
        recorded = deps.store.touch(
            job, sent_at=now, sent_model=model, sent_inputs=inputs, sent_input_hosts=hosts or {},
            next_check_at=now + settings.provider_timeout_seconds + settings.poll_min_seconds)
        if recorded is not None:
            return recorded
        current = deps.store.get(job.job_id)
        if current is None or current.status is not Status.SUBMITTING or current.sent_at or current.provider_id:
            return None
        job = current
    return None


def _send(job: Job, deps: Deps) -> Job:
    from s2v.adapters.providers.wavespeed import SubmitRequest  # requests: 200 ms at import, measured
    settings = deps.settings
    model = CATALOG[job.model_name]
    try:
        deps.secrets.api_key()  # a missing or unreachable key must fail here, before anything is sent
        urls = _media_urls(job, deps)
        callback = webhook_url(job.job_id, deps)
    except InputError as exc:  # an input was replaced since it was validated: nothing was sent
        failure = Failure(stage="submit", code=exc.code, reason=exc.reason)
        return deps.store.transition(job, Event.FAIL, note=exc.reason, failure=failure, refund=True) or (
            deps.store.get(job.job_id) or job)
    except Exception:
        # Nothing was sent: hand the slot back and let the platform retry.
        deps.store.transition(job, Event.DEFER, note="could not prepare the inputs for the provider")
        raise
    request = SubmitRequest.for_model(model, urls, prompt=job.params.get("prompt", ""),
                                      resolution=job.params.get("resolution", settings.default_resolution),
                                      seed=int(job.params.get("seed", settings.default_seed)),
                                      order=str(job.params.get("order") or ""))
    # Every input URL of the body, so an ambiguous submit is matched on all of them (model/reconcile.py).
    body = request.body()
    recorded = _record_sending(job, deps, input_digests(body, model.fields), model.path,
                               input_hosts(body, model.fields))
    if recorded is None:
        logger.info("job changed before its submission; nothing sent", extra={"job_id": job.job_id})
        return deps.store.get(job.job_id) or job
    job = recorded
    try:
        prediction = deps.provider.submit(request, webhook_url=callback)
    except SubmitNotAccepted as exc:
        now = deps.clock()
        delay = max(exc.retry_after or 0.0, float(settings.poll_min_seconds))
        logger.warning("provider did not accept the job; it waits", extra={"job_id": job.job_id,
                                                                         "status_code": exc.status_code})
        return deps.store.transition(job, Event.DEFER, note=f"provider busy: {exc.message}",
                                     queue_reason=f"provider busy: {exc.message}",
                                     not_before=now + delay, **_FRESH_ATTEMPT) or _if_cancelled(
            job, deps, f"not taken (the provider was busy: {exc.message})")
    except SubmitOutcomeUnknown as exc:
        logger.error("submit outcome unknown; the poller reconciles it", extra={"job_id": job.job_id})
        return _record_unknown(job, deps, exc.message)
    except ProviderError as exc:
        failure = Failure(stage="submit", code="provider_rejected",
                          reason=f"WaveSpeed rejected the job: {exc.message}. Fix the input or the "
                                 "parameters, then upload the pair again.")
        return deps.store.transition(job, Event.FAIL, note=failure.reason, failure=failure, refund=True) or (
            _if_cancelled(job, deps, f"not taken (the provider rejected it: {exc.message})"))
    return _record_accepted(job, prediction, deps)


def _if_cancelled(job: Job, deps: Deps, outcome: str) -> Job:
    """A write after a POST the provider certainly did not take failed: if the job was cancelled
    meanwhile, record that (it cost nothing)."""
    current = deps.store.get(job.job_id)
    if current is not None and current.status is Status.CANCELLED:
        return settle_unanswered(current, outcome, deps)
    return current or job


def _record_unknown(job: Job, deps: Deps, note: str) -> Job:
    """Record that the POST got no clear answer: when it ended, and why. This record must not be
    lost to a concurrent write (the poller's touch, a cancel): the reconciler's window and the
    job's reason depend on it, so the job is re-read and the record made again."""
    settings = deps.settings
    sent_at = job.sent_at
    for _ in range(5):
        now = deps.clock()
        if job.status is Status.CANCELLED:
            return settle_ambiguous(job, deps, note=note, sent_until=now)
        recorded = deps.store.touch(job, submit_note=note, sent_until=now,
                                    next_check_at=now + settings.poll_min_seconds)
        if recorded is not None:
            return recorded
        current = deps.store.get(job.job_id)
        if current is None or current.sent_at != sent_at or current.provider_id or current.status not in (
                Status.SUBMITTING, Status.CANCELLED):
            return current or job  # settled meanwhile (a webhook, the reconciler) or a new attempt
        job = current
    logger.error("could not record the unknown submit outcome", extra={"job_id": job.job_id})
    return job


def _record_accepted(job: Job, prediction: Any, deps: Deps) -> Job:
    """SUBMITTED with the provider's id. A job touched meanwhile (the poller) is re-read and
    recorded again; one cancelled meanwhile has its fresh task deleted at the provider."""
    settings = deps.settings
    for _ in range(3):
        now = deps.clock()
        accepted = deps.store.transition(
            job, Event.SUBMIT_ACCEPTED, note=f"provider id {prediction.id}",
            provider_id=prediction.id, provider_model=prediction.model, submitted_at=job.sent_at or now,
            check_count=0, next_check_at=now + poll_delay(0, minimum=settings.poll_min_seconds,
                                                          maximum=settings.poll_max_seconds),
        )
        if accepted is not None:
            logger.info("job submitted", extra={"job_id": job.job_id, "provider_id": prediction.id})
            return accepted
        current = deps.store.get(job.job_id)
        if current is None:
            return job
        if current.status is Status.CANCELLED:
            return settle_late_task(current, prediction.id, deps)
        if current.status is not Status.SUBMITTING or current.provider_id:
            return current  # a webhook or the reconciler recorded it first
        job = current
    logger.error("could not record the provider id; the poller reconciles it",
                 extra={"job_id": job.job_id, "provider_id": prediction.id})
    return job
