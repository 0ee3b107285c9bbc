"""Real media files for tests, built once per session, and readers that count what is read."""

from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import wave
import zlib
from array import array
from functools import cache
from pathlib import Path

from s2v_local import samples


@cache
def speech(seconds: float = 4.2, sample_rate: int = 16000) -> bytes:
    return samples.speech_wav(seconds, sample_rate)


@cache
def encoded(fmt: str, seconds: float = 4.2) -> bytes:
    return speech(seconds) if fmt == "wav" else samples.encode_audio(speech(seconds), fmt)


@cache
def portrait(fmt: str = "png", width: int = 320, height: int = 400) -> bytes:
    png = samples.portrait_png(width, height)
    return png if fmt == "png" else samples.image_as(png, fmt)


def pcm_wav(samples_: array | bytes, *, width: int = 2, channels: int = 1, rate: int = 16000) -> bytes:
    """A PCM WAV written by the stdlib from raw little-endian samples."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(samples_))
    return buffer.getvalue()


def scaled_wav(wav: bytes, gain: float) -> bytes:
    """The same mono 16-bit WAV with every sample multiplied by ``gain``."""
    with wave.open(io.BytesIO(wav)) as source:
        frames = array("h", source.readframes(source.getnframes()))
        rate = source.getframerate()
    return pcm_wav(array("h", (round(v * gain) for v in frames)), rate=rate)


def wav_as_width(wav: bytes, width: int) -> bytes:
    """A mono 16-bit WAV converted to 8-, 24- or 32-bit PCM."""
    with wave.open(io.BytesIO(wav)) as source:
        frames = array("h", source.readframes(source.getnframes()))
        rate = source.getframerate()
    if width == 1:
        return pcm_wav(bytes((v >> 8) + 128 for v in frames), width=1, rate=rate)
    out = bytearray()
    for v in frames:
        out += (v << (8 * (width - 2))).to_bytes(width, "little", signed=True)
    return pcm_wav(bytes(out), width=width, rate=rate)


def ffmpeg(data: bytes | None, args: list[str], suffix: str) -> bytes:
    """Run the wheel's ffmpeg on ``data`` (or on lavfi sources named in ``args``) and return the output."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        if data is not None:
            (Path(tmp) / "in").write_bytes(data)
            command += ["-i", str(Path(tmp) / "in")]
        target = Path(tmp) / f"out{suffix}"
        subprocess.run([*command, *args, str(target)], check=True, capture_output=True, timeout=60)
        return target.read_bytes()


@cache
def video_without_audio() -> bytes:
    return ffmpeg(None, ["-f", "lavfi", "-i", "testsrc=size=128x128:rate=10", "-t", "1", "-c:v", "mpeg4"], ".mp4")


@cache
def adpcm_wav() -> bytes:
    return ffmpeg(speech(), ["-c:a", "adpcm_ima_wav"], ".wav")


@cache
def float_wav() -> bytes:
    return ffmpeg(speech(), ["-c:a", "pcm_f32le"], ".wav")


def image_of_size(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header for a huge 1-bit picture, with almost no pixel data: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64)))
            + chunk(b"IEND", b""))


def id3_padding(size: int) -> bytes:
    """An empty ID3v2.4 tag with ``size`` bytes of padding, as taggers leave before MP3 data."""
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + syncsafe + bytes(size)


class HugeReader:
    """Claims to be a huge object; records every read, serves zeros, and fails any unbounded read."""

    def __init__(self, key: str, size: int, *, max_read: int = 1024 * 1024) -> None:
        self.key, self.size, self.max_read = key, size, max_read
        self.bytes_read = 0
        self.reads: list[tuple[int, int | None]] = []

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        self.reads.append((start, length))
        count = min(self.size - start, length if length is not None else self.size)
        assert count <= self.max_read, f"read of {count:,} bytes from a {self.size:,}-byte object"
        self.bytes_read += count
        return bytes(count)


class FailingReader:
    """Serves ``data`` until ``fail_after`` reads, then raises like a dropped S3 connection."""

    def __init__(self, data: bytes, key: str, fail_after: int) -> None:
        self._data, self.key, self.size = data, key, len(data)
        self._left = fail_after

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        if self._left <= 0:
            raise ConnectionResetError("connection reset by peer")
        self._left -= 1
        return self._data[start:self.size if length is None else start + length]
