"""A long talk is cut from, and stitched over, the audio version that was validated: the upload's
key overwritten while the talk waits to be split changes nothing (a versioned bucket, as the
stack's). Driven step by step against moto's server and the emulator; the video checked with ffmpeg."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_longform_flow import FOLDER, SEGMENT_SECONDS, TALK_SECONDS, drive, segments_of, upload_talk

from helpers.flow import make_flow
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator
from s2v_local.probe import probe_media


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0) as running:
        yield running


def test_a_talk_overwritten_before_its_split_is_cut_and_stitched_from_the_validated_version(
        moto_endpoint: str, unique: str, emulator: Emulator, tmp_path: Path) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url, versioned=True, S2V_MAX_IN_FLIGHT_JOBS="2",
                     S2V_DAILY_BUDGET_USD="100")
    # Given a 50 s talk validated and waiting to be split
    upload_talk(flow)
    parent = flow.job(flow.ingest(f"inputs/{FOLDER}/lecture.wav").job_id)
    assert parent.status is Status.SPLITTING and parent.input_versions.get("audio")
    # When its key is overwritten with a 10 s clip before the split downloads it
    flow.put(f"inputs/{FOLDER}/lecture.wav", samples.speech_wav(10.0, 8000))
    final = drive(flow)
    # Then the talk validated is the one cut, rendered and stitched
    assert final.status is Status.DELIVERED, final.failure
    assert len(segments_of(flow, final.job_id)) >= TALK_SECONDS // SEGMENT_SECONDS
    video = tmp_path / "talk.mp4"
    flow.s3.download_file(flow.bucket, f"outputs/{FOLDER}/lecture.mp4", str(video))
    assert probe_media(video).duration_seconds == pytest.approx(TALK_SECONDS, abs=0.1)
