"""Typed settings, read from the environment once per cold start.

Every tunable lives here with its documented default; nothing else in the package reads
``os.environ``. ``Settings.from_env()`` fails fast naming the variable that is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from s2v.model.errors import ConfigError
from s2v.model.models import CATALOG, DEFAULT_MODEL
from s2v.model.provider_facts import BILLED_MIN_SECONDS as MIN_SEGMENT_SECONDS
from s2v.model.provider_facts import MAX_SECONDS_PER_CALL, OUTPUT_HOSTS, PRICE_PER_SECOND, RESOLUTIONS

DEFAULT_PRICE_PER_SECOND = PRICE_PER_SECOND
# The provider's API domain and its one CDN host for this model, never *.cloudfront.net.
DEFAULT_OUTPUT_HOSTS = OUTPUT_HOSTS
# One call renders up to 10 minutes; 200 MiB admits a 10-minute 48 kHz stereo 16-bit WAV (~115 MB).
DEFAULT_MAX_AUDIO_SECONDS = MAX_SECONDS_PER_CALL
DEFAULT_MAX_AUDIO_BYTES = 200 * 1024 * 1024
# Long-form: a talk up to 3 hours becomes segment jobs; its file may be larger than one call's.
DEFAULT_MAX_TALK_SECONDS = 3 * 3600
DEFAULT_MAX_TALK_BYTES = 2 * 1024 * 1024 * 1024


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is required but not set")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"environment variable {name} must be true or false, got {raw!r}")


def _prices(env: Mapping[str, str]) -> dict[str, float]:
    raw = env.get("S2V_PRICE_PER_SECOND")
    if not raw:
        return {}  # each model's own prices (model/models.py)
    try:
        table = json.loads(raw)
        prices = {str(k): float(v) for k, v in table.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(
            'S2V_PRICE_PER_SECOND must be a JSON object like {"480p": 0.03, "720p": 0.06}'
        ) from exc
    missing = [r for r in RESOLUTIONS if r not in prices]
    if missing:
        raise ConfigError(f"S2V_PRICE_PER_SECOND has no price for {', '.join(missing)}")
    return prices


def _model(env: Mapping[str, str]) -> str:
    raw = _get(env, "S2V_DEFAULT_MODEL", DEFAULT_MODEL)
    model = CATALOG.get(raw)
    if model is None:
        raise ConfigError(f"S2V_DEFAULT_MODEL must be one of {', '.join(CATALOG.names)}, got {raw!r}")
    return model.name


@dataclass(frozen=True)
class Settings:
    """All configuration of the pipeline. See the README's configuration table."""

    bucket: str
    jobs_table: str
    input_prefix: str = "inputs/"
    output_prefix: str = "outputs/"
    # Private working files of long talks (segment audio and videos): never an input, never an output.
    work_prefix: str = "work/"

    # Provider
    provider_base_url: str = "https://api.wavespeed.ai"
    api_key_secret_id: str = ""  # Secrets Manager id of the WaveSpeed API key (AWS)
    api_key: str = field(default="", repr=False)  # WAVESPEED_API_KEY (local only)
    provider_timeout_seconds: float = 30.0
    media_mode: str = "presign"  # "presign": presigned S3 GET URLs; "upload": provider upload
    presign_expiry_seconds: int = 6 * 3600

    # Webhooks: empty base URL means polling only.
    webhook_base_url: str = ""
    webhook_token_secret_id: str = ""  # Secrets Manager id of our per-job token key (AWS)
    webhook_token_key: str = field(default="", repr=False)  # local only
    webhook_secret_id: str = ""  # Secrets Manager id caching the provider's whsec_ secret
    webhook_max_body_bytes: int = 64 * 1024
    webhook_tolerance_seconds: int = 300

    # Inputs and defaults
    default_prompt: str = ""
    default_resolution: str = "480p"
    default_seed: int = -1
    default_model: str = DEFAULT_MODEL  # a name in model/models.py; two-speaker sets fall back to a model that fits
    max_prompt_chars: int = 2000
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
    max_image_bytes: int = 30 * 1024 * 1024
    max_audio_bytes: int = DEFAULT_MAX_AUDIO_BYTES
    # Long-form (flows/longform.py): 0 turns it off (longer audio is refused as before).
    max_talk_seconds: float = DEFAULT_MAX_TALK_SECONDS
    max_talk_bytes: int = DEFAULT_MAX_TALK_BYTES
    segment_seconds: float = 0.0  # cut every talk into segments this long (0: only talks over one call)
    segment_retries: int = 2  # automatic re-renders of a segment that failed for a render reason
    crossfade_ms: int = 0  # a short crossfade of the video at each join of a talk (0: a clean cut)
    # An operator's own price per second by resolution, for every model (S2V_PRICE_PER_SECOND);
    # empty: each model's price from the table.
    price_per_second: Mapping[str, float] = field(default_factory=dict)

    # Delivery
    output_allowed_hosts: tuple[str, ...] = DEFAULT_OUTPUT_HOSTS
    local_mode: bool = False  # allows plain http to loopback output URLs
    max_output_bytes: int = 2 * 1024 * 1024 * 1024

    # Polling and deadlines
    poll_min_seconds: int = 5
    poll_max_seconds: int = 60
    # The poll schedule's period; jobs due before the midpoint to the next run are checked now.
    # Without it, a job checked a moment into a run (next check = +60 s) was not yet due when the
    # next run started 60 s later, and waited a second minute.
    poll_schedule_seconds: int = 0
    job_deadline_seconds: int = 3600
    # A two-speaker set missing one track fails this long after the first event that saw it so
    # (the other track may still be uploading); the complete set renders whenever it is complete.
    incomplete_set_wait_seconds: int = 900
    submit_reconcile_seconds: int = 900
    # A QUEUED job still waiting this long after it was created ends FAILED (model/bounds.py).
    queue_deadline_seconds: int = 2 * 86400
    job_ttl_days: int = 30

    # Notifications
    event_bus: str = "default"
    event_source: str = "s2v"

    # Spend guard
    max_in_flight_jobs: int = 2
    daily_budget_usd: float = 20.0

    # Batches (manifests): rows whose files are missing wait this long, checked again every retry period.
    ingest_queue_url: str = ""  # where a manifest's rows are fanned out (the ingest queue itself)
    batch_wait_seconds: int = 3600
    batch_retry_seconds: int = 60
    batch_report_seconds: int = 10  # a running batch's report is rewritten at most this often (and when it ends)
    # A row still without a job this long after the wait window was lost (its fan-out message went to
    # the ingest DLQ after 5 receives x 360 s visibility): the poller fails it, saying so.
    batch_row_lost_seconds: int = 3600
    max_manifest_rows: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        resolution = _get(env, "S2V_DEFAULT_RESOLUTION", "480p")
        if resolution not in RESOLUTIONS:
            raise ConfigError(f"S2V_DEFAULT_RESOLUTION must be one of {RESOLUTIONS}")
        media_mode = _get(env, "S2V_MEDIA_MODE", "presign")
        if media_mode not in ("presign", "upload"):
            raise ConfigError("S2V_MEDIA_MODE must be 'presign' or 'upload'")
        hosts = tuple(
            h.strip().lower()
            for h in _get(env, "S2V_OUTPUT_ALLOWED_HOSTS", ",".join(DEFAULT_OUTPUT_HOSTS)).split(",")
            if h.strip()
        )
        settings = cls(
            bucket=_get(env, "S2V_BUCKET"),
            jobs_table=_get(env, "S2V_JOBS_TABLE"),
            input_prefix=_get(env, "S2V_INPUT_PREFIX", "inputs/"),
            output_prefix=_get(env, "S2V_OUTPUT_PREFIX", "outputs/"),
            work_prefix=_get(env, "S2V_WORK_PREFIX", "work/"),
            provider_base_url=_get(env, "WAVESPEED_BASE_URL", "https://api.wavespeed.ai").rstrip("/"),
            api_key_secret_id=env.get("WAVESPEED_API_KEY_SECRET_ID", ""),
            api_key=env.get("WAVESPEED_API_KEY", ""),
            provider_timeout_seconds=_float(env, "WAVESPEED_TIMEOUT_SECONDS", 30.0),
            media_mode=media_mode,
            presign_expiry_seconds=_int(env, "S2V_PRESIGN_EXPIRY_SECONDS", 6 * 3600),
            webhook_base_url=env.get("S2V_WEBHOOK_BASE_URL", "").rstrip("/"),
            webhook_token_secret_id=env.get("S2V_WEBHOOK_TOKEN_SECRET_ID", ""),
            webhook_token_key=env.get("S2V_WEBHOOK_TOKEN_KEY", ""),
            webhook_secret_id=env.get("WAVESPEED_WEBHOOK_SECRET_ID", ""),
            webhook_max_body_bytes=_int(env, "S2V_WEBHOOK_MAX_BODY_BYTES", 64 * 1024),
            webhook_tolerance_seconds=_int(env, "S2V_WEBHOOK_TOLERANCE_SECONDS", 300),
            default_prompt=env.get("S2V_DEFAULT_PROMPT", ""),
            default_resolution=resolution,
            default_seed=_int(env, "S2V_DEFAULT_SEED", -1),
            default_model=_model(env),
            max_prompt_chars=_int(env, "S2V_MAX_PROMPT_CHARS", 2000),
            max_audio_seconds=_float(env, "S2V_MAX_AUDIO_SECONDS", DEFAULT_MAX_AUDIO_SECONDS),
            max_talk_seconds=_float(env, "S2V_MAX_TALK_SECONDS", DEFAULT_MAX_TALK_SECONDS),
            max_talk_bytes=_int(env, "S2V_MAX_TALK_BYTES", DEFAULT_MAX_TALK_BYTES),
            segment_seconds=_float(env, "S2V_SEGMENT_SECONDS", 0.0),
            segment_retries=_int(env, "S2V_SEGMENT_RETRIES", 2),
            crossfade_ms=_int(env, "S2V_CROSSFADE_MS", 0),
            max_image_bytes=_int(env, "S2V_MAX_IMAGE_BYTES", 30 * 1024 * 1024),
            max_audio_bytes=_int(env, "S2V_MAX_AUDIO_BYTES", DEFAULT_MAX_AUDIO_BYTES),
            price_per_second=_prices(env),
            output_allowed_hosts=hosts,
            local_mode=_bool(env, "S2V_LOCAL_MODE", False),
            max_output_bytes=_int(env, "S2V_MAX_OUTPUT_BYTES", 2 * 1024 * 1024 * 1024),
            poll_min_seconds=_int(env, "S2V_POLL_MIN_SECONDS", 5),
            poll_max_seconds=_int(env, "S2V_POLL_MAX_SECONDS", 60),
            poll_schedule_seconds=_int(env, "S2V_POLL_SCHEDULE_SECONDS", 0),
            job_deadline_seconds=_int(env, "S2V_JOB_DEADLINE_SECONDS", 3600),
            incomplete_set_wait_seconds=_int(env, "S2V_INCOMPLETE_SET_WAIT_SECONDS", 900),
            submit_reconcile_seconds=_int(env, "S2V_SUBMIT_RECONCILE_SECONDS", 900),
            queue_deadline_seconds=_int(env, "S2V_QUEUE_DEADLINE_SECONDS", 2 * 86400),
            job_ttl_days=_int(env, "S2V_JOB_TTL_DAYS", 30),
            event_bus=_get(env, "S2V_EVENT_BUS", "default"),
            event_source=_get(env, "S2V_EVENT_SOURCE", "s2v"),
            max_in_flight_jobs=_int(env, "S2V_MAX_IN_FLIGHT_JOBS", 2),
            daily_budget_usd=_float(env, "S2V_DAILY_BUDGET_USD", 20.0),
            ingest_queue_url=env.get("S2V_INGEST_QUEUE_URL", ""),
            batch_wait_seconds=_int(env, "S2V_BATCH_WAIT_SECONDS", 3600),
            batch_retry_seconds=_int(env, "S2V_BATCH_RETRY_SECONDS", 60),
            batch_report_seconds=_int(env, "S2V_BATCH_REPORT_SECONDS", 10),
            batch_row_lost_seconds=_int(env, "S2V_BATCH_ROW_LOST_SECONDS", 3600),
            max_manifest_rows=_int(env, "S2V_MAX_MANIFEST_ROWS", 10_000),
        )
        if not settings.input_prefix.endswith("/") or not settings.output_prefix.endswith("/"):
            raise ConfigError("S2V_INPUT_PREFIX and S2V_OUTPUT_PREFIX must end with '/'")
        if settings.input_prefix.startswith(settings.output_prefix) or settings.output_prefix.startswith(
            settings.input_prefix
        ):
            raise ConfigError("S2V_INPUT_PREFIX and S2V_OUTPUT_PREFIX must not overlap")
        if not settings.work_prefix.endswith("/") or any(
                a.startswith(b) or b.startswith(a) for a in (settings.work_prefix,)
                for b in (settings.input_prefix, settings.output_prefix)):
            raise ConfigError("S2V_WORK_PREFIX must end with '/' and overlap neither inputs nor outputs")
        if settings.segment_seconds and not 2 * MIN_SEGMENT_SECONDS <= settings.segment_seconds <= (
                settings.max_audio_seconds):
            raise ConfigError(f"S2V_SEGMENT_SECONDS must be 0 (off) or from {2 * MIN_SEGMENT_SECONDS:g} to "
                              f"{settings.max_audio_seconds:g} (MaxAudioSeconds)")
        return settings

    def price_for(self, resolution: str, model: str = "") -> float:
        if resolution in self.price_per_second:
            return float(self.price_per_second[resolution])
        return float(CATALOG[model or self.default_model].price_per_second[resolution])
