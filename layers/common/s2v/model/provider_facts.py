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
