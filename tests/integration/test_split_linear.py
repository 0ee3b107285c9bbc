"""Splitting a talk is linear in its length: the talk is decoded once, and each cut reads only its
own samples (each cut used to decode the upload from its start: quadratic). Counted, not timed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.flow import make_flow
from s2v.adapters import ffmpeg
from s2v.flows import longform
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator

FOLDER = "lectures"
RATE = 8000


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0) as running:
        yield running


def test_a_talk_is_decoded_once_and_each_cut_reads_only_its_own_samples(
        moto_endpoint: str, unique: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a 60 s talk cut into segments of at most 10 s
    flow = make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_IN_FLIGHT_JOBS="2",
                     S2V_DAILY_BUDGET_USD="100")
    flow.put(f"inputs/{FOLDER}/lecture.png", samples.portrait_png(64, 80))
    flow.put(f"inputs/{FOLDER}/lecture.json", json.dumps({"segment_seconds": 10}).encode())
    talk = samples.speech_wav(60.0, RATE)
    flow.put(f"inputs/{FOLDER}/lecture.wav", talk)
    parent = flow.job(flow.ingest(f"inputs/{FOLDER}/lecture.wav").job_id)
    assert parent.status is Status.SPLITTING

    # When it is split, every ffmpeg run's input is recorded with its size
    inputs: list[tuple[str, int]] = []
    run = ffmpeg._run

    def recording(args: Any, **kwargs: Any) -> str:
        for flag, value in itertools.pairwise(args):
            if flag == "-i":
                inputs.append((Path(value).name, Path(value).stat().st_size))
        return run(args, **kwargs)

    monkeypatch.setattr(ffmpeg, "_run", recording)
    assert longform.on_job_change(parent.job_id, flow.deps) == "split"

    # Then the whole talk was read twice (its scan for pauses and its one decoding), whatever the
    # number of segments, and each cut read a piece no longer than its segment
    segments = [j for j in flow.jobs() if j.parent_id == parent.job_id]
    assert len(segments) >= 6
    whole = [name for name, size in inputs if size >= len(talk) // 2]
    assert len(whole) == 2, inputs
    pieces = [size for name, size in inputs if "piece" in name]
    assert len(pieces) == len(segments)
    assert max(pieces) <= 10 * RATE * 2 + 1024  # 10 s of 16-bit mono, and a header
