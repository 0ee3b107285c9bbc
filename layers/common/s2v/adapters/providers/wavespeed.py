"""WaveSpeed AI: the Wan 2.2 Speech-To-Video client and the webhook signature scheme.

Submit is the one paid call. It is sent exactly once, and a failure is sorted into "certainly not
accepted" (``SubmitNotAccepted``: safe to send later), "may have been accepted"
(``SubmitOutcomeUnknown``: never resend blindly) or "rejected" (``ProviderError``). Reads (result,
list, balance, webhook secret) and delete (deleting twice is harmless) are idempotent and retried
with exponential backoff and full jitter.

The API key is resolved per call and never reaches an exception, a repr or a log line; nor do
request URLs, whose ``?webhook=`` carries our per-job callback token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import quote

import requests
from aws_lambda_powertools import Logger
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError

from s2v.model import models, provider_facts
from s2v.model.errors import ConfigError, ProviderError, SubmitNotAccepted, SubmitOutcomeUnknown

logger = Logger(child=True)

MODEL = models.WAN_S2V.path  # the default model; a request names its own (``SubmitRequest.model``)
SUBMIT_PATH = f"/api/v3/{MODEL}"
SUBMIT_PATH_FOR = "/api/v3/{model}"
RESULT_PATH = "/api/v3/predictions/{id}/result"
UPLOAD_PATH = provider_facts.UPLOAD_PATH
WEBHOOK_SECRET_PATH = "/api/v3/webhook/secret"
LIST_PATH = provider_facts.LIST_PATH
DELETE_PATH = provider_facts.DELETE_PATH
BALANCE_PATH = provider_facts.BALANCE_PATH

TERMINAL_FAILURE_STATUSES = frozenset(provider_facts.SDK_TERMINAL_FAILURES)
RETRYABLE_READ_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers that mean "not now" before the provider took the job: safe to submit again later.
NOT_ACCEPTED_STATUSES = frozenset({429, 503})
# Envelope codes: 1xxx say the request or input must change; 5xxx are the provider's own trouble.
PROVIDER_TROUBLE_CODES = range(5000, 6000)

WHSEC_PREFIX = "whsec_"
SIGNATURE_VERSION = "v3"
DEFAULT_TOLERANCE_SECONDS = 300
MAX_MESSAGE_CHARS = 300
REDACTED = "[redacted]"
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# ISO 8601 as the provider writes it: up to nanoseconds, "Z" or an offset (none means UTC).
_ISO_INSTANT = re.compile(r"\s*(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,12}))?"
                          r"\s*(Z|z|[+-]\d{2}:?\d{2})?\s*")

ApiKey = str | Callable[[], str]


@dataclass(frozen=True)
class SubmitRequest:
    image_url: str = ""
    audio_url: str = ""
    prompt: str = ""
    resolution: str = "480p"
    seed: int = -1
    model: str = MODEL  # the provider's model path
    # Request field -> URL, as the model's table entry names them (model/models.py); when set, it
    # replaces image_url/audio_url.
    media: Mapping[str, str] = field(default_factory=dict, repr=False)
    order: str = ""  # two-speaker models only

    @classmethod
    def for_model(cls, model: models.Model, urls: Mapping[str, str], *, prompt: str = "", resolution: str = "480p",
                  seed: int = -1, order: str = "") -> SubmitRequest:
        """The request for ``model`` from the URLs of a set's files by bucket role."""
        media = {name: urls[role] for name, role in model.fields.items() if role in urls}
        return cls(prompt=prompt, resolution=resolution, seed=seed, model=model.path, media=media,
                   order=order if model.orders else "")

    def body(self) -> dict[str, Any]:
        media = dict(self.media) if self.media else {"image": self.image_url, "audio": self.audio_url}
        body = {**media, "prompt": self.prompt, "resolution": self.resolution, "seed": self.seed}
        return body | ({"order": self.order} if self.order else {})


@dataclass(frozen=True)
class Prediction:
    """One task as the provider describes it (result ``data`` or webhook body)."""

    id: str
    model: str
    status: str  # lower-cased provider status
    outputs: tuple[str, ...] = ()
    has_nsfw_contents: tuple[bool, ...] = ()
    error: str = ""
    created_at: str = ""
    inference_ms: int | None = None
    urls_get: str = ""
    # The task's "input" object when the answer carries one (webhook bodies; list items asked for
    # with include_inputs), else empty. Not in the repr: its URLs may be presigned.
    input: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    @property
    def created_at_epoch(self) -> float | None:
        """``created_at`` as Unix seconds (nanosecond timestamps kept to float precision), or None."""
        return iso_to_epoch(self.created_at)

    @property
    def is_completed(self) -> bool:
        return self.status == "completed"

    @property
    def is_failed(self) -> bool:
        # As in the official SDK: only these end a task unsuccessfully. Any other status (created,
        # processing, or one added later) keeps it in flight; the job deadline catches a stuck one.
        return self.status in TERMINAL_FAILURE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.is_completed or self.is_failed

    @property
    def nsfw(self) -> bool:
        return any(self.has_nsfw_contents)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Prediction:
        """Build from a task object, tolerating missing or null fields."""
        if not isinstance(data, Mapping):
            raise ValueError("a task must be a JSON object")
        urls = data.get("urls")
        timings = data.get("timings")
        return cls(
            id=_text(data.get("id")),
            model=_text(data.get("model")),
            status=_text(data.get("status")).strip().lower(),
            outputs=tuple(url for url in _items(data.get("outputs")) if isinstance(url, str) and url),
            has_nsfw_contents=tuple(flag is True for flag in _items(data.get("has_nsfw_contents"))),
            error=_text(data.get("error")),
            created_at=_text(data.get("created_at")),
            inference_ms=_whole_number(timings.get("inference")) if isinstance(timings, Mapping) else None,
            urls_get=_text(urls.get("get")) if isinstance(urls, Mapping) else "",
            input=dict(task_input) if isinstance(task_input := data.get("input"), Mapping) else {},
        )


@dataclass(frozen=True)
class PredictionPage:
    """One page of the predictions list: newest first, the past 7 days only (provider_facts)."""

    items: tuple[Prediction, ...]
    page: int
    total: int | None = None


def iso_to_epoch(value: str) -> float | None:
    """Unix seconds for an ISO 8601 instant such as ``2025-05-19T06:09:15.948268264Z``; None if unreadable."""
    match = _ISO_INSTANT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    offset = "+00:00" if zone in (None, "Z", "z") else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    try:
        whole = datetime.fromisoformat(f"{day}T{clock}{offset}").timestamp()
    except ValueError:
        return None
    return whole + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def to_iso(instant: datetime | str) -> str:
    """An ISO 8601 UTC instant ending in 'Z' (a naive datetime is taken as UTC); strings pass as given."""
    if isinstance(instant, str):
        return instant
    aware = instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)


def _items(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return [] if value is None else [value]


def _whole_number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(value)


def unwrap_envelope(payload: Any) -> Any:
    """The task inside a ``{code, message, data}`` envelope, or the payload itself."""
    if isinstance(payload, Mapping) and "code" in payload and isinstance(payload.get("data"), Mapping):
        return payload["data"]
    return payload


def parse_webhook_task(body: bytes) -> Prediction:
    """The task a callback carries. The body is the bare task object; an envelope is accepted too.
    Raises ValueError when the body is not a task."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSON and encoding errors are ValueErrors
        raise ValueError("webhook body is not JSON") from exc
    prediction = Prediction.from_api(unwrap_envelope(payload))
    if not prediction.id or not prediction.status:
        raise ValueError("webhook body has no task id or status")
    return prediction


# --------------------------------------------------------------------------- webhook signatures

def _signing_key(secret: str) -> bytes:
    # WaveSpeed's key is the secret after the prefix, as text: not base64-decoded (PROVIDER.md).
    return secret.removeprefix(WHSEC_PREFIX).encode()


def _signature(body: bytes, key: bytes, webhook_id: str, timestamp: str) -> str:
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_webhook(body: bytes, secret: str, *, webhook_id: str, timestamp: int) -> dict[str, str]:
    """The headers WaveSpeed sends with a callback whose raw body is ``body``."""
    stamp = str(int(timestamp))
    signature = _signature(body, _signing_key(secret), webhook_id, stamp)
    return {"webhook-id": webhook_id, "webhook-timestamp": stamp,
            "webhook-signature": f"{SIGNATURE_VERSION},{signature}"}


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str, *, now: float,
                   tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS) -> bool:
    """True only for a callback signed with ``secret`` within ``tolerance_seconds`` of ``now``.
    Header names are case-insensitive. Never raises: malformed input is simply not verified."""
    try:
        return _verify(headers, body, secret, now, tolerance_seconds)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return False


def _verify(headers: Mapping[str, str], body: bytes, secret: str, now: float, tolerance: int) -> bool:
    lowered = {str(name).lower(): value for name, value in headers.items()}
    webhook_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (isinstance(webhook_id, str) and isinstance(timestamp, str) and isinstance(signatures, str)):
        return False
    if not webhook_id or not isinstance(secret, str) or not isinstance(body, bytes | bytearray):
        return False
    key = _signing_key(secret)
    if not key or not _TIMESTAMP.fullmatch(timestamp):
        return False
    if not abs(float(now) - int(timestamp)) <= tolerance:  # stale (replay), from the future, or NaN
        return False
    expected = _signature(bytes(body), key, webhook_id, timestamp).encode()
    return any(hmac.compare_digest(expected, candidate) for candidate in _v3_signatures(signatures))


def _v3_signatures(header: str) -> Iterator[bytes]:
    # A header may carry several space-separated "version,signature" pairs (e.g. during rotation).
    for part in header.split():
        version, _, value = part.partition(",")
        if version == SIGNATURE_VERSION and value:
            yield value.lower().encode("utf-8", "replace")


# --------------------------------------------------------------------------- the client

class _Retryable(Exception):
    """A read failed in a way another attempt may fix; never escapes the read loop."""

    def __init__(self, message: str, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


class WaveSpeedClient:
    """Talks to the real API, the local emulator or a test server: only ``base_url`` differs."""

    def __init__(self, base_url: str, api_key: ApiKey, *, timeout: float = 30.0,
                 session: requests.Session | None = None, max_read_retries: int = 4,
                 backoff_base: float = 0.5, backoff_max: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep, connect_timeout: float = 10.0,
                 rng: random.Random | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the WaveSpeed base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = (min(connect_timeout, timeout), timeout)
        self._session = session or requests.Session()
        self._max_read_retries = max(0, max_read_retries)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto

    def __repr__(self) -> str:
        return f"WaveSpeedClient(base_url={self.base_url!r})"

    # -- the paid call

    def submit(self, req: SubmitRequest, *, webhook_url: str | None = None) -> Prediction:
        """Send the job once. Raises SubmitNotAccepted, SubmitOutcomeUnknown or ProviderError."""
        key = self._key()
        try:
            response = self._session.post(
                self.base_url + SUBMIT_PATH_FOR.format(model=req.model), json=req.body(),
                params={"webhook": webhook_url} if webhook_url else None, headers=self._headers(key),
                timeout=self._timeout,
                allow_redirects=False,  # a 307/308 would send the paid POST a second time
            )
        except requests.RequestException as exc:
            if _never_connected(exc):
                raise SubmitNotAccepted(f"WaveSpeed could not be reached ({_describe(exc)}); "
                                        "nothing was sent") from None
            raise SubmitOutcomeUnknown(f"WaveSpeed gave no answer to the submit ({_describe(exc)}); "
                                       "it may have accepted the job") from None
        payload = _json(response)
        status, code = response.status_code, _code(payload)
        failure = _submit_failure(_verdict(status, code), http_status=status, provider_code=code,
                                  message=_message(payload, response, key), retry_after=_retry_after(response))
        if failure is not None:
            raise failure
        prediction = _prediction_or_none(unwrap_envelope(payload))
        if prediction is None:
            raise SubmitOutcomeUnknown(f"WaveSpeed answered the submit with HTTP {status} but no readable task; "
                                       "it may have accepted the job")
        return prediction

    # -- idempotent reads

    def result(self, prediction_id: str) -> Prediction:
        """The task's current state. Retries transient failures, then raises
        ProviderError(retryable=True); an unknown id raises ProviderError(status_code=404)."""
        if not prediction_id:
            raise ProviderError("no prediction id to look up", retryable=False)
        what = f"the result of {prediction_id}"
        payload = self._get_json(RESULT_PATH.format(id=quote(prediction_id, safe="")), what)
        prediction = _prediction_or_none(unwrap_envelope(payload))
        if prediction is None:
            raise ProviderError(f"WaveSpeed answered {what} without a task", retryable=True)
        return prediction

    def list_predictions(self, *, page: int = 1, page_size: int = provider_facts.LIST_MAX_PAGE_SIZE,
                         model: str | None = None, created_after: datetime | str | None = None,
                         created_before: datetime | str | None = None) -> PredictionPage:
        """One page of the account's predictions (newest first, past 7 days, web ones too), each
        with its input where the provider gives it. For reconciliation sweeps, not status polling.
        Raises ValueError for a page < 1 or a page_size outside 1..100 (nothing is sent)."""
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValueError(f"page must be a whole number >= 1, got {page!r}")
        if (isinstance(page_size, bool) or not isinstance(page_size, int)
                or not 1 <= page_size <= provider_facts.LIST_MAX_PAGE_SIZE):
            raise ValueError(f"page_size must be 1..{provider_facts.LIST_MAX_PAGE_SIZE}, got {page_size!r}")
        body: dict[str, Any] = {"page": page, "page_size": page_size, "include_inputs": True}
        if model:
            body["model"] = model
        if created_after is not None:
            body["created_after"] = to_iso(created_after)
        if created_before is not None:
            body["created_before"] = to_iso(created_before)
        what = f"the predictions list (page {page})"
        data = unwrap_envelope(self._read_json("POST", LIST_PATH, what, body=body))
        items = data.get("items") if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            raise ProviderError(f"WaveSpeed answered {what} without a list of items", retryable=True)
        predictions = tuple(p for p in map(_prediction_or_none, items) if p is not None)
        total = _whole_number(data.get("total"))
        answered_page = _whole_number(data.get("page"))
        return PredictionPage(items=predictions, page=answered_page or page, total=total)

    def delete_prediction(self, prediction_id: str) -> Prediction:
        """Delete (cancel) a task; a processing one may not stop at once. Idempotent, so retried
        like a read. An unknown id raises ProviderError(status_code=404)."""
        if not prediction_id:
            raise ProviderError("no prediction id to delete", retryable=False)
        what = f"the deletion of {prediction_id}"
        data = unwrap_envelope(self._read_json("DELETE", DELETE_PATH.format(id=quote(prediction_id, safe="")), what))
        task = {"id": prediction_id, "status": "deleted", **data} if isinstance(data, Mapping) else {}
        prediction = _prediction_or_none(task)
        if prediction is None:
            raise ProviderError(f"WaveSpeed answered {what} without a task", retryable=True)
        return prediction

    def balance(self) -> float:
        """The account balance in USD. Transient failures and unreadable answers raise
        ProviderError(retryable=True); a refused key is not retryable."""
        data = unwrap_envelope(self._read_json("GET", BALANCE_PATH, "the account balance"))
        value = data.get("balance") if isinstance(data, Mapping) else None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ProviderError("WaveSpeed answered the balance request without a balance", retryable=True)
        return float(value)

    def webhook_secret(self) -> str:
        """The account's callback signing secret, as given (``whsec_...``)."""
        payload = self._get_json(WEBHOOK_SECRET_PATH, "the webhook secret")
        data = payload.get("data")
        candidates = [data, payload.get("secret")]
        if isinstance(data, Mapping):
            candidates[:0] = [data.get("secret"), data.get("webhook_secret")]
        for value in candidates:
            if isinstance(value, str) and value.strip():
                return value.strip()
        raise ProviderError("WaveSpeed answered the webhook secret request without a secret", retryable=False)

    # -- media

    def upload_media(self, data: bytes | BinaryIO, filename: str, content_type: str) -> str:
        """Upload bytes the provider can fetch later; returns their ``download_url``. Sent once
        (a stream cannot be replayed): the caller retries the whole step if needed."""
        key = self._key()
        try:
            response = self._session.post(self.base_url + UPLOAD_PATH, files={"file": (filename, data, content_type)},
                                          headers=self._headers(key), timeout=self._timeout)
        except requests.RequestException as exc:
            raise ProviderError(f"media upload to WaveSpeed failed ({_describe(exc)})", retryable=True) from None
        payload = _json(response)
        status, code = response.status_code, _code(payload)
        verdict = _verdict(status, code)
        if not 200 <= verdict < 300:
            raise ProviderError(f"WaveSpeed refused the media upload ({verdict}): {_message(payload, response, key)}",
                                status_code=_http_status(verdict, status), provider_code=code,
                                retryable=_transient(verdict), retry_after=_retry_after(response))
        data_field = payload.get("data") if isinstance(payload, Mapping) else None
        url = data_field.get("download_url") if isinstance(data_field, Mapping) else None
        if not isinstance(url, str) or not url:
            raise ProviderError("WaveSpeed answered the media upload without a download_url", retryable=True)
        return url

    # -- plumbing

    def _key(self) -> str:
        key = self._api_key() if callable(self._api_key) else self._api_key
        if not key:
            raise ConfigError("no WaveSpeed API key is configured")
        return key

    @staticmethod
    def _headers(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    def _get_json(self, path: str, what: str) -> Mapping[str, Any]:
        return self._read_json("GET", path, what)

    def _read_json(self, method: str, path: str, what: str, *, body: Any = None) -> Mapping[str, Any]:
        """An idempotent call, retried on 429/5xx, timeouts and dropped or unreadable answers."""
        key = self._key()
        url = self.base_url + path
        attempts = self._max_read_retries + 1
        last = _Retryable("not attempted")
        for attempt in range(attempts):
            try:
                return self._read_once(method, url, key, what, body)
            except _Retryable as problem:
                last = problem
            delay = self._backoff(attempt, last.retry_after)
            if attempt == attempts - 1 or delay is None:
                break
            logger.warning("WaveSpeed read failed; retrying", extra={
                "what": what, "attempt": attempt + 1, "delay_seconds": round(delay, 3), "problem": last.message})
            self._sleep(delay)
        raise ProviderError(f"WaveSpeed did not answer {what} ({last.message}) after {attempt + 1} attempt(s)",
                            status_code=last.status_code, retryable=True, retry_after=last.retry_after)

    def _read_once(self, method: str, url: str, key: str, what: str, body: Any) -> Mapping[str, Any]:
        try:
            response = self._session.request(method, url, json=body, headers=self._headers(key),
                                             timeout=self._timeout, allow_redirects=method == "GET")
        except requests.RequestException as exc:
            raise _Retryable(_describe(exc)) from None
        status = response.status_code
        payload = _json(response)
        message = _message(payload, response, key)
        code = _code(payload)
        verdict = _verdict(status, code)
        if _transient(verdict):
            raise _Retryable(f"{verdict}: {message}", _http_status(verdict, status), _retry_after(response))
        if not 200 <= verdict < 300:  # an HTTP 200 whose envelope says 404 is a 404
            raise ProviderError(f"WaveSpeed refused {what} ({verdict}): {message}",
                                status_code=_http_status(verdict, status), provider_code=code, retryable=False)
        if not isinstance(payload, Mapping):
            raise _Retryable(f"HTTP {status} with an unreadable body", status)
        return payload

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt; None when the provider asks for a longer wait
        than we block for (the caller gets ``retry_after`` and checks again later)."""
        if retry_after is not None:
            return retry_after if retry_after <= self._backoff_max else None
        return self._rng.uniform(0.0, min(self._backoff_max, self._backoff_base * 2 ** attempt))


def _verdict(http_status: int, code: int | None) -> int:
    """What an answer amounts to: its HTTP status, or for a 2xx the envelope's code (documented as
    an HTTP status, so an error inside a 2xx is judged like the same HTTP error)."""
    if not 200 <= http_status < 300:
        return http_status
    return 200 if code is None else code


def _submit_failure(verdict: int, *, http_status: int, provider_code: int | None, message: str,
                    retry_after: float | None) -> ProviderError | None:
    """How a submit failed, if it did."""
    if 200 <= verdict < 300:
        return None
    if verdict in NOT_ACCEPTED_STATUSES:
        return SubmitNotAccepted(f"WaveSpeed did not accept the job now ({verdict}): {message}",
                                 status_code=verdict, retry_after=retry_after)
    if 500 <= verdict <= 599 or verdict in PROVIDER_TROUBLE_CODES:
        return SubmitOutcomeUnknown(f"WaveSpeed answered the submit with {verdict} ({message}); "
                                    "it may have accepted the job")
    return ProviderError(f"WaveSpeed rejected the job ({verdict}): {message}",
                         status_code=_http_status(verdict, http_status), provider_code=provider_code, retryable=False)


def _transient(code: int | None) -> bool:
    return code is not None and (code in RETRYABLE_READ_STATUSES or code in PROVIDER_TROUBLE_CODES)


def _http_status(code: int | None, fallback: int) -> int:
    return code if code is not None and 100 <= code <= 599 else fallback


def _prediction_or_none(data: Any) -> Prediction | None:
    if not isinstance(data, Mapping):
        return None
    prediction = Prediction.from_api(data)
    return prediction if prediction.id else None


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def _code(payload: Any) -> int | None:
    code = payload.get("code") if isinstance(payload, Mapping) else None
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    return int(code) if isinstance(code, str) and code.strip().isdigit() else None


def _message(payload: Any, response: requests.Response, key: str) -> str:
    """The provider's own words, short and with the key removed should a server ever echo it."""
    text = ""
    if isinstance(payload, Mapping):
        data = payload.get("data")
        text = _text(payload.get("message")) or (_text(data.get("error")) if isinstance(data, Mapping) else "")
    if not text:
        text = response.text
    text = " ".join(text.split())[:MAX_MESSAGE_CHARS] or response.reason or "no message"
    return text.replace(key, REDACTED) if key else text


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps: requests → urllib3 MaxRetryError → the socket-level cause."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        if isinstance(node, MaxRetryError) and node.reason is not None:
            node = node.reason
        elif node.args and isinstance(node.args[0], BaseException):
            node = node.args[0]
        else:
            node = node.__cause__ or node.__context__


def _never_connected(exc: BaseException) -> bool:
    """True when no connection was ever made (refused, DNS failure, connect timeout): nothing was
    sent. A TLS or protocol failure could come after the request went out, so it does not count."""
    return isinstance(exc, requests.exceptions.ConnectTimeout) or any(
        isinstance(cause, ConnectTimeoutError) for cause in _causes(exc))  # NewConnectionError is one


def _describe(exc: BaseException) -> str:
    """A short reason without the URL (requests puts the full URL, token and all, in its messages)."""
    causes = list(_causes(exc))
    if any(isinstance(c, NameResolutionError) for c in causes):
        return "host name not found"
    if isinstance(exc, requests.exceptions.ConnectTimeout) or any(
            type(c) is ConnectTimeoutError for c in causes):
        return "connect timeout"
    if _never_connected(exc):
        return "connection refused"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return "connection dropped mid-response"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection dropped"
    return type(exc).__name__
