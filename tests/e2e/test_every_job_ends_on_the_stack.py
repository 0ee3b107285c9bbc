"""Every job ends, on the whole local stack: good pairs and hostile ones (documents, media, deleted
inputs, reserved names, a same-name re-upload) dropped together all end in a terminal state with a
video or an error report within a bounded number of poll runs; every good pair is delivered as a real,
playable video; every record names outputs that are its own job's, the plain name the newest's; and no
job is sent to the provider twice.

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

from helpers import hostile_media as hostile_media_files
from helpers.pipeline import jobs_for
from s2v.adapters.store import JobStore
from s2v.model.jobs import TERMINAL, InputObject, Job, Status
from s2v.model.outputs import rank
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
POLL_SECONDS = 1.0
MAX_POLL_RUNS = 60  # every job must have ended within this many poll runs


@dataclass(frozen=True)
class Expect:
    folder: str
    stem: str
    ends: str  # "DELIVERED", or the failure code the (newest) job for the name ends with
    jobs: int = 1  # how many jobs the case makes for the name


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


def hostile_media(stack: Any) -> list[Expect]:
    """Audio made of thousands of tiny parts: refused by the inspectors' caps, fast, with its code."""
    _put(stack, "inputs/ends/media/ivy.png", samples.portrait_png(96, 96))
    _put(stack, "inputs/ends/media/ivy.flac", hostile_media_files.flac_with_padding_blocks(20_000))
    _put(stack, "inputs/ends/media/jon.png", samples.portrait_png(96, 96))
    _put(stack, "inputs/ends/media/jon.m4a", hostile_media_files.m4a_with_nested_atoms(200))
    return [Expect("ends/media", "ivy", "media_too_complex"), Expect("ends/media", "jon", "media_too_complex")]


def reserved_name(stack: Any) -> list[Expect]:
    """A stem that ends like another stem's report is refused: its outputs would read as that stem's."""
    _pair(stack, "ends/names", "kim.error")
    _pair(stack, "ends/names", "kim")
    return [Expect("ends/names", "kim.error", "reserved_name"), Expect("ends/names", "kim", "DELIVERED")]


def same_name_reupload(stack: Any) -> list[Expect]:
    """A changed audio uploaded once the first job is recorded: two jobs, one name. The newer one
    holds the plain name whichever finishes last; the older one's video is kept (checked for every
    name below)."""
    _pair(stack, "ends/same", "lou")
    deadline = time.monotonic() + 30
    while not jobs_for(stack, "ends/same", "lou") and time.monotonic() < deadline:
        time.sleep(0.1)
    _put(stack, "inputs/ends/same/lou.wav", samples.speech_wav(0.9))
    return [Expect("ends/same", "lou", "DELIVERED", jobs=2)]


CASES: list[Case] = [good_pairs, poisoned_defaults, hostile_sidecars, deleted_input, hostile_media, reserved_name,
                     same_name_reupload]


def _all_ended(stack: Any, e: Expect, timeout: float) -> list[dict[str, Any]]:
    """Every job for the name once all ``e.jobs`` of them have ended (FAILED ones with their report)."""
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = jobs_for(stack, e.folder, e.stem)
        reported = all(Status(j["status"]) in TERMINAL and (j["status"] != "FAILED" or j.get("error_key"))
                       for j in jobs)
        if len(jobs) >= e.jobs and reported:
            return sorted(jobs, key=lambda j: rank(float(j["created_at"]), j["job_id"]))
        time.sleep(0.2)
    raise AssertionError(f"{e.folder}/{e.stem}: not every job ended within {timeout} s: {jobs}")


def _assert_outputs_are_each_jobs_own(stack: Any, jobs: list[dict[str, Any]]) -> None:
    """Every record names objects that exist and hold its own job's output; the plain video is the
    newest delivered job's."""
    s3 = stack.client("s3")
    for job in jobs:
        for field in ("output_key", "report_key", "error_key"):
            if job.get(field):
                head = s3.head_object(Bucket=stack.bucket, Key=job[field])
                assert head["Metadata"]["s2v-job-id"] == job["job_id"], f"{job[field]} is another job's"
    delivered = [j for j in jobs if j["status"] == "DELIVERED"]
    if delivered:
        newest = delivered[-1]
        plain = newest["output_key"]
        assert not plain.rsplit("/", 1)[-1].startswith(f"{newest['stem']}.{newest['job_id'][:12]}"), \
            "the newest delivered job does not hold the plain name"


def test_every_job_ends_with_a_video_or_an_error_report_and_every_good_pair_is_delivered(tmp_path: Path) -> None:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    with Emulator(render_seconds=0.5) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, webhooks=True, poll_interval_seconds=POLL_SECONDS,
        queue_delay_seconds=1, parameters={"MaxInFlightJobs": "4"},
    ) as stack:
        expected = [e for case in CASES for e in case(stack)]
        every = {(e.folder, e.stem): _all_ended(stack, e, timeout=MAX_POLL_RUNS * POLL_SECONDS) for e in expected}
        ended = {name: jobs[-1] for name, jobs in every.items()}
        for jobs in every.values():
            _assert_outputs_are_each_jobs_own(stack, jobs)
        # Nothing billed twice: one provider task per job that was sent, none sent twice.
        sent = [j["provider_id"] for jobs in every.values() for j in jobs if j.get("provider_id")]
        assert len(sent) == len(set(sent)) == emulator.submission_count
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
