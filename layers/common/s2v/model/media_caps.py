"""Hard caps on a media file's structure, checked before a parser (mutagen, Pillow) sees the bytes.

Parsers walk a file's parts (FLAC metadata blocks, MP4 atoms, ID3 frames, Ogg pages, RIFF and PNG
chunks, JPEG segments) one Python object at a time, and some read a part whole into memory or walk
the whole file. A crafted file of millions of tiny parts, or one giant tag, then costs minutes and
gigabytes while staying under the size limit. Here each walk reads only part headers, counts them
and stops at the first cap, so what a parser meets afterwards is bounded: at most ``MAX_*`` parts and
``MAX_METADATA_BYTES`` of metadata, whatever the file's size. Past a cap the file is refused with
code ``media_too_complex``; a structure that is merely broken is left for the parser to call
corrupt, so the messages stay the ones users already know.

Real speech clips and portraits sit far below every cap (a few blocks, atoms, chunks or frames).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from s2v.model.errors import InputError

ReadAt = Callable[[int, int], bytes]  # bytes [start, start + length); fewer at the end of the file

CAP_CODE = "media_too_complex"
MAX_METADATA_BYTES = 16 * 1024 * 1024  # tags, pictures, header packets a parser reads whole
MAX_ID3_TAGS = 8  # stacked ID3v2 tags before the audio (some players write two)
MAX_ID3_FRAMES = 1024  # mutagen's frame parsing grows faster than linearly with the count
MAX_FLAC_BLOCKS = 256
MAX_MP4_ATOMS = 1024  # in the tree mutagen reads (containers it opens, and their children)
MAX_MP4_TOP_ATOMS = 64  # ftyp, moov, mdat, free... each may cost one ranged read
MAX_MP4_DEPTH = 16
MAX_WAV_CHUNKS = 256  # including a LIST chunk's sub-chunks, which mutagen also reads
MAX_OGG_HEADER_PAGES = 4096  # pages before the first audio page (cover art in comments spans many)
OGG_TAIL_BYTES = 256 * 256  # where mutagen looks for the last page before reading the whole file
MAX_PNG_CHUNKS = 8192  # a 30 MB PNG written in 8 KB IDAT chunks has ~3,700
MAX_JPEG_SEGMENTS = 1024  # marker segments before the first scan
MAX_JPEG_SCANS = 64  # progressive encoders write about ten; each scan decodes the picture again
MAX_WEBP_CHUNKS = 1024

# mutagen opens these MP4 atoms (mutagen/mp4/_atom.py); "meta" has 4 bytes of version and flags first.
MP4_CONTAINERS = frozenset({b"moov", b"udta", b"trak", b"mdia", b"meta", b"ilst", b"stbl", b"minf", b"moof",
                            b"traf"})
MP4_SKIP = {b"meta": 4}


@dataclass(frozen=True)
class AudioLayout:
    """What the walk learnt on the way: where the audio stream starts (after ID3 tags) and, for
    MP4, where its last top-level atom ends (past the file's end means the file was cut short)."""

    start: int = 0
    mp4_end: int | None = None


def too_complex(key: str, what: str, advice: str = "export it again from your editor") -> InputError:
    return InputError(f"{key} has {what}: more than any real recording or photo, and too costly to inspect. "
                      f"Re-encode the file ({advice}) and upload it again.", code=CAP_CODE)


class _Counter:
    def __init__(self, key: str, limit: int, what: str) -> None:
        self.key, self.limit, self.what, self.count = key, limit, what, 0

    def add(self, n: int = 1) -> None:
        self.count += n
        if self.count > self.limit:
            raise too_complex(self.key, f"more than {self.limit:,} {self.what}")


def _bytes_cap(key: str, size: int, what: str, advice: str = "export it again without embedded pictures") -> None:
    if size > MAX_METADATA_BYTES:
        raise too_complex(key, f"{what} of {size:,} bytes (the limit is {MAX_METADATA_BYTES:,})", advice)


# --- audio ------------------------------------------------------------------------------------


def check_audio(fmt: str, read_at: ReadAt, size: int, key: str) -> AudioLayout:
    """Walk the audio file's parts within the caps; raises InputError(media_too_complex) past one."""
    start = skip_id3_tags(read_at, key)
    if fmt == "flac":
        _check_flac(read_at, start, key)
    elif fmt == "m4a":
        return AudioLayout(start, _check_mp4(read_at, size, key))
    elif fmt == "wav":
        _check_riff(read_at, size, key, MAX_WAV_CHUNKS, "RIFF chunks", nested=True)
    elif fmt == "ogg":
        _check_ogg(read_at, size, key)
    return AudioLayout(start)


def skip_id3_tags(read_at: ReadAt, key: str) -> int:
    """The offset after the ID3v2 tags at the start (0 without), each tag checked within the caps."""
    offset = 0
    tags = _Counter(key, MAX_ID3_TAGS, "ID3 tags in a row")
    frames = _Counter(key, MAX_ID3_FRAMES, "ID3 tag frames")
    while True:
        header = read_at(offset, 10)
        length = id3_tag_length(header)
        if not length:
            return offset
        tags.add()
        _bytes_cap(key, length, "an ID3 tag")
        count_id3_frames(read_at(offset, length), frames)
        offset += length


def id3_tag_length(header: bytes) -> int:
    """Total length of the ID3v2 tag whose header starts ``header`` (0 if it is not one)."""
    if len(header) < 10 or not header.startswith(b"ID3") or any(b & 0x80 for b in header[6:10]):
        return 0
    body = _syncsafe(header[6:10])
    footer = 10 if header[5] & 0x10 else 0
    return 10 + body + footer


def count_id3_frames(tag: bytes, frames: _Counter) -> None:
    """Count the frames of one ID3v2 tag (v2.2 to v2.4) the way a parser will meet them."""
    version, flags = tag[3], tag[5]
    data = tag[10:]
    if flags & 0x80 and version < 4:  # v2.2/2.3 unsynchronise the whole tag; frame headers follow that
        data = data.replace(b"\xff\x00", b"\xff")
    pos = 0
    if flags & 0x40 and version >= 3 and len(data) >= 4:  # an extended header precedes the frames
        pos = _syncsafe(data[:4]) if version == 4 else 4 + int.from_bytes(data[:4], "big")
    head = 6 if version == 2 else 10
    while pos + head <= len(data):
        if data[pos] == 0:
            return  # padding
        if version == 2:
            length = int.from_bytes(data[pos + 3:pos + 6], "big")
        elif version == 4:
            length = _syncsafe(data[pos + 4:pos + 8])
        else:
            length = int.from_bytes(data[pos + 4:pos + 8], "big")
        frames.add()
        pos += head + length


def _syncsafe(four: bytes) -> int:
    return (four[0] & 0x7F) << 21 | (four[1] & 0x7F) << 14 | (four[2] & 0x7F) << 7 | (four[3] & 0x7F)


def _check_flac(read_at: ReadAt, start: int, key: str) -> None:
    if read_at(start, 4) != b"fLaC":
        return  # not where mutagen expects it either: it will call the file corrupt
    blocks = _Counter(key, MAX_FLAC_BLOCKS, "FLAC metadata blocks")
    pos, total = start + 4, 0
    while True:
        header = read_at(pos, 4)
        if len(header) < 4:
            return
        length = int.from_bytes(header[1:4], "big")
        blocks.add()
        total += length
        _bytes_cap(key, total, "FLAC metadata")
        if header[0] & 0x80:  # the last metadata block
            return
        pos += 4 + length


def _check_mp4(read_at: ReadAt, size: int, key: str) -> int | None:
    """Walk the atoms mutagen reads, as it reads them; the end of the last top-level atom, or None
    when the tree is broken (mutagen then refuses the file as corrupt)."""
    atoms = _Counter(key, MAX_MP4_ATOMS, "MP4 atoms (boxes)")
    top = _Counter(key, MAX_MP4_TOP_ATOMS, "top-level MP4 atoms (boxes)")
    pos, end = 0, None
    while pos + 8 <= size:
        top.add()
        end = _mp4_atom(read_at, pos, size, key, atoms, level=0)
        if end is None:
            return None
        pos = end
    return end


def _mp4_atom(read_at: ReadAt, offset: int, size: int, key: str, atoms: _Counter, *, level: int) -> int | None:
    """The end of the atom at ``offset`` after walking its children; None if it is malformed."""
    if level > MAX_MP4_DEPTH:
        raise too_complex(key, f"MP4 atoms (boxes) nested more than {MAX_MP4_DEPTH} deep")
    atoms.add()
    header = read_at(offset, 16)
    if len(header) < 8:
        return None
    length, name, body = int.from_bytes(header[:4], "big"), header[4:8], offset + 8
    if length == 1:
        if len(header) < 16:
            return None
        length, body = int.from_bytes(header[8:16], "big"), offset + 16
        if length < 16:
            return None
    elif length == 0:
        if level:
            return None
        length = size - offset
    elif length < 8:
        return None
    end = offset + length
    if name in MP4_CONTAINERS:
        if name == b"moov" or name == b"ilst":
            _bytes_cap(key, length, f"an MP4 '{name.decode()}' atom")
        child = body + MP4_SKIP.get(name, 0)
        while child + 8 <= end:
            child_end = _mp4_atom(read_at, child, size, key, atoms, level=level + 1)
            if child_end is None:
                return None
            child = child_end
    return end


def _check_riff(read_at: ReadAt, size: int, key: str, limit: int, what: str, *, nested: bool) -> None:
    """RIFF (WAV, WebP): chunks after the 12-byte header, and a LIST chunk's own (mutagen reads them)."""
    chunks = _Counter(key, limit, what)
    _riff_chunks(read_at, 12, size, chunks, nested=nested)


def _riff_chunks(read_at: ReadAt, pos: int, end: int, chunks: _Counter, *, nested: bool) -> None:
    while pos + 8 <= end:
        header = read_at(pos, 12)
        if len(header) < 8:
            return
        length = int.from_bytes(header[4:8], "little")
        chunks.add()
        if nested and header[:4] == b"LIST":
            _riff_chunks(read_at, pos + 12, min(end, pos + 8 + length), chunks, nested=False)
        pos += 8 + length + (length & 1)  # chunks are padded to an even length


def _check_ogg(read_at: ReadAt, size: int, key: str) -> None:
    """The header pages before the audio, and the last page: mutagen reads the whole file page by
    page when the last page is not its stream's end (a chained, multiplexed or truncated file)."""
    pages = _Counter(key, MAX_OGG_HEADER_PAGES, "Ogg pages before the audio starts")
    pos, total, serial = 0, 0, None
    while True:
        page = _ogg_page(read_at(pos, 27 + 255))
        if page is None:
            return  # broken: mutagen calls it corrupt
        pages.add()
        granule, page_serial, length = page
        serial = page_serial if serial is None else serial
        total += length
        _bytes_cap(key, total, "Ogg header packets")
        if page_serial == serial and granule not in (0, -1):
            break  # the first audio page
        pos += length
        if pos >= size:
            return
    tail_start = max(0, size - OGG_TAIL_BYTES)
    tail = read_at(tail_start, size - tail_start)
    last = tail.rfind(b"OggS")
    found = _ogg_page(tail[last:last + 27 + 255]) if last >= 0 else None
    flags = tail[last + 5] if found is not None else 0
    if found is None or found[1] != serial or not flags & 0x04 or found[0] == -1:
        raise InputError(f"{key} is an Ogg file whose last page is not the end of its audio stream: it was cut short, "
                         "or holds several streams. Export it again as one complete Vorbis or Opus file (or as "
                         "MP3) and upload it again.", code="corrupt_audio")


def _ogg_page(head: bytes) -> tuple[int, int, int] | None:
    """(granule position, serial, page length) of the Ogg page ``head`` starts, or None."""
    if len(head) < 27 or not head.startswith(b"OggS"):
        return None
    segments = head[26]
    table = head[27:27 + segments]
    if len(table) < segments:
        return None
    granule = int.from_bytes(head[6:14], "little", signed=True)
    return granule, int.from_bytes(head[14:18], "little"), 27 + segments + sum(table)


# --- images -----------------------------------------------------------------------------------


def check_image(fmt: str, data: bytes, key: str) -> None:
    """Count the parts Pillow walks in Python (PNG chunks, JPEG segments and scans, WebP chunks)."""
    if fmt == "png":
        _check_png(data, key)
    elif fmt == "jpeg":
        _check_jpeg(data, key)
    elif fmt == "webp":
        _check_riff(lambda start, length: data[start:start + length], len(data), key, MAX_WEBP_CHUNKS,
                    "WebP chunks (frames)", nested=False)


def _check_png(data: bytes, key: str) -> None:
    chunks = _Counter(key, MAX_PNG_CHUNKS, "PNG chunks")
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.add()
        if data[pos + 4:pos + 8] == b"IEND":
            return
        pos += 12 + length


def _check_jpeg(data: bytes, key: str) -> None:
    segments = _Counter(key, MAX_JPEG_SEGMENTS, "JPEG marker segments")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return  # broken: Pillow calls it corrupt
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker
            pos += 1
            continue
        segments.add()
        if marker == 0xDA:  # the first scan; in entropy-coded data 0xFF is always followed by 0x00 or RSTn
            scans = data.count(b"\xff\xda", pos)
            if scans > MAX_JPEG_SCANS:
                raise too_complex(key, f"{scans:,} scans (a progressive JPEG may have up to {MAX_JPEG_SCANS})",
                                  "save it as a baseline JPEG or as PNG")
            return
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
