"""Figure 11: the validation bound. Hostile media at the size limits (16 MB and 2 GiB audio of
millions of tiny parts, 30 MB images of tiny chunks) through the inspectors, each in a fresh
interpreter: CPU seconds and peak RSS of the inspection, next to a real clip inspected the same way.

The 16 MB files exist in memory; the 2 GiB ones only as reads (a real header, then one tiny part
repeated to 2 GiB), which is also what the S3 reader serves: what is fetched is counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

from bench.common import MIB

MB16 = 16 * MIB
GIB2 = 2 * 1024 * MIB
IMAGE_LIMIT = 30 * 1_000_000


def _fill(base: Callable[[int], bytes], unit: int, size: int) -> bytes:
    """``base(n)`` with n parts of ``unit`` bytes, n chosen so the file is about ``size`` bytes."""
    return base(max(1, (size - len(base(0))) // unit))


def _nested_udta(size: int) -> bytes:
    from helpers import media_files as files

    clip = files.encoded("m4a", 1.0)
    depth = (size - len(clip)) // 8
    total = 8 * depth
    return clip + b"".join((total - 8 * i).to_bytes(4, "big") + b"udta" for i in range(depth))


def _in_memory(shape: str, size: int) -> bytes:
    from helpers import hostile_media as hostile
    from helpers import media_files as files

    makers: dict[str, Callable[[], bytes]] = {
        "flac-blocks": lambda: _fill(hostile.flac_with_padding_blocks, 4, size),
        "m4a-atoms": lambda: _fill(hostile.m4a_with_free_atoms, 8, size),
        "m4a-nested": lambda: _nested_udta(size),
        "mp3-id3-frames": lambda: _fill(hostile.mp3_with_id3_frames, 12, min(size, 15 * MIB)),
        "wav-chunks": lambda: _fill(hostile.wav_with_chunks, 8, size),
        "ogg-pages": lambda: _fill(hostile.ogg_with_foreign_pages, 28, size),
        "png-chunks": lambda: _fill(hostile.png_with_text_chunks, 15, size),
        "jpeg-segments": lambda: _fill(hostile.jpeg_with_comments, 5, size),
        # Just within every cap: what the parsers still have to do for a file that passes the walk.
        "flac-at-caps": lambda: hostile.flac_blocks(
            [*hostile.flac_parts(files.encoded("flac", 1.0))[0], *[(1, bytes(65_000))] * 250],
            hostile.flac_parts(files.encoded("flac", 1.0))[1]),
        "mp3-at-caps": lambda: hostile.id3v23(hostile.text_frame(b"a" * 16_000) * 1000) + files.encoded("mp3", 1.0),
        "m4a-at-caps": lambda: hostile.m4a_with_udta_children(950),
        "ogg-at-caps": lambda: _ogg_with_big_foreign_pages(4000, 4000),
        "wav-at-caps": lambda: hostile.wav_with_chunks(250),
        "real-wav": lambda: files.speech(size / 32000),  # the baseline: a real 16 kHz WAV of that size
        "real-png": lambda: files.portrait("png", 1024, 1024),
    }
    return makers[shape]()


def _ogg_with_big_foreign_pages(count: int, body: int) -> bytes:
    from helpers import hostile_media as hostile
    from helpers import media_files as files

    data = files.encoded("ogg", 1.0)
    first = hostile.ogg_first_page_end(data)
    page = hostile.ogg_page(int.from_bytes(data[14:18], "little") ^ 1, 0, bytes(body))
    return data[:first] + page * count + data[first:]


def _as_reads(shape: str, size: int) -> object:
    from helpers import hostile_media as hostile
    from helpers import media_files as files

    flac_blocks, _ = hostile.flac_parts(files.encoded("flac", 1.0))
    ogg = files.encoded("ogg", 1.0)
    ogg_first = hostile.ogg_first_page_end(ogg)
    heads: dict[str, tuple[bytes, bytes]] = {
        "flac-blocks": (b"fLaC" + b"".join(bytes([k]) + len(b).to_bytes(3, "big") + b for k, b in flac_blocks),
                        b"\x01\x00\x00\x00"),
        "m4a-atoms": (files.encoded("m4a", 1.0), hostile.atom(b"free")),
        "m4a-nested": (files.encoded("m4a", 1.0), b"\x7f\xff\xff\xffudta"),
        "mp3-id3-frames": (b"ID3\x03\x00\x00" + hostile.syncsafe(15 * MIB), hostile.text_frame()),
        "wav-chunks": (files.encoded("wav", 1.0)[:36], b"JUNK\x00\x00\x00\x00"),
        "ogg-pages": (ogg[:ogg_first], hostile.ogg_page(int.from_bytes(ogg[14:18], "little") ^ 1, 0)),
    }
    head, unit = heads[shape]
    return hostile.RepeatingReader(f"inputs/bench/x.{shape}", head, unit, size)


class FileReader:
    """Ranged reads of a file on disk, counted: the S3 reader's part, without holding the file in memory."""

    def __init__(self, path: str, key: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.key, self.size = key, os.fstat(self._fd).st_size
        self.bytes_read = 0

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        data = os.pread(self._fd, self.size - start if length is None else length, start)
        self.bytes_read += len(data)
        return data


def _peak_kib() -> int:
    """This process's peak RSS (VmHWM: its own address space; ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def measure(shape: str, size: int, path: str = "") -> dict[str, object]:
    """In this (fresh) interpreter: inspect one file (at ``path``, or a 2 GiB one made of reads);
    CPU seconds, peak RSS, outcome, bytes fetched."""
    import time

    from s2v.model.errors import InputError
    from s2v.model.media import inspect_audio, inspect_image

    image = shape.startswith(("png", "jpeg", "real-png"))
    reader: object = FileReader(path, f"inputs/bench/x.{shape}") if path else _as_reads(shape, size)
    import mutagen.flac  # noqa: F401  (the parsers' import cost is the same for every file)
    import PIL.Image  # noqa: F401

    before_rss = _peak_kib()
    started = time.process_time()
    try:
        if image:
            inspect_image(reader, max_bytes=IMAGE_LIMIT)  # type: ignore[arg-type]
        else:
            inspect_audio(reader, max_bytes=GIB2, max_seconds=3 * 3600)  # type: ignore[arg-type]
        outcome = "accepted"
    except InputError as refused:
        outcome = refused.code
    cpu = time.process_time() - started
    peak = _peak_kib()
    return {"shape": shape, "size": getattr(reader, "size", 0), "cpu": cpu, "outcome": outcome,
            "peak_mib": peak / 1024, "grew_mib": (peak - before_rss) / 1024,
            "fetched_mib": getattr(reader, "bytes_read", 0) / MIB}


def _child(shape: str, size: int) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(prefix="s2v-bench-media-") as file:
        path = ""
        if size <= 64 * MIB:  # made here, inspected from disk there: the child holds only what it reads
            file.write(_in_memory(shape, size))
            file.flush()
            path = file.name
        code = (f"import json, sys; sys.path[:0] = {sys.path!r}; from bench.media import measure; "
                f"print(json.dumps(measure({shape!r}, {size}, {path!r})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=900)
    if out.returncode:
        raise SystemExit(f"bench: a measurement failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


HOSTILE_AUDIO = ("flac-blocks", "m4a-atoms", "m4a-nested", "mp3-id3-frames", "wav-chunks", "ogg-pages")
HOSTILE_IMAGES = ("png-chunks", "jpeg-segments")
AT_CAPS = ("flac-at-caps", "mp3-at-caps", "m4a-at-caps", "ogg-at-caps", "wav-at-caps")


def run(*, quick: bool = False) -> None:
    print("\n10. Validation bound: hostile media at the size limits, each inspected in a fresh interpreter")
    baseline = _child("real-wav", MB16)
    image_baseline = _child("real-png", 0)
    print(f"   baseline: a real 16 MiB WAV: {baseline['cpu']:.2f} s CPU, peak {baseline['peak_mib']:.0f} MiB "
          f"(+{baseline['grew_mib']:.0f}); a real 1024x1024 PNG: {image_baseline['cpu']:.2f} s, "
          f"peak {image_baseline['peak_mib']:.0f} MiB")
    rows = [_child(shape, MB16) for shape in HOSTILE_AUDIO]
    if not quick:
        rows += [_child(shape, GIB2) for shape in HOSTILE_AUDIO]
    rows += [_child(shape, IMAGE_LIMIT) for shape in HOSTILE_IMAGES]
    rows += [_child(shape, MB16) for shape in AT_CAPS]
    print(f"   {'shape':<16}{'size':>10}  {'outcome':<20}{'CPU s':>7}{'x base':>8}{'peak MiB':>10}{'fetched MiB':>13}")
    for row in rows:
        base = image_baseline if str(row["shape"]).startswith(("png", "jpeg")) else baseline
        size = int(row["size"])
        shown = f"{size / MIB:,.0f} MiB"
        print(f"   {row['shape']:<16}{shown:>10}  {row['outcome']:<20}{row['cpu']:>7.3f}"
              f"{float(row['cpu']) / max(float(base['cpu']), 1e-3):>7.2f}x{row['peak_mib']:>10.0f}"
              f"{row['fetched_mib']:>13.1f}")
    worst_cpu = max(float(r["cpu"]) for r in rows)
    worst_rss = max(float(r["peak_mib"]) for r in rows)
    print(f"   bound: worst {worst_cpu:.2f} s CPU and {worst_rss:.0f} MiB peak over every hostile shape "
          f"(baseline real WAV {baseline['cpu']:.2f} s, {baseline['peak_mib']:.0f} MiB)")
