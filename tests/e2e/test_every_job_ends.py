"""Every job ends, on the whole local stack: good pairs and hostile ones dropped together all end in a
terminal state with a video or an error report, within a bounded number of poll runs, and every good
pair is delivered as a real, playable video.

The cases are a list of builders (``CASES``): each uploads its files into the running stack and says
how each of its jobs must end. Add a hostile case by adding a builder.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.pipeline import jobs_for, wait_for_job
from s2v.adapters.store import JobStore
from s2v.model.jobs import TERMINAL, InputObject, Job, Status
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
POLL_SECONDS = 1.0
MAX_POLL_RUNS = 60  # every job must have ended within this many poll runs


@dataclass(frozen=True)
class Expect:
    folder: str
    stem: str
    ends: str  # "DELIVERED", or the failure code the job ends with


Case = Callable[[Any], list[Expect]]  # uploads into the running stack; how each of its jobs must end


def _pair(stack: Any, folder: str, stem: str) -> None:
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{folder}/{stem}.png", Body=samples.portrait_png(96, 96))
    s3.put_object(Bucket=stack.bucket, Key=f"inputs/{folder}/{stem}.wav", Body=samples.speech_wav(0.6))


def _put(stack: Any, key: str, body: bytes) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)


def good_pairs(stack: Any) -> list[Expect]:
    for stem in ("ann", "ben"):
        _pair(stack, "ends/good", stem)
    return [Expect("ends/good", "ann", "DELIVERED"), Expect("ends/good", "ben", "DELIVERED")]


def poisoned_defaults(stack: Any) -> list[Expect]:
    """A folder's _defaults.json nested 5,000 deep fails every job below it, and only those."""
    _put(stack, "inputs/ends/poison/_defaults.json", ("[" * 5000 + "]" * 5000).encode())
    _pair(stack, "ends/poison", "cat")
    _pair(stack, "ends/poison/deeper", "dan")
    _pair(stack, "ends/clean", "eve")
    return [Expect("ends/poison", "cat", "document_too_deep"), Expect("ends/poison/deeper", "dan", "document_too_deep"),
            Expect("ends/clean", "eve", "DELIVERED")]


def hostile_sidecars(stack: Any) -> list[Expect]:
    _put(stack, "inputs/ends/side/fay.json", b'{"prompt": "hi \\ud800"}')
    _pair(stack, "ends/side", "fay")
    _put(stack, "inputs/ends/side/gus.json", b'{"seed": ' + b"9" * 5000 + b"}")
    _pair(stack, "ends/side", "gus")
    _put(stack, "inputs/ends/side/hal.json", json.dumps({f"k{i}": 1 for i in range(5000)}).encode())
    _pair(stack, "ends/side", "hal")
    return [Expect("ends/side", "fay", "not_utf8_text"), Expect("ends/side", "gus", "number_too_long"),
            Expect("ends/side", "hal", "too_many_keys")]


def deleted_input(stack: Any) -> list[Expect]:
    """A job recorded (its ingest died) whose audio was deleted before anyone validated it."""
    s3 = stack.client("s3")
    image_key = "inputs/ends/gone/ida.png"
    s3.put_object(Bucket=stack.bucket, Key=image_key, Body=samples.portrait_png(96, 96))
    head = s3.head_object(Bucket=stack.bucket, Key=image_key)
    now = time.time()
    store = JobStore(stack.client("dynamodb"), stack.table_name)
    store.create(Job(job_id=hashlib.sha256(f"gone{now}".encode()).hexdigest()[:32], status=Status.RECEIVED,
                     version=0, folder="ends/gone", stem="ida",
                     image=InputObject(image_key, head["ETag"].strip('"'), int(head["ContentLength"])),
                     audio=InputObject("inputs/ends/gone/ida.wav", "deleted", 19_244), created_at=now, updated_at=now,
                     next_check_at=now))
    return [Expect("ends/gone", "ida", "inputs_missing")]


CASES: list[Case] = [good_pairs, poisoned_defaults, hostile_sidecars, deleted_input]


def test_every_job_ends_with_a_video_or_an_error_report_and_every_good_pair_is_delivered(tmp_path: Path) -> None:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    with Emulator(render_seconds=0.5) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, webhooks=True, poll_interval_seconds=POLL_SECONDS,
        queue_delay_seconds=1, parameters={"MaxInFlightJobs": "4"},
    ) as stack:
        expected = [e for case in CASES for e in case(stack)]
        ended = {(e.folder, e.stem): wait_for_job(stack, e.folder, e.stem, timeout=MAX_POLL_RUNS * POLL_SECONDS)
                 for e in expected}
        s3 = stack.client("s3")
        outcomes = {}
        for e in expected:
            job = ended[(e.folder, e.stem)]
            if job["status"] == "DELIVERED":
                video = s3.get_object(Bucket=stack.bucket, Key=job["output_key"])["Body"].read()
                outcomes[e.stem] = ("DELIVERED", video)
            else:
                report = json.loads(s3.get_object(Bucket=stack.bucket, Key=job["error_key"])["Body"].read())
                outcomes[e.stem] = (job["failure"]["code"], report)
        # No job of any case is left behind in a non-final state.
        stragglers = [j for e in expected for j in jobs_for(stack, e.folder, e.stem)
                      if Status(j["status"]) not in TERMINAL]

    assert {e.stem: outcomes[e.stem][0] for e in expected} == {e.stem: e.ends for e in expected}
    assert stragglers == []
    for e in expected:
        outcome, evidence = outcomes[e.stem]
        if outcome == "DELIVERED":
            path = tmp_path / f"{e.stem}.mp4"
            path.write_bytes(evidence)
            probe = probe_media(path)
            assert probe.has_video and probe.has_audio and probe.duration_seconds > 0.3, probe.describe()
        else:
            assert evidence["code"] == outcome and evidence["reason"]
