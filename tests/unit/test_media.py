"""Media inspection on real files: what is accepted, what is refused and how, and what is read."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import media_files as files
from s2v.model import media
from s2v.model.errors import InputError
from s2v.model.media import BytesReader, MediaInfo, inspect_audio, inspect_image, sniff

MB = 1_000_000
IMAGE_CAP = 30 * MB
AUDIO_CAP = 200 * 1024 * 1024  # the default S2V_MAX_AUDIO_BYTES: a 10-minute 48 kHz stereo WAV fits
SECONDS = 4.2  # length of the speech the helpers generate


def check_image(data: bytes, key: str = "inputs/talks/alice.png") -> MediaInfo:
    return inspect_image(BytesReader(data, key), max_bytes=IMAGE_CAP)


def check_audio(data: bytes, key: str = "inputs/talks/alice.wav", *, max_seconds: float = 600) -> MediaInfo:
    return inspect_audio(BytesReader(data, key), max_bytes=AUDIO_CAP, max_seconds=max_seconds)


# --- accepted files ------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "key", "content_type"), [
    ("png", "inputs/talks/alice.png", "image/png"),
    ("jpeg", "inputs/talks/alice.jpg", "image/jpeg"),
    ("webp", "inputs/talks/alice.webp", "image/webp"),
    ("png", "inputs/talks/alice.jpg", "image/png"),  # named .jpg, really a PNG: we go by the bytes
    ("jpeg", "inputs/talks/alice.webp", "image/jpeg"),
])
def test_accepted_images_report_their_real_format_and_size(fmt: str, key: str, content_type: str) -> None:
    data = files.portrait(fmt, 320, 400)
    info = check_image(data, key)
    assert (info.kind, info.format, info.content_type) == ("image", fmt, content_type)
    assert (info.width, info.height, info.size) == (320, 400, len(data))
    assert info.warnings == ()


@pytest.mark.parametrize(("fmt", "mime", "tolerance"), [
    ("wav", "audio/wav", 0.1),
    ("flac", "audio/flac", 0.1),
    ("mp3", "audio/mpeg", 0.15),   # encoder delay and frame padding
    ("m4a", "audio/mp4", 0.15),
    ("aac", "audio/aac", 0.15),    # raw ADTS: length estimated from frames
    ("ogg", "audio/ogg", 0.15),    # Vorbis
    ("opus", "audio/ogg", 0.15),   # Opus in Ogg
])
def test_accepted_audio_formats_measure_their_duration_from_the_bytes(fmt: str, mime: str, tolerance: float) -> None:
    info = check_audio(files.encoded(fmt), f"inputs/talks/alice.{fmt}")
    assert info.kind == "audio"
    assert info.format == ("ogg" if fmt == "opus" else fmt)
    assert info.content_type == mime
    assert info.duration_seconds == pytest.approx(SECONDS, abs=tolerance)
    assert info.warnings == ()


def test_an_mp3_saved_as_wav_is_measured_as_mp3() -> None:
    info = check_audio(files.encoded("mp3"), "inputs/talks/alice.wav")
    assert info.format == "mp3"


def test_a_long_id3_tag_before_mp3_data_is_skipped_with_ranged_reads() -> None:
    data = files.id3_padding(200_000) + files.encoded("mp3")
    reader = BytesReader(data, "inputs/talks/tagged.mp3")
    info = inspect_audio(reader, max_bytes=AUDIO_CAP, max_seconds=600)
    assert info.format == "mp3"
    assert info.duration_seconds == pytest.approx(SECONDS, abs=0.15)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_wav_of_every_sample_width_is_accepted_without_warnings(width: int) -> None:
    info = check_audio(files.wav_as_width(files.speech(), width))
    assert info.duration_seconds == pytest.approx(SECONDS, abs=0.1)
    assert info.warnings == ()


def test_float_wav_is_measured() -> None:
    assert check_audio(files.float_wav()).duration_seconds == pytest.approx(SECONDS, abs=0.1)


def test_stereo_44k_wav_is_measured() -> None:
    mono = array("h", files.speech(2.0, 44100)[44:])
    stereo = array("h", (v for sample in mono for v in (sample, -sample)))
    info = check_audio(files.pcm_wav(stereo, channels=2, rate=44100))
    assert info.duration_seconds == pytest.approx(2.0, abs=0.01)


# --- warnings, not errors ------------------------------------------------------------------


def mostly_silent() -> bytes:
    """0.6 s of speech, then 15 s of nothing."""
    return files.pcm_wav(array("h", files.speech(0.6)[44:]) + array("h", bytes(2 * 16000 * 15)))


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: files.pcm_wav(bytes(2 * 16000 * 3)), "digital silence"),
    (lambda: files.wav_as_width(files.pcm_wav(bytes(2 * 16000 * 3)), 3), "digital silence"),
    (lambda: files.pcm_wav(bytes([128]) * 16000 * 3, width=1), "digital silence"),
    (lambda: files.scaled_wav(files.speech(), 0.003), "nearly silent"),
    (mostly_silent, "mostly silence"),
], ids=["silent-16bit", "silent-24bit", "silent-8bit", "quiet", "mostly-silence"])
def test_silent_or_near_silent_wav_is_accepted_with_a_warning(make: Callable[[], bytes], expected: str) -> None:
    info = check_audio(make(), "inputs/talks/quiet.wav")
    assert len(info.warnings) == 1
    assert expected in info.warnings[0]
    assert "inputs/talks/quiet.wav" in info.warnings[0]


def test_an_animated_webp_is_accepted_with_a_warning_that_the_first_frame_is_used() -> None:
    import io

    from PIL import Image

    frames = [Image.new("RGB", (128, 128), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], duration=100)
    info = check_image(buffer.getvalue(), "inputs/talks/anim.webp")
    assert info.format == "webp"
    assert "animated (3 frames)" in info.warnings[0]


# --- refused files -------------------------------------------------------------------------

HTML_ERROR = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
S3_ERROR = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code></Error>'
JSON_DOC = json.dumps({"prompt": "hello", "seed": 1}).encode()
TEXT = "Hello, this is my speech. Ça va? 你好\n".encode() * 20
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


def truncated(data: bytes, share: float) -> bytes:
    return data[:int(len(data) * share)]


# (id, check, key, data factory, code, fragments the reason must contain)
REFUSED: list[tuple[str, str, str, Callable[[], bytes], str, tuple[str, ...]]] = [
    ("text-as-png", "image", "a/text.png", lambda: TEXT, "not_an_image", ("not an image", "plain text", "PNG, JPEG")),
    ("html-as-png", "image", "a/page.png", lambda: HTML_ERROR, "not_an_image", ("HTML web page",)),
    ("s3-error-as-jpg", "image", "a/err.jpg", lambda: S3_ERROR, "not_an_image", ("XML error response",)),
    ("json-as-png", "image", "a/j.png", lambda: JSON_DOC, "not_an_image", ("JSON text",)),
    ("pdf-as-png", "image", "a/doc.png", lambda: b"%PDF-1.7\n" + bytes(100), "not_an_image", ("PDF",)),
    ("wav-as-png", "image", "a/sound.png", files.speech, "not_an_image", ("it is WAV audio",)),
    ("zero-byte-png", "image", "a/empty.png", lambda: b"", "empty_file", ("0 bytes", "Upload the portrait image")),
    ("truncated-png", "image", "a/cut.png", lambda: truncated(files.portrait("png"), 0.6), "corrupt_image",
     ("PNG", "truncated or damaged")),
    ("truncated-jpeg", "image", "a/cut.jpg", lambda: truncated(files.portrait("jpeg"), 0.6), "corrupt_image",
     ("JPEG", "truncated")),
    ("truncated-webp", "image", "a/cut.webp", lambda: truncated(files.portrait("webp"), 0.6), "corrupt_image",
     ("WebP",)),
    ("tiny-image", "image", "a/tiny.png", lambda: files.image_of_size(32, 48), "image_too_small",
     ("32×48 pixels", "at least 64")),
    ("giant-dimensions", "image", "a/wide.png", lambda: files.image_of_size(5000, 300), "image_too_large",
     ("5000×300 pixels", "4096 pixels per side")),
    ("decompression-bomb", "image", "a/bomb.png", lambda: files.png_declaring(30000, 30000),
     "image_too_large", ("decompression bomb",)),
    ("bomb-in-pillows-warning-range", "image", "a/big.png", lambda: files.png_declaring(10000, 10000),
     "image_too_large", ("decompression bomb",)),
    ("gif", "image", "a/face.gif", lambda: files.portrait("gif"), "unsupported_image_format",
     ("GIF image", "convert it to PNG")),
    ("bmp", "image", "a/face.bmp", lambda: files.portrait("bmp"), "unsupported_image_format", ("BMP image",)),
    ("tiff", "image", "a/face.tiff", lambda: files.portrait("tiff"), "unsupported_image_format", ("TIFF image",)),
    ("heic-as-jpg", "image", "a/IMG_0001.jpg", lambda: HEIC_HEAD, "unsupported_image_format",
     ("HEIC/HEIF image", "Most Compatible")),
    ("html-as-mp3", "audio", "a/speech.mp3", lambda: HTML_ERROR, "not_audio", ("not audio", "HTML web page")),
    ("json-as-wav", "audio", "a/speech.wav", lambda: JSON_DOC, "not_audio", ("JSON text", "WAV, MP3")),
    ("text-as-m4a", "audio", "a/speech.m4a", lambda: TEXT, "not_audio", ("plain text",)),
    ("png-as-wav", "audio", "a/speech.wav", files.portrait, "not_audio", ("it is a PNG image",)),
    ("video-without-sound", "audio", "a/clip.m4a", files.video_without_audio, "not_audio", ("without an audio track",)),
    ("zero-byte-wav", "audio", "a/empty.wav", lambda: b"", "empty_file", ("0 bytes", "Upload the speech audio")),
    ("truncated-wav", "audio", "a/cut.wav", lambda: truncated(files.speech(), 0.5), "corrupt_audio",
     ("cut short", "4.2 s", "about 2.1 s")),
    ("truncated-mp3", "audio", "a/cut.mp3", lambda: truncated(files.encoded("mp3"), 0.5), "corrupt_audio",
     ("cut short",)),
    ("truncated-m4a", "audio", "a/cut.m4a", lambda: truncated(files.encoded("m4a"), 0.5), "corrupt_audio",
     ("cut short",)),
    ("truncated-flac", "audio", "a/cut.flac", lambda: truncated(files.encoded("flac"), 0.05), "corrupt_audio",
     ("FLAC", "cannot be read")),
    ("truncated-ogg", "audio", "a/cut.ogg", lambda: truncated(files.encoded("ogg"), 0.05), "corrupt_audio",
     ("Ogg", "cannot be read")),
    ("riff-header-only", "audio", "a/cut.wav", lambda: files.speech()[:30], "corrupt_audio", ("WAV",)),
    ("601-seconds", "audio", "a/long.wav", lambda: files.speech(601.0, 8000), "audio_too_long",
     ("601.0 s long", "limit is 600 s", "split it")),
    ("too-short", "audio", "a/blip.wav", lambda: files.speech(0.2), "audio_too_short", ("0.20 s", "at least 0.5 s")),
    ("no-samples", "audio", "a/none.wav", lambda: files.pcm_wav(b""), "audio_too_short", ("no measurable audio",)),
    ("adpcm-wav", "audio", "a/old.wav", files.adpcm_wav, "unsupported_audio_format", ("compressed", "PCM WAV")),
    ("aiff", "audio", "a/mac.wav", lambda: b"FORM\x00\x00\x10\x00AIFFCOMM" + bytes(64), "unsupported_audio_format",
     ("AIFF audio", "convert it to WAV or MP3")),
    ("speex-in-ogg", "audio", "a/v.ogg", lambda: b"OggS\x00\x02" + bytes(22) + b"Speex   " + bytes(60),
     "unsupported_audio_format", ("not Vorbis, Opus or FLAC",)),
]


@pytest.mark.parametrize(("check", "key", "make", "code", "fragments"),
                         [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_bad_input_is_refused_with_an_actionable_reason(check: str, key: str, make: Callable[[], bytes], code: str,
                                                        fragments: tuple[str, ...]) -> None:
    data = make()
    with pytest.raises(InputError) as refused:
        if check == "image":
            check_image(data, key)
        else:
            check_audio(data, key)
    assert refused.value.code == code, refused.value.reason
    assert key in refused.value.reason
    for fragment in fragments:
        assert fragment in refused.value.reason


def test_the_too_long_message_shows_two_decimals_when_one_would_read_as_the_limit() -> None:
    with pytest.raises(InputError, match=r"is 4\.20 s long; the limit is 4\.19 s"):
        check_audio(files.speech(), max_seconds=4.19)


# --- bounded reading -----------------------------------------------------------------------


@pytest.mark.parametrize("inspect", ["image", "audio"])
def test_an_oversized_object_is_refused_from_its_size_without_reading_it(inspect: str) -> None:
    reader = files.HugeReader("inputs/talks/huge.bin", 10 * 1024**3)
    with pytest.raises(InputError) as refused:
        if inspect == "image":
            inspect_image(reader, max_bytes=IMAGE_CAP)
        else:
            inspect_audio(reader, max_bytes=AUDIO_CAP, max_seconds=600)
    assert refused.value.code == "file_too_large"
    assert "10,737.4 MB" in refused.value.reason and "inputs/talks/huge.bin" in refused.value.reason
    assert reader.reads == []


def test_a_real_image_over_the_cap_is_refused_before_reading() -> None:
    reader = BytesReader(files.portrait("png"), "inputs/talks/alice.png")
    with pytest.raises(InputError, match="the limit for image files is 1,000 bytes") as refused:
        inspect_image(reader, max_bytes=1000)
    assert refused.value.code == "file_too_large"
    assert reader.bytes_read == 0


def test_a_large_non_image_is_refused_after_reading_only_its_head() -> None:
    reader = files.HugeReader("inputs/talks/alice.png", 20 * MB)
    with pytest.raises(InputError) as refused:
        inspect_image(reader, max_bytes=IMAGE_CAP)
    assert refused.value.code == "not_an_image"
    assert reader.bytes_read <= media.IMAGE_HEAD_BYTES


def test_long_wav_is_measured_and_level_checked_with_a_few_bounded_ranged_reads() -> None:
    data = files.speech(110.0, 44100)  # ~9.7 MB
    reader = BytesReader(data, "inputs/talks/long.wav")
    info = inspect_audio(reader, max_bytes=AUDIO_CAP, max_seconds=600)
    assert info.duration_seconds == pytest.approx(110.0, abs=0.01)
    assert info.warnings == ()
    assert reader.bytes_read <= media.LEVEL_SCAN_BYTES + 4 * media.RANGE_BLOCK
    assert reader.reads <= media.LEVEL_SCAN_SEGMENTS + 4


def test_a_small_clip_is_fetched_in_one_read() -> None:
    reader = BytesReader(files.encoded("m4a"), "inputs/talks/alice.m4a")
    inspect_audio(reader, max_bytes=AUDIO_CAP, max_seconds=600)
    assert (reader.reads, reader.bytes_read) == (1, reader.size)


def test_a_failing_read_propagates_as_itself_not_as_a_corrupt_file() -> None:
    data = files.id3_padding(2 * 1024 * 1024) + files.encoded("mp3")  # large enough to need several reads
    reader = files.FailingReader(data, "inputs/talks/alice.mp3", fail_after=2)
    with pytest.raises(ConnectionResetError):
        inspect_audio(reader, max_bytes=AUDIO_CAP, max_seconds=600)


# --- sniffing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "expected"), [
    (b"\x89PNG\r\n\x1a\n" + bytes(8), ("image", "png")),
    (b"\xff\xd8\xff\xe0", ("image", "jpeg")),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ("image", "webp")),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", ("audio", "wav")),
    (b"GIF89a", ("image", "gif")),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", ("audio", "m4a")),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", ("image", "avif")),
    (b"\xff\xfb\x90\x64", ("audio", "mp3")),
    (b"\xff\xf1\x50\x80", ("audio", "aac")),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64", ("audio", "mp3")),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00fLaC\x00\x00\x00\x22", ("audio", "flac")),
    (b"BMhello world, this is text", None),
    (b"", None),
    (b"hello", None),
])
def test_sniff_recognises_magic_bytes(head: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff(head) == expected


MAGICS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x10\x00\x00\x00WAVE", b"RIFF\x10\x00\x00\x00WEBP",
          b"ID3\x04\x00\x00", b"OggS", b"fLaC", b"\x00\x00\x00\x18ftypM4A ", b"\xff\xfb", b"\xff\xf1", b"BM"]


@given(st.binary(max_size=512))
def test_sniff_never_raises_on_random_bytes(data: bytes) -> None:
    found = sniff(data)
    assert found is None or (found[0] in ("image", "audio") and found[1] in media.NAMES)


@settings(max_examples=150, deadline=None)
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=2048))
def test_random_bytes_behind_a_real_magic_raise_only_input_errors(magic: bytes, tail: bytes) -> None:
    data = magic + tail
    for check in (check_image, check_audio):
        try:
            check(data)
        except InputError as refused:
            assert refused.reason and refused.code


class TenMinuteStereoWav:
    """A 10-minute 48 kHz stereo 16-bit PCM WAV (~115 MB) that exists only as reads: each read
    builds its bytes (a 100 Hz tone), so the test holds no 115 MB buffer and counts what is read."""

    RATE, CHANNELS, WIDTH, SECONDS = 48_000, 2, 2, 600
    PERIOD_FRAMES = 480  # 100 Hz at 48 kHz

    def __init__(self, key: str = "inputs/talks/keynote.wav") -> None:
        import math
        import struct

        frame = self.CHANNELS * self.WIDTH
        self.data_bytes = self.RATE * self.SECONDS * frame
        self.header = (b"RIFF" + struct.pack("<I", 36 + self.data_bytes) + b"WAVE"
                       + b"fmt " + struct.pack("<IHHIIHH", 16, 1, self.CHANNELS, self.RATE, self.RATE * frame, frame,
                                               8 * self.WIDTH)
                       + b"data" + struct.pack("<I", self.data_bytes))
        tone = array("h")
        for n in range(self.PERIOD_FRAMES):
            sample = round(12_000 * math.sin(2 * math.pi * n / self.PERIOD_FRAMES))
            tone.extend((sample, sample))
        self.period = tone.tobytes()
        self.key, self.size = key, len(self.header) + self.data_bytes
        self.bytes_read = self.reads = 0

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        end = self.size if length is None else min(self.size, start + length)
        out = bytearray(self.header[start:end])
        position = max(start, len(self.header))
        while position < end:
            offset = (position - len(self.header)) % len(self.period)
            piece = self.period[offset:offset + end - position]
            out += piece
            position += len(piece)
        self.bytes_read += len(out)
        self.reads += 1
        return bytes(out)


def test_a_ten_minute_48_khz_stereo_wav_is_accepted_from_a_few_ranged_reads() -> None:
    # Given the largest normal input: 10 minutes of CD-like stereo, about 115 MB
    reader = TenMinuteStereoWav()
    assert 115_000_000 < reader.size < AUDIO_CAP
    # When it is inspected with the default limits
    info = inspect_audio(reader, max_bytes=AUDIO_CAP, max_seconds=600)
    # Then its duration is measured exactly, from a few ranged reads (not a download)
    assert info.format == "wav" and info.duration_seconds == pytest.approx(600.0, abs=0.001)
    assert info.warnings == ()
    assert reader.bytes_read <= media.LEVEL_SCAN_BYTES + 4 * media.RANGE_BLOCK  # under 5 % of the file
    assert reader.reads <= media.LEVEL_SCAN_SEGMENTS + 4


def test_a_wav_one_second_over_ten_minutes_is_refused_naming_the_limit() -> None:
    with pytest.raises(InputError) as refused:
        check_audio(files.speech(601.0, 8000), "inputs/talks/long.wav")
    assert refused.value.code == "audio_too_long"
    assert "601.0 s long; the limit is 600 s" in refused.value.reason
