"""Inspect an uploaded portrait or speech clip from its bytes, before any money is spent.

The extension is never trusted: the type comes from the magic bytes. Every refusal is an
``InputError`` whose reason names the file, says what is wrong and what to do about it.

Reading is bounded. Sizes are checked from ``reader.size`` before a byte is read, images are read
whole only below the size cap, and audio is parsed through ranged reads of the parts mutagen
looks at, so a 10 GB object never gets downloaded. Pillow and mutagen are imported lazily: only
the ingest path pays for them.
"""

from __future__ import annotations

import io
import math
import operator
import sys
import warnings
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

from s2v.model import media_caps
from s2v.model.errors import InputError

IMAGE, AUDIO = "image", "audio"
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp"})
AUDIO_FORMATS = frozenset({"wav", "mp3", "m4a", "aac", "ogg", "flac"})

# The provider documents no image limits; these keep a job sensible. A portrait smaller than
# 64 px has too little face to animate, and output is at most 720p, so more than 4096 px per
# side only costs memory (4096 × 4096 decodes to ~50 MB) and upload time.
MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 4096
# Shorter clips make no meaningful video (and are billed as 3 s anyway).
MIN_AUDIO_SECONDS = 0.5
# Loudest 50 ms of a clip quieter than this (dB relative to full scale) counts as near-silent.
SILENCE_DBFS = -40.0
# A clip where fewer than this share of 50 ms windows reach SILENCE_DBFS is "mostly silence".
MOSTLY_SILENT_SHARE = 0.1

SNIFF_BYTES = 4096
IMAGE_HEAD_BYTES = 64 * 1024  # most portraits under this arrive in a single read
RANGE_BLOCK = 64 * 1024  # smallest ranged read while parsing audio: few requests, little waste
WHOLE_READ_BYTES = 1024 * 1024  # audio up to this size is fetched in one read (a typical clip)
LEVEL_SCAN_BYTES = 4 * 1024 * 1024  # WAV samples read to judge loudness
LEVEL_SCAN_SEGMENTS = 8  # spread across longer clips
WAV_HEADER_BYTES = 44  # the smallest RIFF/WAVE header before the samples

NAMES = {
    "png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF",
    "heic": "HEIC/HEIF", "avif": "AVIF", "wav": "WAV", "mp3": "MP3", "m4a": "M4A (MP4 audio)",
    "aac": "AAC", "ogg": "Ogg", "flac": "FLAC", "aiff": "AIFF", "webm": "WebM/Matroska", "amr": "AMR",
}
CONTENT_TYPES = {
    "png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "wav": "audio/wav",
    "mp3": "audio/mpeg", "m4a": "audio/mp4", "aac": "audio/aac", "ogg": "audio/ogg", "flac": "audio/flac",
}
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
IMAGE_ADVICE = "Upload the portrait as a PNG, JPEG or WebP file"
AUDIO_ADVICE = "Upload the speech as WAV, MP3, M4A/AAC, Ogg (Vorbis or Opus) or FLAC"
CONVERT_HINTS = {
    "heic": " On an iPhone, Settings › Camera › Formats › Most Compatible saves photos as JPEG.",
    "gif": " For an animated GIF, save a single still frame.",
}
# WAV format tags whose duration mutagen computes correctly: PCM, IEEE float, A-law, µ-law, extensible.
MEASURABLE_WAV_FORMATS = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})
BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
EXIF_ORIENTATION = 0x0112


class ObjectReader(Protocol):
    key: str
    size: int

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        """Bytes [start, start + length) of the object; fewer at its end. An S3 Range GET in production."""
        ...


@dataclass(frozen=True)
class MediaInfo:
    kind: str  # "image" | "audio"
    format: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    warnings: tuple[str, ...] = ()


class BytesReader:
    """An ObjectReader over bytes in memory, counting what was read (like the S3 reader)."""

    def __init__(self, data: bytes, key: str = "memory") -> None:
        self._data = data
        self.key = key
        self.size = len(data)
        self.bytes_read = 0
        self.reads = 0

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        end = self.size if length is None else min(self.size, start + length)
        chunk = self._data[start:end]
        self.bytes_read += len(chunk)
        self.reads += 1
        return chunk


# --- sniffing -------------------------------------------------------------------------------


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, format) from the magic bytes at the start of a file, or None when unrecognised.

    Also names formats s2v refuses (gif, bmp, tiff, heic, avif, aiff, webm, amr) so the error
    can say what the file is. Never raises, whatever the bytes.
    """
    return _sniff_at(lambda start, length: head[start:start + length])


def _sniff_at(read_at: Callable[[int, int], bytes]) -> tuple[str, str] | None:
    head, offset, tags = read_at(0, SNIFF_BYTES), 0, 0
    while head.startswith(b"ID3") and (tag := _id3_length(head)) and tags <= media_caps.MAX_ID3_TAGS:
        tags += 1  # past the cap the structure check refuses the file; sniffing stops early
        offset += tag  # ID3v2 tags precede MP3 (and sometimes AAC or FLAC) data
        head = read_at(offset, SNIFF_BYTES)
    found = _sniff_head(head)
    if offset and (found is None or found[0] != AUDIO):
        return AUDIO, "mp3"  # an ID3 tag says "audio"; mutagen judges what follows
    return found


def _sniff_head(head: bytes) -> tuple[str, str] | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE, "png"
    if head.startswith(b"\xff\xd8\xff"):
        return IMAGE, "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return IMAGE, "gif"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return IMAGE, "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return IMAGE, "webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return AUDIO, "wav"
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    if head.startswith(b"fLaC"):
        return AUDIO, "flac"
    if head.startswith(b"OggS"):
        return AUDIO, "ogg"
    if head.startswith(b"ADIF"):
        return AUDIO, "aac"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return AUDIO, "aiff"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return AUDIO, "webm"
    if head.startswith(b"#!AMR"):
        return AUDIO, "amr"
    if _is_bmp(head):
        return IMAGE, "bmp"
    return _mpeg_audio(head)


def _iso_media(head: bytes) -> tuple[str, str]:
    brand, compatible = head[8:12], head[16:64]
    if brand in (b"avif", b"avis") or (brand == b"mif1" and b"avif" in compatible):
        return IMAGE, "avif"
    if brand in HEIF_BRANDS:
        return IMAGE, "heic"
    return AUDIO, "m4a"  # M4A, MP4, MOV: mutagen finds the audio track


def _is_bmp(head: bytes) -> bool:
    # "BM" alone is too weak (text can start with it): require zero reserved bytes and a known DIB header.
    return (head.startswith(b"BM") and len(head) >= 18 and head[6:10] == b"\0\0\0\0"
            and int.from_bytes(head[14:18], "little") in BMP_HEADER_SIZES)


def _mpeg_audio(head: bytes) -> tuple[str, str] | None:
    """An MPEG audio (MP3) or ADTS (AAC) frame header at the very start."""
    if len(head) < 4 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0 and (b2 >> 2) & 0x0F < 13:  # 12-bit sync, layer 0, valid sample rate index
        return AUDIO, "aac"
    version, layer, bitrate, rate = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if b1 & 0xE0 == 0xE0 and version != 1 and layer != 0 and bitrate != 15 and rate != 3:
        return AUDIO, "mp3"
    return None


def _id3_length(head: bytes) -> int:
    """Total length of the ID3v2 tag at the start of ``head`` (0 if the header is malformed)."""
    if len(head) < 10 or any(b & 0x80 for b in head[6:10]):
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def _looks_like(head: bytes) -> str:
    """What a file that is neither image nor audio appears to be, in words."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text:
        return "nothing but blank space" if head else "nothing at all (no data)"
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:1024]:
        return "an HTML web page (often an error page saved in place of the real file)"
    if b"<error>" in text[:1024]:
        return "an XML error response (for example from S3 or a CDN) saved in place of the real file"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "an XML or SVG document"
    if text.startswith((b"{", b"[")):
        return "JSON text"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (or an Office document)"
    if _is_text(head):
        return "plain text"
    return "binary data in no format s2v recognises"


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sniffed bytes
            return False
        decoded = head[:exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in decoded)
    return printable >= 0.95 * max(1, len(decoded))


def _accepted_format(found: tuple[str, str] | None, key: str, kind: str, head: bytes) -> str:
    """The format of an acceptable file of ``kind``, or an InputError saying what it is instead."""
    wanted, allowed, advice = ("an image", IMAGE_FORMATS, IMAGE_ADVICE) if kind == IMAGE else (
        "audio", AUDIO_FORMATS, AUDIO_ADVICE)
    wrong_kind = "not_an_image" if kind == IMAGE else "not_audio"
    if found is None:
        raise InputError(f"{key} is not {wanted}: it looks like {_looks_like(head)}. {advice}.", code=wrong_kind)
    found_kind, fmt = found
    described = f"a {NAMES[fmt]} image" if found_kind == IMAGE else f"{NAMES[fmt]} audio"
    if found_kind != kind:
        raise InputError(f"{key} is not {wanted}: it is {described}. {advice}.", code=wrong_kind)
    if fmt not in allowed:
        target = "PNG, JPEG or WebP" if kind == IMAGE else "WAV or MP3"
        raise InputError(f"{key} is {described}, which s2v does not accept: convert it to {target} and upload it "
                         f"again.{CONVERT_HINTS.get(fmt, '')}", code=f"unsupported_{kind}_format")
    return fmt


# --- shared checks -------------------------------------------------------------------------


def _check_size(reader: ObjectReader, max_bytes: int, kind: str) -> None:
    """Before reading anything: empty and oversized files are refused from the size alone."""
    if reader.size <= 0:
        raise InputError(f"{reader.key} is empty (0 bytes): the upload carried no data. Upload the "
                         f"{'portrait image' if kind == IMAGE else 'speech audio'} again.", code="empty_file")
    if reader.size > max_bytes:
        hint = ("scale it down or save it as JPEG" if kind == IMAGE
                else "export it as MP3, or at a lower sample rate, or as a shorter clip")
        size, limit = _megabytes(reader.size), _megabytes(max_bytes)
        if size == limit:  # rounding would print "0.1 MB; the limit is 0.1 MB"
            size, limit = f"{reader.size:,} bytes", f"{max_bytes:,} bytes"
        raise InputError(f"{reader.key} is {size}; the limit for {kind} files is {limit}: {hint}, then upload it "
                         "again.", code="file_too_large")


def check_audio_size(reader: ObjectReader, max_bytes: int) -> None:
    """The audio size limit alone: for audio measured under a larger (long talk) limit that turned
    out to be one call's clip after all."""
    _check_size(reader, max_bytes, AUDIO)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"


# --- images --------------------------------------------------------------------------------


def inspect_image(reader: ObjectReader, *, max_bytes: int) -> MediaInfo:
    """Check a portrait: real PNG/JPEG/WebP, decodes completely, sane dimensions. Raises InputError."""
    _check_size(reader, max_bytes, IMAGE)
    head = reader.read(0, min(reader.size, IMAGE_HEAD_BYTES))
    fmt = _accepted_format(sniff(head), reader.key, IMAGE, head)
    data = head if len(head) >= reader.size else head + reader.read(len(head), reader.size - len(head))
    media_caps.check_image(fmt, data, reader.key)
    width, height, notes = _decode_image(data, reader.key, fmt)
    return MediaInfo(kind=IMAGE, format=fmt, content_type=CONTENT_TYPES[fmt], size=reader.size,
                     width=width, height=height, warnings=notes)


def _decode_image(data: bytes, key: str, fmt: str) -> tuple[int, int, tuple[str, ...]]:
    from PIL import Image

    formats = (PILLOW_FORMATS[fmt],)  # only the decoder for the sniffed format ever sees the bytes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as header:
                width, height = header.size
                frames = getattr(header, "n_frames", 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        declared = _declared_size(data, PILLOW_FORMATS[fmt])
        if declared:
            raise InputError(f"{key} is {declared[0]}×{declared[1]} pixels (a possible decompression bomb); the "
                             f"limit is {MAX_IMAGE_SIDE} pixels per side: scale it down (1024 pixels on the longer "
                             "side is plenty) and upload it again.", code="image_too_large") from exc
        raise InputError(f"{key} declares a picture of hundreds of millions of pixels (a possible decompression "
                         f"bomb), far over the limit of {MAX_IMAGE_SIDE} pixels per side: scale it down, for "
                         "example to 1024 pixels on the longer side, and upload it again.",
                         code="image_too_large") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error...) on bad data
        raise _corrupt_image(key, fmt, exc) from exc
    _check_dimensions(key, width, height)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            image.verify()  # structure and checksums (PNG CRCs) without decoding
        with Image.open(io.BytesIO(data), formats=formats) as image:
            image.load()  # full decode: catches truncated JPEG/WebP data that verify() lets through
            orientation = _exif_orientation(image)
    except Exception as exc:  # as above: any decoder failure means the file is damaged
        raise _corrupt_image(key, fmt, exc) from exc
    notes = []
    if frames > 1:
        notes.append(f"{key} is animated ({frames} frames); only the first frame is used as the portrait.")
    if orientation not in (1, None):
        notes.append(f"{key} relies on an EXIF rotation tag ({orientation}); if the face appears sideways in the "
                     "video, save the photo upright and upload it again.")
    return width, height, tuple(notes)


def _declared_size(data: bytes, pillow_format: str) -> tuple[int, int] | None:
    """The size a header declares, read through the format's plugin class, which (unlike
    ``Image.open``) skips the bomb check: safe, since nothing is decoded."""
    from PIL import Image

    try:
        factory: Any = Image.OPEN[pillow_format][0]
        width, height = factory(io.BytesIO(data)).size
        return int(width), int(height)
    except Exception:  # any header Pillow cannot read: keep the generic message
        return None


def _check_dimensions(key: str, width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(f"{key} is {width}×{height} pixels; a portrait must be at least {MIN_IMAGE_SIDE} pixels on "
                         "each side: use a larger, sharper picture of the face.", code="image_too_small")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise InputError(f"{key} is {width}×{height} pixels; the limit is {MAX_IMAGE_SIDE} pixels per side: scale it "
                         "down (1024 pixels on the longer side is plenty) and upload it again.",
                         code="image_too_large")


def _exif_orientation(image: Any) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block does not make the picture unusable
        return None


def _corrupt_image(key: str, fmt: str, exc: Exception) -> InputError:
    return InputError(f"{key} starts like a {NAMES[fmt]} image but cannot be decoded ({exc}); it is probably "
                      "truncated or damaged: export or save it again and upload the new file.", code="corrupt_image")


# --- audio ---------------------------------------------------------------------------------


class _RangedFile(io.RawIOBase):
    """A read-only, seekable file over an ObjectReader, so mutagen can parse an object in place.

    Each read that misses the few cached blocks costs one ranged read of at least RANGE_BLOCK
    bytes; nothing past ``limit`` is ever requested.
    """

    CACHED_BLOCKS = 4

    def __init__(self, reader: ObjectReader, limit: int) -> None:
        super().__init__()
        self._reader = reader
        self._size = min(reader.size, limit)
        self._pos = 0
        self._blocks: dict[int, bytes] = {}
        self.failure: Exception | None = None  # a failed read is the store's problem, not a corrupt file

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET and offset < 0:
            raise ValueError(f"negative seek position {offset}")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)  # like BytesIO, which mutagen is written against
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        data = self.read_at(self._pos, end - self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read_at(self, start: int, length: int) -> bytes:
        length = min(length, self._size - start)
        if length <= 0:
            return b""
        for block_start, block in self._blocks.items():
            if block_start <= start and start + length <= block_start + len(block):
                return block[start - block_start:start - block_start + length]
        fetch = self._size - start if self._size <= WHOLE_READ_BYTES else max(length, RANGE_BLOCK)
        try:
            block = self._reader.read(start, min(fetch, self._size - start))
        except Exception as exc:
            self.failure = exc
            raise
        if len(self._blocks) >= self.CACHED_BLOCKS:
            del self._blocks[next(iter(self._blocks))]
        self._blocks[start] = block
        return block[:length]


def inspect_audio(reader: ObjectReader, *, max_bytes: int, max_seconds: float) -> MediaInfo:
    """Check a speech clip: a supported format, readable, not truncated, duration within limits.
    Silent or mostly silent WAV audio is a warning, not an error. Raises InputError."""
    _check_size(reader, max_bytes, AUDIO)
    file = _RangedFile(reader, limit=max_bytes)
    fmt = _accepted_format(_sniff_at(file.read_at), reader.key, AUDIO, file.read_at(0, SNIFF_BYTES))
    layout = media_caps.check_audio(fmt, file.read_at, file.size, reader.key)
    info = _stream_info(file, fmt, reader.key)
    seconds = float(info.length)
    _check_complete(fmt, info, reader, layout)
    _check_duration(reader.key, seconds, max_seconds)
    notes = _wav_level_warnings(file, reader.key) if fmt == "wav" else ()
    return MediaInfo(kind=AUDIO, format=fmt, content_type=CONTENT_TYPES[fmt], size=reader.size,
                     duration_seconds=round(seconds, 3), warnings=notes)


def _stream_info(file: _RangedFile, fmt: str, key: str) -> Any:
    """mutagen's stream info (``length`` in seconds, ``bitrate``...) for the sniffed format."""
    parser = _mutagen_parser(file, fmt, key)
    try:
        file.seek(0)
        info = parser(file).info
    except Exception as exc:  # mutagen raises assorted errors on damaged data
        if file.failure is not None:
            raise file.failure from None
        raise InputError(f"{key} starts like {NAMES[fmt]} audio but cannot be read ({exc}); it is probably truncated "
                         "or damaged: export it again and upload the new file.", code="corrupt_audio") from exc
    if fmt == "m4a" and not getattr(info, "channels", 0):
        raise InputError(f"{key} is an MP4 file without an audio track (a silent video?). {AUDIO_ADVICE}.",
                         code="not_audio")
    if fmt == "wav" and getattr(info, "audio_format", 1) not in MEASURABLE_WAV_FORMATS:
        raise InputError(f"{key} is a WAV file with compressed audio (format tag 0x{info.audio_format:04x}) that s2v "
                         "cannot measure: export it as a plain PCM WAV or as MP3.", code="unsupported_audio_format")
    return info


def _mutagen_parser(file: _RangedFile, fmt: str, key: str) -> Callable[[Any], Any]:
    if fmt == "wav":
        from mutagen.wave import WAVE
        return WAVE
    if fmt == "mp3":
        from mutagen.mp3 import MP3
        return MP3
    if fmt == "m4a":
        from mutagen.mp4 import MP4
        return MP4
    if fmt == "aac":
        from mutagen.aac import AAC
        return AAC
    if fmt == "flac":
        from mutagen.flac import FLAC
        return FLAC
    codec = file.read_at(28, 8)  # the first packet of the first Ogg page names the codec
    if codec.startswith(b"\x01vorbis"):
        from mutagen.oggvorbis import OggVorbis
        return OggVorbis
    if codec.startswith(b"OpusHead"):
        from mutagen.oggopus import OggOpus
        return OggOpus
    if codec.startswith(b"\x7fFLAC"):
        from mutagen.oggflac import OggFLAC
        return OggFLAC
    raise InputError(f"{key} is an Ogg file whose codec is not Vorbis, Opus or FLAC: convert it to WAV or MP3 and "
                     "upload it again.", code="unsupported_audio_format")


def _check_complete(fmt: str, info: Any, reader: ObjectReader, layout: media_caps.AudioLayout) -> None:
    """Formats whose header states the length can be cut short without mutagen noticing."""
    if fmt in ("wav", "mp3") and info.bitrate and info.length > 0:
        # WAV: the data chunk's size; MP3: the Xing/VBRI byte count, or frames at a constant bitrate.
        declared = info.length * info.bitrate / 8
        header = WAV_HEADER_BYTES if fmt == "wav" else 0
        tolerance = 1.0 if fmt == "wav" else 0.9  # MP3 headers round; a cut of 10% or more is unmistakable
        if reader.size < header + declared * tolerance:
            present = max(0, reader.size - header) * 8 / info.bitrate
            raise _truncated(reader.key, info.length, present)
    if fmt == "mp3" and info.length > 0:
        _check_mp3_not_understated(info, reader, layout)
    if fmt == "m4a" and layout.mp4_end is not None and layout.mp4_end > reader.size:
        # The atoms were walked before mutagen read them (media_caps): the last one ends past the file.
        raise _truncated(reader.key, info.length, info.length * reader.size / layout.mp4_end)


# The highest bitrate (kbit/s) an MPEG audio frame header can state, by (version, layer).
MP3_MAX_KBPS = {(1, 1): 448, (1, 2): 384, (1, 3): 320, (2, 1): 256, (2, 2): 160, (2, 3): 160,
                (2.5, 1): 256, (2.5, 2): 160, (2.5, 3): 160}
MP3_SLACK_BYTES = 64 * 1024  # frame padding, a stray junk block between the tags and the audio


def _check_mp3_not_understated(info: Any, reader: ObjectReader, layout: media_caps.AudioLayout) -> None:
    """An MP3's length comes from its header (the Xing/VBRI frame count): one that lies low would
    be validated as short and rendered and billed long. Even at the highest bitrate its frames can
    state, the audio bytes present last at least this long: refuse a header claiming much less."""
    max_kbps = MP3_MAX_KBPS.get((info.version, info.layer))
    if not max_kbps:
        return
    tail = reader.read(max(0, reader.size - 160), min(reader.size, 160))
    end = reader.size - (128 if tail[-128:-125] == b"TAG" else 0)
    footer = tail[len(tail) - (reader.size - end) - 32:len(tail) - (reader.size - end)]
    if footer[:8] == b"APETAGEX" and len(footer) == 32:  # an APE tag (with its header when flagged)
        end -= int.from_bytes(footer[12:16], "little") + (32 if footer[23] & 0x80 else 0)
    audio_bytes = end - layout.start - MP3_SLACK_BYTES
    at_least = audio_bytes * 8 / (max_kbps * 1000)
    if at_least > info.length * 1.05:
        raise InputError(f"{reader.key} says it holds {info.length:.1f} s of audio, but its size means at least "
                         f"{at_least:.1f} s: its header is wrong (or the file was joined from several). Export it "
                         "again as a new MP3 (or as WAV) and upload the new file.", code="audio_length_mismatch")


def _truncated(key: str, declared: float, present: float) -> InputError:
    return InputError(f"{key} is cut short: its header promises {declared:.1f} s of audio but the file holds only "
                      f"about {present:.1f} s. It was probably truncated while copying or exporting: export it "
                      "again and upload the complete file.", code="corrupt_audio")


def _check_duration(key: str, seconds: float, max_seconds: float) -> None:
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{key} contains no measurable audio (0 s): it is empty, truncated or damaged. Record or "
                         "export the speech again and upload it.", code="audio_too_short")
    if seconds < MIN_AUDIO_SECONDS:
        raise InputError(f"{key} is only {seconds:.2f} s long; speech must last at least {MIN_AUDIO_SECONDS:g} s to "
                         "make a video: upload a longer clip.", code="audio_too_short")
    if seconds > max_seconds:
        shown = f"{seconds:.1f}" if f"{seconds:.1f}" != f"{max_seconds:.1f}" else f"{seconds:.2f}"
        raise InputError(f"{key}: the audio is {shown} s long; the limit is {max_seconds:g} s. Trim it, or split it "
                         f"into clips of at most {max_seconds:g} s (each with its own copy of the portrait).",
                         code="audio_too_long")


def _wav_level_warnings(file: _RangedFile, key: str) -> tuple[str, ...]:
    """Warn about silent or mostly silent PCM WAV audio, judged from up to LEVEL_SCAN_BYTES of samples."""
    levels = _wav_window_levels(file)
    if not levels:
        return ()
    loudest = max(levels)
    if loudest == -math.inf:
        return (f"{key} is digital silence (every sample is zero); the video will show no speech. Check that "
                "the right file was uploaded and the microphone was not muted.",)
    if loudest < SILENCE_DBFS:
        return (f"{key} is nearly silent (its loudest moment is {loudest:.0f} dBFS); the lips may barely move. "
                "Check the recording level, or normalise the audio, and upload it again.",)
    active = sum(level >= SILENCE_DBFS for level in levels) / len(levels)
    if active < MOSTLY_SILENT_SHARE:
        return (f"{key} is mostly silence (sound in only {active:.0%} of it); trim the silent parts to save money "
                "and render time.",)
    return ()


def _wav_window_levels(file: _RangedFile) -> list[float]:
    """Loudness in dBFS of each 50 ms window of the sampled audio; [] when the WAV is not plain PCM."""
    import wave

    file.seek(0)
    try:
        with wave.open(cast("IO[bytes]", file)) as wav:  # the stdlib reads PCM WAV from any file object
            width, channels, rate, frames = wav.getsampwidth(), wav.getnchannels(), wav.getframerate(), wav.getnframes()
            frame_bytes = width * channels
            segments = 1 if frames * frame_bytes <= LEVEL_SCAN_BYTES else LEVEL_SCAN_SEGMENTS
            per_segment = min(frames, LEVEL_SCAN_BYTES // segments // frame_bytes)
            chunks = []
            for n in range(segments):
                wav.setpos((frames - per_segment) * n // max(1, segments - 1))
                chunks.append(wav.readframes(per_segment))
    except (wave.Error, EOFError, ValueError):  # float, extensible or odd WAVs: no level check
        return []
    window = max(1, rate * channels // 20)
    levels = []
    for chunk in chunks:
        samples, full_scale = _pcm_samples(chunk, width)
        for start in range(0, len(samples) - window + 1, window):
            part = samples[start:start + window]
            power = sum(map(operator.mul, part, part)) / window
            levels.append(10 * math.log10(power / full_scale**2) if power else -math.inf)
    return levels


def _pcm_samples(data: bytes, width: int) -> tuple[Any, int]:
    """Little-endian PCM as integers, with the full-scale amplitude."""
    if width == 1:  # 8-bit WAV is unsigned
        return [b - 128 for b in data], 128
    if width == 3:  # widen 24-bit samples to 32-bit by adding a zero low byte
        count = len(data) // 3
        widened = bytearray(4 * count)
        for i in range(3):
            widened[i + 1::4] = data[i:3 * count:3]
        data, width = bytes(widened), 4
    samples = array("h" if width == 2 else "i", data[:len(data) - len(data) % width])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples, 1 << (8 * width - 1)
