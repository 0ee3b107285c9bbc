"""Long talks in parallel: one 10-minute talk rendered in one call, and again cut into 60 s segments
with 4 in flight, side by side on the same local stack (issue 16's target: at most 0.35x).

Renders dominate a real talk's wall time, so the emulator here renders at a pace proportional to
the audio (``PACE`` seconds per audio second, the same for both runs) instead of its default fixed
time; everything else (split, submissions, polls, deliveries, the stitch) is the real pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

API_KEY = "bench-talks-key"
FOLDER = "bench-talks"
PACE = 1.0  # emulated render seconds per second of audio: a 10-minute call renders in 10 minutes
TALK_SECONDS = 600.0
SEGMENT_SECONDS = 60
IN_FLIGHT = 4


@contextmanager
def paced_stack(pace: float) -> Iterator[Any]:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    class PacedEmulator(Emulator):
        def _render(self, task_id: str, running: Any) -> dict[str, float]:
            started = time.monotonic()
            tracks = super()._render(task_id, running)  # each track's seconds, by role
            left = max(tracks.values(), default=0.0) * pace - (time.monotonic() - started)
            if left > 0:
                time.sleep(left)
            return tracks

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with PacedEmulator(api_key=API_KEY, render_seconds=0, concurrency=IN_FLIGHT) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, api_key=API_KEY, poll_interval_seconds=1,
        queue_delay_seconds=1,
        parameters={"MaxInFlightJobs": str(IN_FLIGHT), "DailyBudgetUSD": "1000", "LogLevel": "WARNING"},
    ) as stack:
        for name in ("werkzeug", "s2v_local"):
            logging.getLogger(name).setLevel(logging.WARNING)
        yield stack


def _talk(stack: Any, stem: str, audio: bytes, params: dict[str, Any] | None) -> tuple[float, dict[str, Any]]:
    """Upload, wait for the delivered video; the seconds from the first upload to DELIVERED."""
    from s2v.adapters.store import deserialize_item
    from s2v_local import samples

    s3 = stack.client("s3")
    started = time.time()
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.png", Body=samples.portrait_png(256, 320))
    if params:
        s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.json", Body=json.dumps(params).encode())
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{stem}.wav", Body=audio)
    ddb = stack.client("dynamodb")
    while time.time() - started < 900:
        items = [deserialize_item(i) for page in ddb.get_paginator("scan").paginate(TableName=stack.table_name)
                 for i in page.get("Items", [])]
        for job in items:
            if job.get("stem") == stem and not job.get("parent_id") and job.get("status") in ("DELIVERED", "FAILED"):
                if job["status"] != "DELIVERED":
                    raise SystemExit(f"bench: {stem} failed: {job.get('failure')}")
                return float(job["delivered_at"]) - started, job
        time.sleep(0.5)
    raise SystemExit(f"bench: {stem} did not finish in 900 s")


def run(*, seconds: float = TALK_SECONDS, pace: float = PACE) -> tuple[float, float]:
    from s2v_local import samples

    audio = samples.speech_wav(seconds, 8000)
    with paced_stack(pace) as stack:
        one_call, _ = _talk(stack, "one-call", audio, None)
        segmented, talk = _talk(stack, "segments", audio, {"segment_seconds": SEGMENT_SECONDS})
    ratio = segmented / one_call
    print(f"\n8. Long talks: a {seconds / 60:g}-minute talk, emulated renders at {pace:g} s per audio second")
    print(f"   one call:                          {one_call:7.1f} s")
    print(f"   {SEGMENT_SECONDS} s segments, {IN_FLIGHT} in flight:      {segmented:7.1f} s")
    print(f"   ratio (segments / one call):       {ratio:7.2f}x   (target: at most 0.35x)")
    steps = [(h["status"], float(h["at"]) - float(talk["created_at"])) for h in talk.get("history", [])]
    print("   the segmented talk's steps (s after its job was created): "
          + ", ".join(f"{status} {at:.1f}" for status, at in steps))
    stitch = talk.get("stitch") or {}
    if "stitch_seconds" in stitch:
        print(f"   stitch: {stitch['stitch_seconds']:.1f} s for {seconds / 60:g} minutes of video")
    return one_call, segmented
