"""Bad input is refused before any money is spent, with a reason a person can act on (issue 6).

Every case drives real files through the real ingest path: ``flow.put`` into moto's S3, one
``flow.ingest`` per upload event, then ``deliver.on_job_change`` to write the error report. Each
asserts the job is FAILED at the expected stage with the expected code; that the reason names the
file, the measured value and what is allowed; that ``outputs/<folder>/<stem>.error.json`` holds the
same reason; that the WaveSpeed emulator received no submission; and that every input is still
there, byte for byte, with its metadata, and nothing new appeared under ``inputs/``.

A second group checks the keys the pipeline must ignore (no job, no report, no retry), the ingest
Lambda handler on S3 test events and non-create events, and awkward but valid keys (spaces, ``+``,
unicode, deep folders, names that collide after Unicode normalization).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import random
import re
import sys
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from helpers import media_files
from helpers.flow import Flow, make_flow
from s2v.flows.stream import on_job_change
from s2v.model.jobs import Job, Status
from s2v_local import samples
from s2v_local.emulator import Emulator, Faults
from s2v_local.stack import LambdaContext

# The ingest handler publishes no metric for events it ignores; Powertools warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "flow-test-key"  # what helpers.flow.Flow sends as WAVESPEED_API_KEY
FOLDER = "talks"
STEM = "alice"
DEEP_FOLDER = "/".join(f"level{n:02d}" for n in range(40))  # 40 folders deep (319 characters)
UNICODE_FOLDER = "Café talks/日本語"
UNICODE_STEM = "Zoë's clip #1"


# --- real media, built once --------------------------------------------------------------------


@cache
def image() -> bytes:
    return media_files.portrait("png", 160, 200)


@cache
def speech() -> bytes:
    return media_files.speech(1.5)


@cache
def tone(fmt: str, seconds: float) -> bytes:
    """A real, properly encoded mono tone of ``seconds`` (small: 8 kHz, low bitrates)."""
    codec = {
        "wav": ["-c:a", "pcm_s16le"], "mp3": ["-c:a", "libmp3lame", "-b:a", "16k"],
        "m4a": ["-c:a", "aac", "-b:a", "16k", "-movflags", "+faststart"],
        "ogg": ["-c:a", "libvorbis", "-q:a", "0"], "flac": ["-c:a", "flac"],
    }[fmt]
    source = f"sine=frequency=220:sample_rate=8000:duration={seconds}"
    return media_files.ffmpeg(None, ["-f", "lavfi", "-i", source, "-ac", "1", *codec], f".{fmt}")


@cache
def noise_png(side: int = 200) -> bytes:
    """A PNG of random pixels: it cannot compress, so it is always more than 3 × side² bytes
    (120,364 bytes for 200 × 200, just over a cap of 119,000)."""
    from PIL import Image

    pixels = random.Random(6).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    return media_files.portrait("jpeg", 160, 200)


def truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


HTML_ERROR_PAGE = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
                   b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n")
S3_XML_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>")
TEXT = b"This is my portrait, I promise.\nSaved from the chat app.\n"


def sidecar(document: Any) -> bytes:
    return json.dumps(document).encode()


# --- the cases -----------------------------------------------------------------------------------


Source = bytes | Callable[[], bytes]


@dataclass(frozen=True)
class Bad:
    """One bad upload: files (name → bytes) put under ``inputs/<folder>/``, and what must happen."""

    id: str
    files: dict[str, Source]
    code: str
    words: tuple[str, ...]  # each must appear in the reason (besides the offending file's key)
    culprit: str  # the file whose full key the reason must name ("" when no single file is at fault)
    stage: str = "validate"
    env: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # file name → S3 object metadata
    folder: str = FOLDER
    stem: str = STEM
    never_read_whole: tuple[str, ...] = ()  # files that must not be downloaded whole
    check: Callable[[str], None] | None = None  # a further assertion on the reason


def upload(image_: Source = image, audio: Source = speech, *, image_name: str = "alice.png",
           audio_name: str = "alice.wav", **extra: Source) -> dict[str, Source]:
    """The files of one upload; ``alice__json=...`` adds ``alice.json``. Built at test time."""
    return {image_name: image_, audio_name: audio, **{name.replace("__", "."): data for name, data in extra.items()}}


def build(files: dict[str, Source]) -> dict[str, bytes]:
    return {name: data if isinstance(data, bytes) else data() for name, data in files.items()}


SIZE_UNITS = {"bytes": 1, "MB": 1_000_000, "KB": 1_000, "KiB": 1024, "MiB": 1024 * 1024}


def size_beats_limit(reason: str) -> None:
    """The file's size, as the reason states it, must read as larger than the limit it states."""
    stated = re.findall(r"([\d,.]+) (bytes|MB|KB|KiB|MiB)\b", reason)
    assert len(stated) >= 2, f"expected the size and the limit in: {reason}"
    (size, size_unit), (limit, limit_unit) = stated[:2]
    size_value = float(size.replace(",", "")) * SIZE_UNITS[size_unit]
    limit_value = float(limit.replace(",", "")) * SIZE_UNITS[limit_unit]
    assert size_value > limit_value, (f"the size ({size} {size_unit}) does not read as over the limit "
                                      f"({limit} {limit_unit}): {reason}")


ALLOWED_IMAGES, ALLOWED_AUDIO = "PNG, JPEG or WebP", "WAV, MP3"
NO_TALKS = {"S2V_MAX_TALK_SECONDS": "0"}

BAD_CASES = [
    # type from the bytes, not the extension
    Bad("text_named_png", upload(TEXT), "not_an_image", ("plain text", ALLOWED_IMAGES), "alice.png"),
    Bad("html_error_page_named_mp3", upload(audio=HTML_ERROR_PAGE, audio_name="alice.mp3"), "not_audio",
        ("HTML web page", "error page", ALLOWED_AUDIO), "alice.mp3"),
    Bad("json_named_wav", upload(audio=b'{"error": "file not found", "status": 404}\n'), "not_audio",
        ("JSON text", ALLOWED_AUDIO), "alice.wav"),
    Bad("s3_xml_error_named_m4a", upload(audio=S3_XML_ERROR, audio_name="alice.m4a"), "not_audio",
        ("XML error response", ALLOWED_AUDIO), "alice.m4a"),
    Bad("wav_audio_named_png", upload(speech), "not_an_image", ("WAV audio", ALLOWED_IMAGES), "alice.png"),
    Bad("png_image_named_wav", upload(audio=image), "not_audio", ("PNG image", ALLOWED_AUDIO), "alice.wav"),
    Bad("video_without_audio_named_m4a", upload(audio=media_files.video_without_audio, audio_name="alice.m4a"),
        "not_audio", ("without an audio track", ALLOWED_AUDIO), "alice.m4a"),
    # empty and damaged files
    Bad("zero_byte_image", upload(b""), "empty_file", ("0 bytes", "portrait image"), "alice.png"),
    Bad("zero_byte_audio", upload(audio=b""), "empty_file", ("0 bytes", "speech audio"), "alice.wav"),
    Bad("truncated_png", upload(lambda: truncated(image())), "corrupt_image", ("PNG", "truncated"), "alice.png"),
    Bad("truncated_jpeg", upload(lambda: truncated(jpeg()), image_name="alice.jpg"), "corrupt_image",
        ("JPEG", "truncated"), "alice.jpg"),
    Bad("truncated_wav", upload(audio=lambda: truncated(speech())), "corrupt_audio", ("cut short", "1.5 s", "0.7 s"),
        "alice.wav"),
    Bad("truncated_m4a", upload(audio=lambda: truncated(tone("m4a", 8.0)), audio_name="alice.m4a"), "corrupt_audio",
        ("truncated",), "alice.m4a"),
    Bad("adpcm_wav_cannot_be_measured", upload(audio=media_files.adpcm_wav), "unsupported_audio_format",
        ("0x0011", "PCM WAV"), "alice.wav"),
    # audio duration, measured from the file
    # (the limit is the provider's 10 minutes per call: one second over it, in each format, with long
    # talks turned off; with them on such audio is cut into segments, see test_longform_flow.py)
    Bad("wav_601_s", upload(audio=lambda: tone("wav", 601)), "audio_too_long", ("601.0 s", "the limit is 600 s"),
        "alice.wav", never_read_whole=("alice.wav",), env=NO_TALKS),  # 9.6 MB, measured through ranged reads
    Bad("mp3_601_s", upload(audio=lambda: tone("mp3", 601), audio_name="alice.mp3"), "audio_too_long",
        ("601.", "the limit is 600 s"), "alice.mp3", env=NO_TALKS),
    Bad("m4a_601_s", upload(audio=lambda: tone("m4a", 601), audio_name="alice.m4a"), "audio_too_long",
        ("601.", "the limit is 600 s"), "alice.m4a", env=NO_TALKS),
    Bad("ogg_601_s", upload(audio=lambda: tone("ogg", 601), audio_name="alice.ogg"), "audio_too_long",
        ("601.", "the limit is 600 s"), "alice.ogg", env=NO_TALKS),
    Bad("flac_601_s", upload(audio=lambda: tone("flac", 601), audio_name="alice.flac"), "audio_too_long",
        ("601.", "the limit is 600 s"), "alice.flac", env=NO_TALKS),
    Bad("talk_over_max_talk_seconds", upload(audio=lambda: tone("wav", 601)), "audio_too_long",
        ("10.0 minutes long", "at most 10 minutes (MaxTalkSeconds)"), "alice.wav",
        env={"S2V_MAX_TALK_SECONDS": "600", "S2V_MAX_AUDIO_SECONDS": "300"}),
    Bad("sidecar_segment_seconds_too_short", upload(alice__json=b'{"segment_seconds": 2}'), "invalid_segment_seconds",
        ("segment_seconds", "from 6 to 600 s"), "alice.json"),
    Bad("sidecar_segment_seconds_not_a_number", upload(alice__json=b'{"segment_seconds": "soon"}'),
        "invalid_segment_seconds", ("segment_seconds", '"soon"'), "alice.json"),
    Bad("audio_0_3_s_too_short", upload(audio=lambda: media_files.speech(0.3)), "audio_too_short",
        ("0.30 s", "at least 0.5 s"), "alice.wav"),
    Bad("audio_over_lowered_max_seconds", upload(), "audio_too_long", ("1.5 s", "the limit is 1 s"), "alice.wav",
        env={"S2V_MAX_AUDIO_SECONDS": "1"}),
    # image formats and dimensions
    Bad("gif_named_png", upload(lambda: samples.image_as(image(), "gif")), "unsupported_image_format",
        ("GIF", ALLOWED_IMAGES), "alice.png"),
    Bad("bmp_named_png", upload(lambda: samples.image_as(image(), "bmp")), "unsupported_image_format",
        ("BMP", ALLOWED_IMAGES), "alice.png"),
    Bad("tiff_named_png", upload(lambda: samples.image_as(image(), "tiff")), "unsupported_image_format",
        ("TIFF", ALLOWED_IMAGES), "alice.png"),
    Bad("tiny_16x16_image", upload(lambda: media_files.image_of_size(16, 16)), "image_too_small",
        ("16×16", "at least 64 pixels"), "alice.png"),
    Bad("declared_6000x4000_image", upload(lambda: media_files.png_declaring(6000, 4000)), "image_too_large",
        ("6000×4000", "4096 pixels per side"), "alice.png"),
    Bad("declared_100000x100000_decompression_bomb", upload(lambda: media_files.png_declaring(100_000, 100_000)),
        "image_too_large", ("100000×100000", "4096 pixels per side"), "alice.png"),
    # two files of one kind for one stem
    Bad("two_images_png_and_jpg", upload(alice__jpg=jpeg), "ambiguous_pair",
        ("2 image files", "alice.jpg", "alice.png", "keep exactly one"), ""),
    Bad("two_images_png_and_upper_case_PNG", upload(alice__PNG=image), "ambiguous_pair",
        ("2 image files", "alice.PNG", "alice.png"), ""),
    Bad("two_audio_files_wav_and_mp3", upload(alice__mp3=lambda: media_files.encoded("mp3", 1.5)), "ambiguous_pair",
        ("2 audio files", "alice.mp3", "alice.wav", "keep exactly one"), ""),
    Bad("two_sidecars_json_and_upper_case_JSON", upload(alice__json=b'{"seed": 1}', alice__JSON=b'{"seed": 2}'),
        "ambiguous_pair", ("alice.JSON", "alice.json"), ""),
    # the params sidecar
    Bad("sidecar_invalid_json", upload(alice__json=b'{"prompt": "a warm greeting",\n "seed": }\n'), "invalid_json",
        ("not valid JSON", "line 2, column 10"), "alice.json"),
    Bad("sidecar_empty", upload(alice__json=b""), "invalid_json", ("is empty",), "alice.json"),
    Bad("sidecar_not_utf8", upload(alice__json=b'{"prompt": "caf\xe9"}'), "invalid_json",
        ("not UTF-8", "offset 15"), "alice.json"),
    Bad("sidecar_duplicate_key", upload(alice__json=b'{"seed": 1, "seed": 2}'), "invalid_json",
        ("'seed' more than once",), "alice.json"),
    Bad("sidecar_not_an_object", upload(alice__json=b'["a warm greeting", "720p"]'), "not_a_json_object",
        ("JSON object", "a list"), "alice.json"),
    Bad("sidecar_unknown_keys", upload(alice__json=b'{"prompt": "hi", "resolutoin": "720p", "fps": 30}'),
        "unknown_params",
        ("'resolutoin' (did you mean 'resolution'?)", "'fps'",
         "prompt, resolution, seed, model, order, segment_seconds and output_name"),
        "alice.json"),
    Bad("sidecar_resolution_1080p", upload(alice__json=b'{"resolution": "1080p"}'), "invalid_resolution",
        ('"480p" or "720p"', '"1080p"'), "alice.json"),
    Bad("sidecar_seed_above_range", upload(alice__json=b'{"seed": 2147483648}'), "invalid_seed",
        ("seed 2147483648 is out of range", "from -1 (random) to 2147483647"), "alice.json"),
    Bad("sidecar_seed_below_range", upload(alice__json=b'{"seed": -2}'), "invalid_seed",
        ("seed -2 is out of range", "from -1 (random) to 2147483647"), "alice.json"),
    Bad("sidecar_seed_as_string", upload(alice__json=b'{"seed": "42"}'), "invalid_seed",
        ("without quotes", '"42"'), "alice.json"),
    Bad("sidecar_seed_fraction", upload(alice__json=b'{"seed": 4.5}'), "invalid_seed", ("whole number", "4.5"),
        "alice.json"),
    Bad("sidecar_prompt_2001_chars", upload(alice__json=lambda: sidecar({"prompt": "x" * 2001})), "prompt_too_long",
        ("2,001 characters", "the limit is 2,000"), "alice.json"),
    Bad("sidecar_over_64_kib", upload(alice__json=lambda: sidecar({"prompt": "y" * 70_000})), "sidecar_too_large",
        ("64 KiB",), "alice.json"),
    # two faults: the params are reported first, as they are what the user edits
    Bad("sidecar_1080p_and_truncated_wav",
        upload(audio=lambda: truncated(speech()), alice__json=b'{"resolution": "1080p"}'),
        "invalid_resolution", ("1080p",), "alice.json"),
    # S3 object metadata instead of a sidecar
    Bad("metadata_resolution_4k", upload(), "invalid_resolution", ("x-amz-meta-resolution", '"4k"', '"720p"'), "",
        metadata={"alice.png": {"resolution": "4k"}}),
    Bad("metadata_seed_not_a_number", upload(), "invalid_seed", ("x-amz-meta-seed", '"abc"', "2147483647"), "",
        metadata={"alice.wav": {"seed": "abc"}}),
    # caps, refused from the size alone
    Bad("image_over_size_cap", upload(noise_png), "file_too_large", ("the limit for image files is 50,000 bytes",),
        "alice.png", env={"S2V_MAX_IMAGE_BYTES": "50000"}, never_read_whole=("alice.png",), check=size_beats_limit),
    Bad("image_just_over_size_cap", upload(noise_png), "file_too_large", ("the limit for image files",),
        "alice.png", env={"S2V_MAX_IMAGE_BYTES": "119000"}, never_read_whole=("alice.png",), check=size_beats_limit),
    Bad("audio_over_size_cap", upload(), "file_too_large", ("the limit for audio files is 20,000 bytes",),
        "alice.wav", env={"S2V_MAX_AUDIO_BYTES": "20000", **NO_TALKS}, never_read_whole=("alice.wav",),
        check=size_beats_limit),
    # with long talks on, a file over one call's cap may be a talk: refused from its size over the talk cap,
    # and once measured when it is a short clip after all
    Bad("talk_over_size_cap", upload(), "file_too_large", ("the limit for audio files is 30,000 bytes",),
        "alice.wav", env={"S2V_MAX_AUDIO_BYTES": "20000", "S2V_MAX_TALK_BYTES": "30000"},
        never_read_whole=("alice.wav",), check=size_beats_limit),
    Bad("short_clip_over_size_cap_with_talks_on", upload(), "file_too_large",
        ("the limit for audio files is 20,000 bytes",), "alice.wav", env={"S2V_MAX_AUDIO_BYTES": "20000"},
        check=size_beats_limit),
    # spend
    Bad("cost_over_daily_budget", upload(), "over_budget", ("1.5 s", "480p", "$0.09", "$0.05", "DailyBudgetUSD"), "",
        env={"S2V_DAILY_BUDGET_USD": "0.05"}),
    Bad("cost_at_720p_over_daily_budget", upload(alice__json=b'{"resolution": "720p"}'), "over_budget",
        ("720p", "$0.18", "$0.15"), "", env={"S2V_DAILY_BUDGET_USD": "0.15"}),
    # awkward but valid places: the report lands where the video would have
    Bad("text_named_png_in_40_deep_folders", upload(TEXT), "not_an_image", ("plain text",), "alice.png",
        folder=DEEP_FOLDER),
    Bad("text_named_png_with_unicode_folder_and_stem",
        upload(TEXT, image_name=f"{UNICODE_STEM}.png", audio_name=f"{UNICODE_STEM}.wav"), "not_an_image",
        ("plain text",), f"{UNICODE_STEM}.png", folder=UNICODE_FOLDER, stem=UNICODE_STEM),
]


# --- the harness ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # A render that fails after fetching the inputs and ends only after an hour: nothing is rendered
    # (no ffmpeg run) and nothing finishes while the module runs. Only submissions are counted.
    with Emulator(api_key=API_KEY, render_seconds=3600, faults=Faults(fail_renders=True)) as running:
        yield running


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_key(folder: str, name: str) -> str:
    return f"inputs/{folder}/{name}" if folder else f"inputs/{name}"


def all_keys(flow: Flow, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for page in flow.s3.get_paginator("list_objects_v2").paginate(Bucket=flow.bucket, Prefix=prefix):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


@dataclass
class Snapshot:
    """What each input object was when the test put it."""

    objects: dict[str, tuple[str, dict[str, str]]]  # key → (sha256, metadata)

    def assert_unchanged(self, flow: Flow) -> None:
        assert all_keys(flow, "inputs/") == set(self.objects), "objects under inputs/ appeared or disappeared"
        for key, (digest, metadata) in self.objects.items():
            got = flow.s3.get_object(Bucket=flow.bucket, Key=key)
            assert sha256(got["Body"].read()) == digest, f"{key} was modified"
            assert got.get("Metadata", {}) == metadata, f"the metadata of {key} was modified"


def put_all(flow: Flow, objects: dict[str, bytes], metadata: dict[str, dict[str, str]] | None = None) -> Snapshot:
    metadata = metadata or {}
    for key, body in objects.items():
        flow.put(key, body, Metadata=metadata.get(key, {}))
    return Snapshot({key: (sha256(body), metadata.get(key, {})) for key, body in objects.items()})


class ReadMeter:
    """Counts the bytes S3 GETs return per key, by wrapping the client the core uses."""

    def __init__(self, flow: Flow) -> None:
        self.bytes: Counter[str] = Counter()
        s3 = flow.deps.objects.s3
        original = s3.get_object

        def counted(**kwargs: Any) -> Any:
            response = original(**kwargs)
            self.bytes[kwargs["Key"]] += int(response.get("ContentLength", 0))
            return response

        s3.get_object = counted


def error_report(flow: Flow, folder: str, stem: str) -> dict[str, Any]:
    key = f"outputs/{folder}/{stem}.error.json"
    body = flow.s3.get_object(Bucket=flow.bucket, Key=key)["Body"].read()
    return json.loads(body)


# --- the suite: bad input fails with an actionable reason, before any money is spent -----------


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_bad_input_fails_before_submission_with_actionable_reason(
        case: Bad, moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    # Given the files of one upload, all in the bucket (the queue delay lets a pair settle)
    flow = make_flow(moto_endpoint, unique, emulator.base_url, **case.env)
    files = {input_key(case.folder, name): data for name, data in build(case.files).items()}
    metadata = {input_key(case.folder, name): meta for name, meta in case.metadata.items()}
    snapshot = put_all(flow, files, metadata)
    meter = ReadMeter(flow)
    submissions = emulator.submission_count

    # When each upload's event is ingested, then the table change is handled by deliver
    results = [flow.ingest(key) for key in files]

    # Then exactly one job exists, FAILED at the expected stage with the expected code
    jobs = flow.jobs()
    assert len(jobs) == 1, f"expected one job, got {[(j.stem, j.status) for j in jobs]}"
    job = jobs[0]
    assert job.status is Status.FAILED, f"{case.id}: job is {job.status} ({results})"
    assert job.failure is not None
    assert (job.failure.stage, job.failure.code) == (case.stage, case.code), job.failure.reason
    assert {r.outcome for r in results} <= {"failed", "duplicate", "waiting"}, results
    assert any(r.outcome == "failed" and r.job_id == job.job_id for r in results), results

    # And the reason names the file and says what was measured and what is allowed
    reason = job.failure.reason
    if case.culprit:
        assert input_key(case.folder, case.culprit) in reason, f"the reason does not name the file: {reason}"
    for words in case.words:
        assert words in reason, f"{words!r} missing from: {reason}"
    if case.check:
        case.check(reason)

    # And deliver writes outputs/<folder>/<stem>.error.json with the same reason, once
    assert on_job_change(job.job_id, flow.deps) == "reported"
    report = error_report(flow, case.folder, case.stem)
    assert (report["job_id"], report["status"], report["stage"], report["code"], report["reason"]) == (
        job.job_id, "FAILED", case.stage, case.code, reason)
    assert report["inputs_untouched"] is True
    assert on_job_change(job.job_id, flow.deps) == "noop"  # a replayed stream record adds nothing

    # And a replayed upload event is a no-op: no new job, no retry loop
    again = flow.ingest(next(iter(files)))
    assert again.outcome in ("duplicate", "failed") and again.job_id == job.job_id, again
    assert len(flow.jobs()) == 1

    # And nothing was submitted or spent, and no input was touched or downloaded whole
    assert emulator.submission_count == submissions, "a bad input reached the provider"
    assert flow.job(job.job_id).provider_id == ""
    snapshot.assert_unchanged(flow)
    assert all_keys(flow) - set(files) == {f"outputs/{case.folder}/{case.stem}.error.json"}
    for name in case.never_read_whole:
        key = input_key(case.folder, name)
        assert meter.bytes[key] < len(files[key]) // 2, f"{key}: {meter.bytes[key]:,} of {len(files[key]):,} bytes read"


def test_the_suite_has_at_least_30_distinct_cases() -> None:
    assert len({c.id for c in BAD_CASES}) == len(BAD_CASES) >= 30
    assert len({c.code for c in BAD_CASES}) >= 15


# --- positive controls: the same path accepts what it should ------------------------------------


def run_to_submission(flow: Flow, emulator: Emulator, files: dict[str, bytes],
                      metadata: dict[str, dict[str, str]] | None = None) -> Job:
    """Ingest every file of one good upload; the pair must be submitted exactly once."""
    snapshot = put_all(flow, files, metadata)
    submissions = emulator.submission_count
    results = [flow.ingest(key) for key in files]
    jobs = flow.jobs()
    assert len(jobs) == 1, [(j.stem, j.status, j.failure) for j in jobs]
    job = jobs[0]
    assert job.status is Status.SUBMITTED, (job.status, job.failure, results)
    assert emulator.submission_count - submissions == 1
    snapshot.assert_unchanged(flow)
    assert not all_keys(flow, "outputs/")
    return job


@pytest.mark.parametrize(("files", "image_key"), [
    pytest.param({"alice.jpg": image, "alice.wav": speech}, "alice.jpg", id="png_named_jpg"),
    pytest.param({"alice.png": jpeg, "alice.wav": speech}, "alice.png", id="jpeg_named_png"),
    pytest.param({"alice.png": image, "alice.wav": lambda: media_files.encoded("mp3", 1.5)}, "alice.png",
                 id="mp3_named_wav"),
])
def test_misnamed_but_valid_files_are_accepted_and_submitted(
        files: dict[str, Callable[[], bytes]], image_key: str, moto_endpoint: str, unique: str,
        emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    job = run_to_submission(flow, emulator, {f"inputs/talks/{name}": build() for name, build in files.items()})
    assert job.image is not None and job.image.key == f"inputs/talks/{image_key}"
    assert job.warnings == ()


@pytest.mark.parametrize(("audio", "warning"), [
    pytest.param(lambda: samples.silent_wav(2.0), "digital silence", id="silent_wav"),
    pytest.param(lambda: media_files.scaled_wav(speech(), 0.003), "nearly silent", id="nearly_silent_wav"),
])
def test_silent_audio_is_submitted_with_a_warning_on_the_job(
        audio: Callable[[], bytes], warning: str, moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    job = run_to_submission(flow, emulator, {"inputs/talks/alice.png": image(), "inputs/talks/alice.wav": audio()})
    assert len(job.warnings) == 1
    assert warning in job.warnings[0] and "inputs/talks/alice.wav" in job.warnings[0]


def test_valid_sidecar_overrides_bad_metadata(moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    job = run_to_submission(flow, emulator, {"inputs/talks/alice.png": image(), "inputs/talks/alice.wav": speech(),
                                             "inputs/talks/alice.json": b'{"resolution": "720p", "seed": 7}'},
                            metadata={"inputs/talks/alice.wav": {"resolution": "4k", "seed": "x"}})
    assert job.params == {"prompt": "", "resolution": "720p", "seed": 7, "model": "wan-2.2-s2v"}


def test_object_metadata_sets_params_without_a_head_request(moto_endpoint: str, unique: str,
                                                             emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    s3 = flow.deps.objects.s3
    heads: list[str] = []
    original = s3.head_object
    s3.head_object = lambda **kw: heads.append(kw["Key"]) or original(**kw)
    checks: list[str] = []  # a bucket without versioning: each input's ETag is checked before it is sent
    check_unchanged = flow.deps.objects.check_unchanged
    flow.deps.objects.check_unchanged = lambda key, etag: checks.append(key) or check_unchanged(key, etag)
    job = run_to_submission(flow, emulator, {"inputs/talks/alice.png": image(), "inputs/talks/alice.wav": speech()},
                            metadata={"inputs/talks/alice.png": {"prompt": "a calm talk"},
                                      "inputs/talks/alice.wav": {"resolution": "720p", "prompt": "overridden"}})
    assert job.params == {"prompt": "a calm talk", "resolution": "720p", "seed": -1, "model": "wan-2.2-s2v"}
    assert heads == checks  # the ranged GETs that inspect the media carry the metadata


# --- keys the pipeline must ignore: no job, no report, no retry ---------------------------------


IGNORED = [
    pytest.param({"uploads/alice.png": "png"}, "uploads/alice.png", "ignored", id="outside_inputs"),
    pytest.param({"alice.png": "png"}, "alice.png", "ignored", id="bucket_root"),
    pytest.param({"outputs/talks/alice.mp4": "mp4"}, "outputs/talks/alice.mp4", "ignored", id="own_output_video"),
    pytest.param({"outputs/talks/alice.error.json": "json"}, "outputs/talks/alice.error.json", "ignored",
                 id="own_error_report"),
    pytest.param({"inputs/dir/": "empty"}, "inputs/dir/", "ignored", id="folder_placeholder"),
    pytest.param({"inputs/": "empty"}, "inputs/", "ignored", id="inputs_placeholder"),
    pytest.param({"inputs/talks/.DS_Store": "text"}, "inputs/talks/.DS_Store", "ignored", id="ds_store"),
    pytest.param({"inputs/talks/._alice.png": "text"}, "inputs/talks/._alice.png", "ignored",
                 id="macos_resource_fork"),
    pytest.param({"inputs/talks/alice.txt": "text"}, "inputs/talks/alice.txt", "ignored", id="unknown_extension"),
    pytest.param({"inputs/talks/alice": "png"}, "inputs/talks/alice", "ignored", id="no_extension"),
    pytest.param({"inputs/talks/.png": "png"}, "inputs/talks/.png", "ignored", id="extension_only"),
    pytest.param({"inputs/talks/alice.png": "png"}, "inputs/talks/alice.png", "waiting", id="image_without_audio"),
    pytest.param({"inputs/talks/alice.wav": "wav"}, "inputs/talks/alice.wav", "waiting", id="audio_without_image"),
    pytest.param({"inputs/talks/alice.json": "json", "inputs/talks/alice.wav": "wav"}, "inputs/talks/alice.json",
                 "waiting", id="sidecar_and_audio_without_image"),
    pytest.param({"inputs/talks/alice.png": "png", "inputs/talks/bob.wav": "wav"}, "inputs/talks/alice.png",
                 "waiting", id="image_and_audio_with_different_stems"),
    pytest.param({"inputs/talks/alice.png": "png", "inputs/other/alice.wav": "wav"}, "inputs/talks/alice.png",
                 "waiting", id="image_and_audio_in_different_folders"),
    pytest.param({"inputs/talks/alice.png": "png", "inputs/talks/alice.png.wav": "wav"}, "inputs/talks/alice.png",
                 "waiting", id="double_extension_is_another_stem"),
]
IGNORED_BODIES: dict[str, Callable[[], bytes]] = {
    "png": image, "wav": speech, "mp4": media_files.video_without_audio, "json": lambda: b'{"seed": 1}',
    "text": lambda: TEXT, "empty": lambda: b"",
}


@pytest.mark.parametrize(("objects", "event_key", "outcome"), IGNORED)
def test_key_is_ignored_without_job_report_or_retry(
        objects: dict[str, str], event_key: str, outcome: str, moto_endpoint: str, unique: str,
        emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    files = {key: IGNORED_BODIES[kind]() for key, kind in objects.items()}
    snapshot = put_all(flow, {k: v for k, v in files.items() if k.startswith("inputs/")})
    for key, body in files.items():
        if not key.startswith("inputs/"):
            flow.put(key, body)
    submissions = emulator.submission_count

    first, second = flow.ingest(event_key), flow.ingest(event_key)

    assert (first.outcome, second.outcome) == (outcome, outcome), (first, second)
    assert first.job_id == "" and flow.jobs() == []
    assert emulator.submission_count == submissions
    snapshot.assert_unchanged(flow)
    assert all_keys(flow) == set(files), "something was written"


def test_event_from_another_bucket_is_ignored(moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    from s2v.flows.uploads import Upload, on_upload

    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    put_all(flow, {"inputs/talks/alice.png": image(), "inputs/talks/alice.wav": speech()})
    result = on_upload(Upload(bucket="someone-elses-bucket", key="inputs/talks/alice.png"), flow.deps)
    assert result.outcome == "ignored" and flow.jobs() == []


# --- the ingest Lambda handler on S3 events that carry no upload, and on awkward keys ----------


@pytest.fixture(scope="module")
def ingest_app() -> Iterator[Any]:
    """functions/ingest/app.py, imported as Lambda would (its own module, settings from env)."""
    env = {"S2V_BUCKET": "not-used-bucket", "S2V_JOBS_TABLE": "not-used-table",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # its own clients can reach nothing
    name = f"s2v_test_ingest_app_{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "ingest" / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


def lambda_context() -> LambdaContext:
    return LambdaContext(function_name="s2v-ingest", invoked_function_arn="arn:aws:lambda:us-east-1:0:function:x",
                         memory_limit_in_mb=512, aws_request_id=str(uuid.uuid4()), log_group_name="/aws/lambda/x",
                         log_stream_name="test", deadline=time.monotonic() + 60)


def sqs_event(*bodies: dict[str, Any]) -> dict[str, Any]:
    return {"Records": [{
        "messageId": str(uuid.uuid4()), "receiptHandle": "handle", "body": json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:s2v-IngestQueue",
        "awsRegion": "us-east-1"} for body in bodies]}


def s3_notification(bucket: str, key: str, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 event as S3 sends it: the key URL-encoded, with '+' for space."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventName": event_name,
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "s2v-inputs",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": 1, "sequencer": "0A"}}}]}


S3_TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2025-11-25T09:00:00.000Z",
                 "Bucket": "media", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8v"}


@pytest.fixture
def handler_flow(ingest_app: Any, moto_endpoint: str, unique: str, emulator: Emulator,
                 monkeypatch: pytest.MonkeyPatch) -> Flow:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    monkeypatch.setattr(ingest_app, "deps", flow.deps)
    return flow


def invoke(ingest_app: Any, event: dict[str, Any]) -> dict[str, Any]:
    return ingest_app.handler(event, lambda_context())


def test_handler_acknowledges_s3_test_event_without_failure(ingest_app: Any, handler_flow: Flow,
                                                             emulator: Emulator) -> None:
    submissions = emulator.submission_count
    assert ingest_app.s3_uploads(_record(S3_TEST_EVENT)) == []
    assert invoke(ingest_app, sqs_event(S3_TEST_EVENT)) == {"batchItemFailures": []}
    assert handler_flow.jobs() == [] and emulator.submission_count == submissions


@pytest.mark.parametrize("event_name", ["ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated",
                                        "ObjectRestore:Completed", "ObjectTagging:Put"])
def test_handler_ignores_non_create_events_without_failure(event_name: str, ingest_app: Any, handler_flow: Flow,
                                                          emulator: Emulator) -> None:
    put_all(handler_flow, {"inputs/talks/alice.png": image(), "inputs/talks/alice.wav": speech()})
    submissions = emulator.submission_count
    events = [s3_notification(handler_flow.bucket, f"inputs/talks/alice.{ext}", event_name) for ext in ("png", "wav")]
    assert invoke(ingest_app, sqs_event(*events)) == {"batchItemFailures": []}
    assert handler_flow.jobs() == [] and emulator.submission_count == submissions


def test_handler_ignores_outputs_placeholders_and_test_events_in_one_batch(
        ingest_app: Any, handler_flow: Flow, emulator: Emulator) -> None:
    bucket = handler_flow.bucket
    handler_flow.put("outputs/talks/alice.mp4", media_files.video_without_audio())
    handler_flow.put("inputs/dir/", b"")
    handler_flow.put("inputs/dir/.DS_Store", TEXT)
    submissions = emulator.submission_count
    event = sqs_event(S3_TEST_EVENT, s3_notification(bucket, "outputs/talks/alice.mp4"),
                      s3_notification(bucket, "inputs/dir/"), s3_notification(bucket, "inputs/dir/.DS_Store"),
                      s3_notification("another-bucket", "inputs/talks/alice.png"))
    assert invoke(ingest_app, event) == {"batchItemFailures": []}
    assert handler_flow.jobs() == [] and emulator.submission_count == submissions
    assert not all_keys(handler_flow, "outputs/") - {"outputs/talks/alice.mp4"}


def test_handler_reports_bad_pair_as_failed_job_not_as_batch_failure(ingest_app: Any, handler_flow: Flow,
                                                                    emulator: Emulator) -> None:
    # A user's mistake is a FAILED job, never a retried message (that would loop until the DLQ).
    put_all(handler_flow, {"inputs/talks/alice.png": TEXT, "inputs/talks/alice.wav": speech()})
    submissions = emulator.submission_count
    event = sqs_event(*(s3_notification(handler_flow.bucket, f"inputs/talks/alice.{e}") for e in ("png", "wav")))
    assert invoke(ingest_app, event) == {"batchItemFailures": []}
    (job,) = handler_flow.jobs()
    assert job.status is Status.FAILED and job.failure is not None and job.failure.code == "not_an_image"
    assert emulator.submission_count == submissions


def _record(body: dict[str, Any]) -> Any:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    return SQSRecord(sqs_event(body)["Records"][0])


@pytest.mark.parametrize(("folder", "stem"), [
    pytest.param("my talks", "alice smith", id="spaces_arrive_as_plus_and_are_decoded"),
    pytest.param("c++ talks", "a+b=c", id="literal_plus_arrives_as_percent_2B_and_is_kept"),
    pytest.param("Café talks/日本語", "Zoë's clip #1 (final) & more %20", id="unicode_and_url_specials"),
    pytest.param(DEEP_FOLDER, "alice", id="forty_folders_deep"),
])
def test_handler_decodes_awkward_keys_and_submits_the_pair_once(
        folder: str, stem: str, ingest_app: Any, handler_flow: Flow, emulator: Emulator) -> None:
    files = {input_key(folder, f"{stem}.png"): image(), input_key(folder, f"{stem}.wav"): speech()}
    snapshot = put_all(handler_flow, files)
    submissions = emulator.submission_count
    events = [s3_notification(handler_flow.bucket, key) for key in files]
    assert invoke(ingest_app, sqs_event(*events, *events)) == {"batchItemFailures": []}  # duplicates too
    (job,) = handler_flow.jobs()
    assert job.status is Status.SUBMITTED, (job.status, job.failure)
    assert (job.folder, job.stem) == (folder, stem)
    assert job.image is not None and job.image.key == input_key(folder, f"{stem}.png")
    assert emulator.submission_count - submissions == 1
    snapshot.assert_unchanged(handler_flow)


def test_space_and_plus_in_names_stay_two_distinct_pairs(ingest_app: Any, handler_flow: Flow,
                                                         emulator: Emulator) -> None:
    # "a b" arrives as "a+b" and "a+b" as "a%2Bb": decoding must not merge or swap them.
    files = {f"inputs/talks/{stem}.{ext}": body for stem in ("a b", "a+b")
             for ext, body in (("png", image()), ("wav", speech()))}
    put_all(handler_flow, files)
    submissions = emulator.submission_count
    assert invoke(ingest_app, sqs_event(*(s3_notification(handler_flow.bucket, k) for k in files))) == {
        "batchItemFailures": []}
    jobs = sorted(handler_flow.jobs(), key=lambda j: j.stem)
    assert [(j.stem, j.status) for j in jobs] == [("a b", Status.SUBMITTED), ("a+b", Status.SUBMITTED)]
    assert [j.image.key for j in jobs if j.image] == ["inputs/talks/a b.png", "inputs/talks/a+b.png"]
    assert emulator.submission_count - submissions == 2


# --- names that collide after Unicode normalization (macOS writes NFD, most others NFC) --------


NFC_STEM = unicodedata.normalize("NFC", "Café")
NFD_STEM = unicodedata.normalize("NFD", "Café")


def test_nfd_image_and_nfc_audio_of_the_same_name_pair_up(moto_endpoint: str, unique: str,
                                                          emulator: Emulator) -> None:
    # A Mac uploads "Café.png" decomposed, a PC uploads "Café.wav" composed: to the user it is
    # one name, and pairing compares names after NFC normalization, so they must make one job.
    assert NFC_STEM != NFD_STEM
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    job = run_to_submission(flow, emulator, {f"inputs/talks/{NFD_STEM}.png": image(),
                                             f"inputs/talks/{NFC_STEM}.wav": speech()})
    assert job.image is not None and job.image.key == f"inputs/talks/{NFD_STEM}.png"


def test_nfc_and_nfd_images_of_the_same_name_are_ambiguous_not_submitted(moto_endpoint: str, unique: str,
                                                                          emulator: Emulator) -> None:
    # Two images whose names look identical: s2v cannot know which one the user meant.
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    files = {f"inputs/talks/{NFC_STEM}.png": image(), f"inputs/talks/{NFD_STEM}.png": jpeg(),
             f"inputs/talks/{NFC_STEM}.wav": speech()}
    snapshot = put_all(flow, files)
    submissions = emulator.submission_count
    for key in files:
        flow.ingest(key)
    assert emulator.submission_count == submissions, "one of two look-alike images was rendered"
    jobs = flow.jobs()
    assert [(j.status, j.failure.code if j.failure else "") for j in jobs] == [(Status.FAILED, "ambiguous_pair")]
    assert "2 image files" in jobs[0].failure.reason  # type: ignore[union-attr]
    assert on_job_change(jobs[0].job_id, flow.deps) == "reported"
    snapshot.assert_unchanged(flow)
