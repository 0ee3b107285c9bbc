"""With webhooks off (or lost), the poller alone carries a job to delivery."""

from __future__ import annotations

import pytest

from helpers.pipeline import wait_for_job
from s2v_local import samples

pytestmark = pytest.mark.e2e


def test_without_webhooks_the_poller_delivers_the_video() -> None:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    with Emulator(render_seconds=0.3) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, webhooks=False,
        poll_interval_seconds=1, queue_delay_seconds=1,
        env_overrides={"S2V_POLL_MIN_SECONDS": "1", "S2V_POLL_MAX_SECONDS": "2"},
    ) as stack:
        s3 = stack.client("s3")
        s3.put_object(Bucket=stack.bucket, Key="inputs/poll/erin.png", Body=samples.portrait_png(128, 128))
        s3.put_object(Bucket=stack.bucket, Key="inputs/poll/erin.wav", Body=samples.speech_wav(1.0))
        job = wait_for_job(stack, "poll", "erin", timeout=60)
        assert job["status"] == "DELIVERED", job.get("failure")
        assert emulator.submission_count == 1
        assert emulator.webhook_deliveries == []  # no callback was asked for or sent
        assert any("poll: provider status completed" in h["note"] for h in job["history"])
