"""What s2v relies on about the live WaveSpeed service, in one place, each fact with its source.

When the provider changes, this file changes (and the emulator, which imports it, follows).
Sources: the model's docs page (wavespeed.ai/docs/docs-api/wavespeed-ai/wan-2.2/speech-to-video),
the predictions API pages, and the official Python SDK (``wavespeed`` on PyPI); see PROVIDER.md.
"""

from __future__ import annotations

# Model docs page: 480p and 720p; 480p is the default.
RESOLUTIONS = ("480p", "720p")
# Model docs page: $0.15 per 5 s at 480p and $0.30 per 5 s at 720p (USD per second of video).
PRICE_PER_SECOND = {"480p": 0.03, "720p": 0.06}
# Model docs page: billed duration is the input media rounded up to whole seconds, at least 3 s.
BILLED_MIN_SECONDS = 3
# Model docs page: up to 10 minutes per call, rendered seamlessly within one call.
MAX_SECONDS_PER_CALL = 600.0
# Outputs are served from the provider's CDN, one exact host (results recorded by public client
# projects: https://<this host>/predictions/<task id>/1.mp4); never a wildcard over the shared CDN.
CDN_HOST = "d1q70pf5vjeyhc.cloudfront.net"
OUTPUT_HOSTS = ("*.wavespeed.ai", CDN_HOST)

# Data retention ("What are Predictions"; list docs): predictions and their outputs are kept 7 days;
# the list endpoint sees only the past 7 days.
RETENTION_SECONDS = 7 * 24 * 3600

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
