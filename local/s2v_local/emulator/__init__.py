"""A WaveSpeed-compatible server on loopback: the documented API, real MP4s, injectable faults.

It speaks what s2v and the official ``wavespeed`` SDK use: submit (with ``?webhook=`` and
``enable_sync_mode``), result, list, delete, balance, binary and ticket media uploads, and the
webhook secret, in the documented ``{code, message, data}`` envelope. A task goes created →
processing → completed or failed on a small worker pool: the worker downloads the image and audio
URLs, renders the still image over the audio with ffmpeg from the imageio-ffmpeg wheel (H.264 +
AAC, up to the provider's 10 minutes), charges the balance by the provider's billing rule and POSTs
the task to the webhook, signed as WaveSpeed signs it. Videos come at the provider's frame rate with
its frame quantization (``provider_facts.output_frames``), and every frame shows its own number and
the render's tag in its pixels (``s2v_local.stamps``), so tests can tell which rendered frame each
frame of a stitched talk shows.

Like the real service, outputs come from another origin than the API: a second server, reached by
another host name (``output_host``: ``localhost`` when the API is on ``127.0.0.1``), at
``/predictions/<task id>/1.mp4`` as on the provider's CDN, so every local run crosses hosts as a
real one does. Predictions and outputs are kept ``RETENTION_SECONDS`` (7 days) by ``clock``; after
that the result is a 404, the list leaves them out and the output answers 403 as a CDN does. A few
"web" predictions of other models are mixed into the list, as the real list mixes them in.

Every model of the table (``s2v.model.models``) is served at its own path with its own fields,
validation errors, limits and price; a two-speaker model mixes or concatenates the tracks as the
task's ``order`` says, so the video is as long as the provider's rule makes it.

The provider facts come from ``s2v.model.provider_facts``; what the docs leave open is marked
"assumed" where the emulator decides it (a deleted task keeps answering with status "deleted").

One module per concern: ``predictions`` (submit, result, the render worker) over ``render``
(ffmpeg) and ``webhooks``; ``media`` (uploads); ``account`` (list, delete, balance); ``cdn`` (the
output origin); ``faults``; ``server`` puts them together as ``Emulator``.

    with Emulator(render_seconds=0.5) as emulator:
        client = WaveSpeedClient(emulator.base_url, emulator.api_key)
        emulator.faults = Faults(submit_429=1)   # the next submit is refused
"""

from s2v_local.emulator.account import ListQuery, list_query
from s2v_local.emulator.faults import WEBHOOK_MODES, Faults
from s2v_local.emulator.media import media_type
from s2v_local.emulator.predictions import submit_problem
from s2v_local.emulator.render import TaskFailed, audio_seconds, lay_out_tracks, render_video, write_still_frame
from s2v_local.emulator.server import Emulator
from s2v_local.emulator.webhooks import WebhookDelivery

__all__ = ["WEBHOOK_MODES", "Emulator", "Faults", "ListQuery", "TaskFailed", "WebhookDelivery", "audio_seconds",
           "lay_out_tracks", "list_query", "media_type", "render_video", "submit_problem", "write_still_frame"]
