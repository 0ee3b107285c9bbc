"""A talk's length and budget are checked on its decoded audio before any segment is submitted:
a header that lies about the length (an MP3 that says 40 s and decodes to 60 s) is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpers import hostile_media as hostile
from helpers.flow import make_flow
from s2v.flows import longform
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator

FOLDER = "lectures"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0) as running:
        yield running


@pytest.mark.parametrize(("limits", "code", "says"), [
    # A 60 s talk whose header says 40 s: within MaxTalkSeconds (45 s) on the header, past it decoded
    ({"S2V_MAX_TALK_SECONDS": "45"}, "audio_too_long", "MaxTalkSeconds"),
    # ... or within the daily budget on the header ($1.20 at $0.03/s), past it decoded ($1.80)
    ({"S2V_DAILY_BUDGET_USD": "1.5"}, "over_budget", "DailyBudgetUSD"),
], ids=["max_talk_seconds", "budget"])
def test_a_talk_whose_header_lies_about_its_length_is_refused_before_any_segment_is_submitted(
        moto_endpoint: str, unique: str, emulator: Emulator, limits: dict[str, str], code: str, says: str) -> None:
    # Given a talk whose MP3 header says 40 s while its audio decodes to 60 s (a lie too small for the
    # size check at ingest: 60 s of 64 kbit/s frames could be 24 s at the highest bitrate)
    flow = make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_IN_FLIGHT_JOBS="2", **limits)
    before = emulator.submission_count
    flow.put(f"inputs/{FOLDER}/lecture.png", samples.portrait_png(64, 80))
    flow.put(f"inputs/{FOLDER}/lecture.json", json.dumps({"segment_seconds": 10}).encode())
    flow.put(f"inputs/{FOLDER}/lecture.mp3", hostile.lying_mp3(60.0, says=40.0))
    job = flow.job(flow.ingest(f"inputs/{FOLDER}/lecture.mp3").job_id)
    assert job.status is Status.SPLITTING and job.audio_seconds == pytest.approx(40, abs=0.5)  # the header believed

    # When the long-form function decodes it to cut it
    assert longform.on_job_change(job.job_id, flow.deps) == "refused"

    # Then the talk failed on its decoded length, saying so, and nothing was made or submitted
    job = flow.job(job.job_id)
    assert job.status is Status.FAILED and job.failure is not None and job.failure.code == code
    assert "decodes to 1.0 minutes" in job.failure.reason and says in job.failure.reason, job.failure.reason
    assert [j for j in flow.jobs() if j.parent_id] == []
    assert emulator.submission_count == before
