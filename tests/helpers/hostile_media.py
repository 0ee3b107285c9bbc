"""Hostile variants of real media files: the same audio or picture, with its structure repeated,
nested or inflated (parts a parser walks one by one), and readers for such files far larger than memory."""

from __future__ import annotations

import struct
import zlib

from helpers import media_files as files


def flac_blocks(blocks: list[tuple[int, bytes]], frames: bytes) -> bytes:
    """A FLAC file from (type, body) metadata blocks (STREAMINFO first) and its frames."""
    out = bytearray(b"fLaC")
    for i, (kind, body) in enumerate(blocks):
        out += bytes([kind | (0x80 if i == len(blocks) - 1 else 0)]) + len(body).to_bytes(3, "big") + body
    return bytes(out + frames)


def flac_parts(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    blocks, pos, last = [], 4, False
    while not last:
        header, length = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        last = bool(header & 0x80)
        blocks.append((header & 0x7F, data[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return blocks, data[pos:]


def flac_with_padding_blocks(count: int, seconds: float = 1.0) -> bytes:
    """A real FLAC clip followed in its metadata by ``count`` empty PADDING blocks."""
    blocks, frames = flac_parts(files.encoded("flac", seconds))
    return flac_blocks([*blocks, *[(1, b"")] * count], frames)


def atom(name: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(body)) + name + body


def m4a_with_free_atoms(count: int, seconds: float = 1.0) -> bytes:
    """A real M4A clip followed by ``count`` empty top-level 'free' atoms."""
    return files.encoded("m4a", seconds) + atom(b"free") * count


def m4a_with_udta_children(count: int, seconds: float = 1.0) -> bytes:
    """A real M4A clip followed by one 'udta' atom holding ``count`` empty atoms (mutagen opens udta)."""
    return files.encoded("m4a", seconds) + atom(b"udta", atom(b"free") * count)


def m4a_with_nested_atoms(depth: int, seconds: float = 1.0) -> bytes:
    """A real M4A clip followed by 'udta' atoms nested ``depth`` deep."""
    nested = b""
    for _ in range(depth):
        nested = atom(b"udta", nested)
    return files.encoded("m4a", seconds) + nested


def syncsafe(size: int) -> bytes:
    return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))


def id3v23(frames: bytes) -> bytes:
    return b"ID3\x03\x00\x00" + syncsafe(len(frames)) + frames


def text_frame(value: bytes = b"a") -> bytes:
    body = b"\x00" + value
    return b"TXXX" + len(body).to_bytes(4, "big") + b"\x00\x00" + body


def mp3_with_id3_frames(count: int, seconds: float = 1.0) -> bytes:
    """A real MP3 clip behind an ID3v2.3 tag of ``count`` tiny frames."""
    return id3v23(text_frame() * count) + files.encoded("mp3", seconds)


def mp3_behind_id3_tags(count: int, seconds: float = 1.0) -> bytes:
    """A real MP3 clip behind ``count`` stacked ID3 tags of one small frame each."""
    return id3v23(text_frame()) * count + files.encoded("mp3", seconds)


def wav_with_chunks(count: int, seconds: float = 1.0) -> bytes:
    """A real WAV clip with ``count`` empty 'JUNK' chunks between its 'fmt ' and 'data' chunks."""
    wav = files.encoded("wav", seconds)
    fmt_end = 12 + 8 + int.from_bytes(wav[16:20], "little")
    body = wav[12:fmt_end] + b"JUNK\x00\x00\x00\x00" * count + wav[fmt_end:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def ogg_page(serial: int, sequence: int, body: bytes = b"", *, granule: int = 0, flags: int = 0) -> bytes:
    lacing = bytes([255] * (len(body) // 255) + [len(body) % 255])
    header = (b"OggS\x00" + bytes([flags]) + struct.pack("<qIII", granule, serial, sequence, 0)
              + bytes([len(lacing)]) + lacing)
    crc = _ogg_crc(header + body)
    return header[:22] + struct.pack("<I", crc) + header[26:] + body


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def ogg_first_page_end(data: bytes) -> int:
    segments = data[26]
    return 27 + segments + sum(data[27:27 + segments])


def ogg_with_foreign_pages(count: int, fmt: str = "ogg", seconds: float = 1.0) -> bytes:
    """A real Ogg clip with ``count`` empty pages of another stream after its first page."""
    data = files.encoded(fmt, seconds)
    first = ogg_first_page_end(data)
    serial = int.from_bytes(data[14:18], "little") ^ 0x5A5A5A5A
    page = ogg_page(serial, 0)  # identical pages: the CRC is computed once
    return data[:first] + page * count + data[first:]


def ogg_without_end(fmt: str = "ogg", seconds: float = 1.0) -> bytes:
    """A real Ogg clip with its last (end-of-stream) page cut off: mutagen would walk every page."""
    data = files.encoded(fmt, seconds)
    return data[:data.rfind(b"OggS")]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_text_chunks(count: int) -> bytes:
    """A real PNG portrait with ``count`` small tEXt chunks after its header chunk."""
    png = files.portrait("png")
    ihdr_end = 8 + 12 + int.from_bytes(png[8:12], "big")
    return png[:ihdr_end] + png_chunk(b"tEXt", b"k\x00v") * count + png[ihdr_end:]


def jpeg_with_comments(count: int) -> bytes:
    """A real JPEG portrait with ``count`` one-byte COM segments after its SOI marker."""
    jpeg = files.portrait("jpeg")
    return jpeg[:2] + b"\xff\xfe\x00\x03c" * count + jpeg[2:]


def progressive_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(files.portrait("png"))).convert("RGB").save(buffer, format="JPEG", progressive=True)
    return buffer.getvalue()


def jpeg_with_scans(count: int) -> bytes:
    """A progressive JPEG whose first scan is repeated until it has ``count`` scans."""
    jpeg = progressive_jpeg()
    first = jpeg.index(b"\xff\xda")
    second = jpeg.index(b"\xff\xda", first + 2)
    return jpeg[:second] + jpeg[first:second] * (count - 1 - jpeg.count(b"\xff\xda", second)) + jpeg[second:]


def webp_with_chunks(count: int) -> bytes:
    """A real WebP portrait with ``count`` empty unknown chunks after its image chunk."""
    webp = files.portrait("webp")
    body = webp[12:] + b"JUNK\x00\x00\x00\x00" * count
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


class RepeatingReader:
    """An object of ``size`` bytes that exists only as reads: ``head`` followed by ``unit`` repeated
    to the end. Counts what is read, like the S3 reader does in production."""

    def __init__(self, key: str, head: bytes, unit: bytes, size: int) -> None:
        self.key, self.size, self._head, self._unit = key, size, head, unit
        self.bytes_read = 0
        self.reads = 0

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        end = self.size if length is None else min(self.size, start + length)
        self.reads += 1
        self.bytes_read += max(0, end - start)
        out = bytearray()
        pos = start
        if pos < len(self._head):
            out += self._head[pos:end]
            pos = len(self._head)
        if pos < end:
            phase = (pos - len(self._head)) % len(self._unit)
            reps = (end - pos + phase) // len(self._unit) + 1
            out += (self._unit * reps)[phase:phase + end - pos]
        return bytes(out)


def lying_mp3(seconds: float, says: float, sample_rate: int = 8000) -> bytes:
    """A real MP3 of ``seconds`` of speech whose Xing/Info header claims only ``says`` seconds
    (its frame count scaled down): a reader of the header believes it, a decoder does not."""
    from s2v_local import samples

    data = bytearray(samples.encode_audio(samples.speech_wav(seconds, sample_rate), "mp3"))
    at = max(data.find(b"Info"), data.find(b"Xing"))
    assert at > 0 and int.from_bytes(data[at + 4:at + 8], "big") & 1, "no frame count in the header"
    frames = int.from_bytes(data[at + 8:at + 12], "big")
    data[at + 8:at + 12] = round(frames * says / seconds).to_bytes(4, "big")
    return bytes(data)
