"""What s2v relies on about the live WaveSpeed service, in one place, each fact with its source.

When the provider changes, this file changes (and the emulator, which imports it, follows).
Facts about each model (fields, prices, billing, limits) are in the model table beside it,
``model/models.py``, with their sources; the emulator serves every model from that table.
Sources: the model's docs page (wavespeed.ai/docs/docs-api/wavespeed-ai/wan-2.2/speech-to-video),
the predictions API pages, and the official Python SDK (``wavespeed`` on PyPI); see PROVIDER.md.
"""

from __future__ import annotations

import math

# Model docs page: 480p and 720p; 480p is the default.
RESOLUTIONS = ("480p", "720p")
# Model docs page: $0.15 per 5 s at 480p and $0.30 per 5 s at 720p (USD per second of video).
PRICE_PER_SECOND = {"480p": 0.03, "720p": 0.06}
# Model docs page: billed duration is the input media rounded up to whole seconds, at least 3 s.
BILLED_MIN_SECONDS = 3
CURRENCY = "USD"
# Model docs page: up to 10 minutes per call, rendered seamlessly within one call.
MAX_SECONDS_PER_CALL = 600.0
# Output frame rate: the model's reference implementation renders at 16 fps (Wan-Video/Wan2.2:
# wan/configs/shared_config.py sample_fps = 16; generate.py writes the video at cfg.sample_fps). The
# provider's model page states no frame rate: assumed unchanged (``make live-check`` shows the real one).
OUTPUT_FRAMES_PER_SECOND = 16
# Frame quantization: the reference renders clips of 80 frames (the first loses 3) until the audio is
# covered, then muxes the audio with ``-shortest`` over a copied video stream, which ends the video at
# the first frame boundary at or after the audio's end (assumed the same for the provider).
# Outputs are served from the provider's CDN, one exact host (results recorded by public client
# projects: https://<this host>/predictions/<task id>/1.mp4); never a wildcard over the shared CDN.
CDN_HOST = "d1q70pf5vjeyhc.cloudfront.net"
OUTPUT_HOSTS = ("*.wavespeed.ai", CDN_HOST)
OUTPUT_PATH = "/predictions/{id}/1.mp4"
# Other models' outputs come from other distributions: the predictions docs page's example lists a
# flux-dev image on d11ewybssaphwx.cloudfront.net. One more reason never to allow *.cloudfront.net,
# and to check the host a live render really uses (``make live-check``).
OTHER_MODEL_CDN_HOST = "d11ewybssaphwx.cloudfront.net"

# Data retention ("What are Predictions"; list docs): predictions and their outputs are kept 7 days;
# the list endpoint sees only the past 7 days.
RETENTION_SECONDS = 7 * 24 * 3600

# Statuses ("What are Predictions"): created -> processing -> completed | failed. The official SDK
# also ends a task on these; "deleted" is what the delete endpoint answers.
STATUSES = ("created", "processing", "completed", "failed")
SDK_TERMINAL_FAILURES = ("failed", "cancelled", "timeout", "deleted")

# Envelope (every docs page): {"code": <int, an HTTP status: 200 ok>, "message": str, "data": ...}.
# Task error codes (error-codes page): 1xxx = change the request or input, 5xxx = retry later.
TASK_ERROR_CODES = {1200: "content moderation", 1400: "missing parameter", 1401: "invalid parameter",
                    1402: "media access failed", 1403: "task execution failed", 1405: "task execution failed",
                    5000: "internal error", 5003: "service unavailable", 5004: "timeout"}

# Media upload (docs-common-api/media-upload, upload-files-api): POST /api/v3/media/upload/binary,
# multipart field "file"; answers data {type: image | video | audio, download_url, filename, size}.
# The official SDK refuses streams over 200 MB; the docs say pass a URL above 300 MB.
UPLOAD_PATH = "/api/v3/media/upload/binary"
UPLOAD_TYPES = ("image", "video", "audio")
UPLOAD_MAX_BYTES = 200 * 1024 * 1024

# Predictions API (docs-common-api/predictions): POST /api/v3/predictions with JSON
# {"page" >= 1, "page_size" 1..100} and optional "model", "status", "created_after",
# "created_before" (ISO 8601) filters; answers {code, message, data: {page, total, items: [task...]}},
# newest first, API and web predictions alike. The docs say: for history and reconciliation, not
# for status polling. "include_inputs": true is not in the docs but is sent by a public client;
# when the answer carries an item's "input" (as webhook bodies do), matching can use it.
LIST_PATH = "/api/v3/predictions"
LIST_MAX_PAGE_SIZE = 100

# Delete task (docs/delete-task): DELETE /api/v3/predictions/{id} -> data.status "deleted";
# a processing task may not stop at once; partial refunds may apply. (A bulk form,
# POST /api/v3/predictions/delete {"ids": [...]}, ignores unknown ids.)
DELETE_PATH = "/api/v3/predictions/{id}"

# Check balance (docs/check-balance): GET /api/v3/account/balance -> data.balance (USD),
# data.currency. The older common-API page names GET /api/v3/balance for the same answer.
BALANCE_PATH = "/api/v3/account/balance"


def billed_seconds(media_seconds: float) -> int:
    """Seconds the provider bills for input media this long (model docs page): whole seconds rounded
    up, at least BILLED_MIN_SECONDS. Rounded to the millisecond first so 3.0000001 s bills 3 s."""
    return max(BILLED_MIN_SECONDS, math.ceil(round(media_seconds, 3)))


def price_usd(media_seconds: float, resolution: str) -> float:
    """What one call costs in USD: billed seconds x the resolution's price per second."""
    return round(billed_seconds(media_seconds) * PRICE_PER_SECOND[resolution], 6)


def output_frames(media_seconds: float) -> int:
    """Frames in the provider's video for audio this long: whole frames at OUTPUT_FRAMES_PER_SECOND
    covering the audio (rounded to the microsecond first, so exactly 2.5 s at 16 fps is 40 frames)."""
    return max(1, math.ceil(round(media_seconds * OUTPUT_FRAMES_PER_SECOND, 6)))
