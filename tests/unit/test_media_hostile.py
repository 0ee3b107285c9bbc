"""Hostile media: whatever the bytes, every inspector answers a MediaInfo or an InputError, and its
work is bounded by caps on the parts it walks (counted, never timed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import hostile_media as hostile
from helpers import media_files as files
from s2v.model import media_caps as caps
from s2v.model.errors import InputError
from s2v.model.media import BytesReader, MediaInfo, inspect_audio, inspect_image

GIB = 1024 * 1024 * 1024
AUDIO_LIMIT = 2 * GIB  # the long-talk audio limit (S2V_MAX_TALK_BYTES)
IMAGE_LIMIT = 30 * 1_000_000
AUDIO_FORMATS = ["wav", "flac", "mp3", "m4a", "aac", "ogg", "opus"]
IMAGE_FORMATS = ["png", "jpeg", "webp"]


def audio(data: bytes, key: str = "inputs/talks/x.audio") -> MediaInfo:
    return inspect_audio(BytesReader(data, key), max_bytes=AUDIO_LIMIT, max_seconds=float("inf"))


def image(data: bytes, key: str = "inputs/talks/x.image") -> MediaInfo:
    return inspect_image(BytesReader(data, key), max_bytes=IMAGE_LIMIT)


def refused_code(inspect: Callable[[bytes], MediaInfo], data: bytes) -> str:
    with pytest.raises(InputError) as refused:
        inspect(data)
    assert refused.value.reason
    return refused.value.code


# --- each cap: a real file just within it is accepted, one part more is refused ------------------

CAPPED_AUDIO = [
    # (make a file with n parts of the capped kind, n at the cap, the inspector)
    pytest.param(hostile.flac_with_padding_blocks, caps.MAX_FLAC_BLOCKS - 3, id="flac-metadata-blocks"),
    pytest.param(hostile.m4a_with_free_atoms, caps.MAX_MP4_TOP_ATOMS - 8, id="m4a-top-level-atoms"),
    pytest.param(hostile.m4a_with_udta_children, caps.MAX_MP4_ATOMS - 60, id="m4a-atoms-in-a-container"),
    pytest.param(hostile.m4a_with_nested_atoms, caps.MAX_MP4_DEPTH, id="m4a-nesting-depth"),
    pytest.param(hostile.mp3_with_id3_frames, caps.MAX_ID3_FRAMES, id="mp3-id3-frames"),
    # (the encoder writes one ID3 tag of its own)
    pytest.param(hostile.mp3_behind_id3_tags, caps.MAX_ID3_TAGS - 1, id="mp3-stacked-id3-tags"),
    pytest.param(hostile.wav_with_chunks, caps.MAX_WAV_CHUNKS - 3, id="wav-chunks"),
    pytest.param(hostile.ogg_with_foreign_pages, caps.MAX_OGG_HEADER_PAGES - 4, id="ogg-header-pages"),
]


@pytest.mark.parametrize(("make", "within"), CAPPED_AUDIO)
def test_audio_within_a_cap_is_measured_and_past_it_refused_as_too_complex(make: Callable[[int], bytes],
                                                                           within: int) -> None:
    # Given a real clip whose structure is inflated to the cap, then past it (and far past it)
    # Then the first is measured like the clip, the others refused with the cap code
    assert audio(make(within)).duration_seconds == pytest.approx(1.0, abs=0.15)
    assert refused_code(audio, make(within + 200)) == caps.CAP_CODE
    assert refused_code(audio, make(within * 50)) == caps.CAP_CODE


CAPPED_IMAGES = [
    pytest.param(hostile.png_with_text_chunks, caps.MAX_PNG_CHUNKS - 10, id="png-chunks"),
    pytest.param(hostile.jpeg_with_comments, caps.MAX_JPEG_SEGMENTS - 20, id="jpeg-segments"),
    pytest.param(hostile.jpeg_with_scans, caps.MAX_JPEG_SCANS, id="jpeg-progressive-scans"),
    pytest.param(hostile.webp_with_chunks, caps.MAX_WEBP_CHUNKS - 5, id="webp-chunks"),
]


@pytest.mark.parametrize(("make", "within"), CAPPED_IMAGES)
def test_images_within_a_cap_are_accepted_and_past_it_refused_as_too_complex(make: Callable[[int], bytes],
                                                                             within: int) -> None:
    assert image(make(within)).width == 320
    assert refused_code(image, make(within + 30)) == caps.CAP_CODE


def test_an_id3_tag_over_the_metadata_cap_is_refused_before_it_is_read() -> None:
    # Given an MP3 behind a 17 MiB ID3 tag (a picture frame), as an object of reads only
    tag_body = caps.MAX_METADATA_BYTES + 1024 * 1024
    head = b"ID3\x03\x00\x00" + hostile.syncsafe(tag_body) + b"APIC" + (tag_body - 10).to_bytes(4, "big") + b"\0\0"
    reader = hostile.RepeatingReader("inputs/talks/x.mp3", head, b"\0", 10 + tag_body + 1024)
    # When it is inspected: refused with the cap code, and the tag itself was never fetched
    with pytest.raises(InputError) as refused:
        inspect_audio(reader, max_bytes=AUDIO_LIMIT, max_seconds=600)
    assert refused.value.code == caps.CAP_CODE
    assert reader.bytes_read < 1024 * 1024


def test_an_ogg_file_without_its_end_page_is_refused_instead_of_read_page_by_page() -> None:
    assert refused_code(audio, hostile.ogg_without_end()) == "corrupt_audio"
    assert refused_code(audio, hostile.ogg_without_end("opus")) == "corrupt_audio"


# --- the bound at the size limit: a 2 GiB object of tiny parts costs a few reads -------------------

def _flac_head() -> tuple[bytes, bytes]:
    blocks, _ = hostile.flac_parts(files.encoded("flac", 1.0))
    head = b"fLaC" + b"".join(bytes([kind]) + len(body).to_bytes(3, "big") + body for kind, body in blocks)
    return head, b"\x01\x00\x00\x00"  # empty PADDING blocks, none marked last


def _ogg_head() -> tuple[bytes, bytes]:
    data = files.encoded("ogg", 1.0)
    first = hostile.ogg_first_page_end(data)
    return data[:first], hostile.ogg_page(int.from_bytes(data[14:18], "little") ^ 1, 0)


GIANT_SHAPES = {
    # format: (head, unit repeated to 2 GiB)
    "flac": _flac_head,
    "m4a": lambda: (files.encoded("m4a", 1.0), hostile.atom(b"free")),
    "m4a-nested": lambda: (files.encoded("m4a", 1.0), b"\x7f\xff\xff\xffudta"),
    "mp3": lambda: (b"ID3\x03\x00\x00" + hostile.syncsafe(caps.MAX_METADATA_BYTES - 1024), hostile.text_frame()),
    "wav": lambda: (files.encoded("wav", 1.0)[:36], b"JUNK\x00\x00\x00\x00"),
    "ogg": _ogg_head,
}


@pytest.mark.parametrize("shape", sorted(GIANT_SHAPES))
def test_a_2_gib_file_of_tiny_parts_is_refused_after_bounded_reads(shape: str) -> None:
    # Given a 2 GiB object made of a real header and then millions of tiny parts
    head, unit = GIANT_SHAPES[shape]()
    reader = hostile.RepeatingReader(f"inputs/talks/x.{shape}", head, unit, AUDIO_LIMIT)
    # When it is inspected: refused at a cap (the work counted in reads, not timed)
    with pytest.raises(InputError) as refused:
        inspect_audio(reader, max_bytes=AUDIO_LIMIT, max_seconds=float("inf"))
    assert refused.value.code == caps.CAP_CODE
    assert reader.bytes_read <= caps.MAX_METADATA_BYTES + 4 * 1024 * 1024
    assert reader.reads <= 2 * caps.MAX_MP4_TOP_ATOMS


# --- mutated real files: only MediaInfo or InputError, never another exception --------------------

MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("repeat"), st.floats(0, 1), st.integers(1, 64), st.integers(2, 300)),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("lie"), st.floats(0, 1), st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                                                                  b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"])),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(max_size=64)),
)


def mutate(data: bytes, mutation: tuple) -> bytes:  # type: ignore[type-arg]
    kind, where, *rest = mutation
    at = int(where * len(data))
    if kind == "truncate":
        return data[:at]
    if kind == "repeat":  # a box, block, frame or page (or a piece of one) many times over
        length, times = rest
        return data[:at] + data[at:at + length] * times + data[at:]
    if kind in ("overwrite", "lie"):  # a field that lies: sizes, counts, lengths
        return data[:at] + rest[0] + data[at + len(rest[0]):]
    return data[:at] + rest[0] + data[at:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(AUDIO_FORMATS), mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_audio_is_measured_or_refused_never_crashes(fmt: str, mutations: list) -> None:  # type: ignore[type-arg]
    data = files.encoded(fmt, 1.0)
    for mutation in mutations:
        data = mutate(data, mutation)
    try:
        info = audio(data, f"inputs/talks/x.{fmt}")
    except InputError as refused:
        assert refused.reason and refused.code
    else:
        assert info.kind == "audio" and info.duration_seconds and info.duration_seconds > 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(IMAGE_FORMATS), mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_images_are_accepted_or_refused_never_crash(fmt: str, mutations: list) -> None:  # type: ignore[type-arg]
    data = files.portrait(fmt, 96, 96)
    for mutation in mutations:
        data = mutate(data, mutation)
    try:
        info = image(data, f"inputs/talks/x.{fmt}")
    except InputError as refused:
        assert refused.reason and refused.code
    else:
        assert info.kind == "image" and info.width and info.height


# --- a header that understates the length ----------------------------------------------------------

@pytest.mark.parametrize("says", [2.0, 10.0, 30.0])
def test_an_mp3_whose_header_says_far_less_than_its_frames_hold_is_refused(says: float) -> None:
    # Given a 120 s MP3 (64 kbit/s) whose Xing/Info frame count claims a fraction of that: less than
    # its bytes could hold even at the highest bitrate its frames may state (160 kbit/s at 8 kHz)
    data = hostile.lying_mp3(120.0, says=says)
    # Then it is refused, naming both lengths, instead of being rendered (and billed) as the short clip
    with pytest.raises(InputError) as refused:
        audio(data, "inputs/talks/x.mp3")
    assert refused.value.code == "audio_length_mismatch"
    assert f"{says:.1f} s" in refused.value.reason


@pytest.mark.parametrize("bitrate", ["32k", "64k", "128k", "320k"])
def test_real_mp3s_at_any_bitrate_are_not_taken_for_liars(bitrate: str) -> None:
    mp3 = files.ffmpeg(files.speech(8.0, 44100), ["-c:a", "libmp3lame", "-b:a", bitrate], ".mp3")
    assert audio(mp3, "inputs/talks/x.mp3").duration_seconds == pytest.approx(8.0, abs=0.2)
    # ... nor with tags behind the audio (ID3v1, an APE tag with a picture)
    ape_body = b"\0" * 200_000
    ape_footer = b"APETAGEX" + (2000).to_bytes(4, "little") + (len(ape_body) + 32).to_bytes(4, "little") + bytes(16)
    tagged = mp3 + ape_body + ape_footer + b"TAG" + bytes(125)
    assert audio(tagged, "inputs/talks/x.mp3").duration_seconds == pytest.approx(8.0, abs=0.2)
