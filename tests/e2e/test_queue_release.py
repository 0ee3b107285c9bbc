"""A finished render frees its provider slot, and a queued job takes it at once, not at the next
scheduled poll. Here the schedule is an hour, so only the freed-slot trigger can release anything."""

from __future__ import annotations

from itertools import pairwise

import pytest

from helpers.pipeline import wait_for_job
from s2v_local import samples

pytestmark = pytest.mark.e2e
STEMS = ("first", "second", "third")


def at(job: dict, status: str) -> float:
    return next(float(h["at"]) for h in job["history"] if h["status"] == status)


def test_queued_jobs_take_a_freed_slot_without_waiting_for_the_poller() -> None:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    with Emulator(render_seconds=1.5) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, webhooks=True,
        poll_interval_seconds=3600, queue_delay_seconds=1, parameters={"MaxInFlightJobs": "1"},
    ) as stack:
        s3 = stack.client("s3")
        for stem in STEMS:
            s3.put_object(Bucket=stack.bucket, Key=f"inputs/slots/{stem}.png", Body=samples.portrait_png(96, 96))
            s3.put_object(Bucket=stack.bucket, Key=f"inputs/slots/{stem}.wav", Body=samples.speech_wav(0.6))
        jobs = [wait_for_job(stack, "slots", stem, timeout=60) for stem in STEMS]

    assert [j["status"] for j in jobs] == ["DELIVERED"] * 3, [j.get("failure") for j in jobs]
    assert emulator.submission_count == 3
    assert sum(1 for j in jobs if "QUEUED" in [h["status"] for h in j["history"]]) >= 2
    # One at a time: each job was admitted only after the one before it had left the provider.
    ordered = sorted(jobs, key=lambda j: at(j, "SUBMITTING"))
    for earlier, later in pairwise(ordered):
        assert at(later, "SUBMITTING") >= at(earlier, "COMPLETED")
