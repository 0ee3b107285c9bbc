"""Frame-stamped videos for tests: make them, and read back which source frame each frame shows
(the emulator draws the same stamps; see ``s2v_local.stamps``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg

from s2v_local import stamps
from s2v_local.stamps import Stamp


def stamped_video(target: Path, frames: int, *, tag: int, fps: float = 16, size: tuple[int, int] = (160, 120),
                  colour: str = "0x3060a0") -> Path:
    """An H.264 MP4 of ``frames`` frames at ``fps``, frame i stamped (``tag``, i), over a flat colour."""
    width, height = size
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-f", "lavfi", "-i", f"color=c={colour}:s={width}x{height}:r={fps:g}",
                    "-vf", f"format=yuv420p,{stamps.drawbox_filter(tag)}", "-frames:v", str(frames),
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4", str(target)],
                   check=True, capture_output=True, timeout=120)
    return target


def read_stamps(video: Path | str) -> list[Stamp]:
    """The stamp of every frame of the first video stream, in presentation order (ValueError at a
    frame without a readable stamp)."""
    read = read_stamps_or_none(video)
    clean = [stamp for stamp in read if stamp is not None]
    if len(clean) != len(read):
        raise ValueError(f"frame {read.index(None)} of {video} has no readable stamp")
    return clean


def read_stamps_or_none(video: Path | str) -> list[Stamp | None]:
    """``read_stamps``, with None for each frame whose stamp cannot be read (a blend, a scaled frame)."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(video),
               "-map", "0:v:0", "-vf", f"crop={stamps.WIDTH}:{stamps.HEIGHT}:0:0,format=gray",
               "-fps_mode", "passthrough", "-f", "rawvideo", "-"]
    raw = subprocess.run(command, check=True, capture_output=True, timeout=600).stdout
    size = stamps.WIDTH * stamps.HEIGHT
    view = memoryview(raw)
    return [_read_or_none(view[offset:offset + size]) for offset in range(0, len(raw), size)]


def _read_or_none(gray: memoryview) -> Stamp | None:
    try:
        return stamps.read(gray)
    except ValueError:
        return None


def runs(read: list[Stamp]) -> list[tuple[int, int, int]]:
    """The stamps as runs of consecutive source frames: (tag, first frame, last frame), a repeated
    frame making a run of its own. A clean stitch of n segments reads as n runs (plus one per padding
    clone, each repeating the frame before it)."""
    out: list[tuple[int, int, int]] = []
    for stamp in read:
        if out and out[-1][0] == stamp.tag and stamp.frame == out[-1][2] + 1:
            out[-1] = (stamp.tag, out[-1][1], stamp.frame)
        else:
            out.append((stamp.tag, stamp.frame, stamp.frame))
    return out
