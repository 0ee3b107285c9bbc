"""Renders: the still image over the audio with ffmpeg, each frame stamped, as the provider's frames."""

from __future__ import annotations

import io
import re
import subprocess
import threading
import time
from pathlib import Path

from s2v.model import provider_facts
from s2v.model.models import Model
from s2v_local import stamps

SHORT_SIDES = {"480p": 480, "720p": 720}  # the short side of the output, at most
RESOLUTIONS = {name: SHORT_SIDES[name] for name in provider_facts.RESOLUTIONS}
FRAMES_PER_SECOND = provider_facts.OUTPUT_FRAMES_PER_SECOND
# Probes get this long; a render gets this plus the clip's own length (never needed on a sane box).
FFMPEG_TIMEOUT_SECONDS = 120


class TaskFailed(Exception):
    """The render cannot finish; the message becomes the task's ``error``."""


def played_roles(model: Model, order: str) -> list[str]:
    """The audio roles in the order they play ("right_left" puts the right speaker first)."""
    roles = list(model.audio_roles)
    return list(reversed(roles)) if order.startswith("right") else roles


def lay_out_tracks(ffmpeg: str, tracks: list[Path], *, sequence: bool, target: Path) -> None:
    """One soundtrack from the speakers' tracks: concatenated (one after the other) or mixed."""
    inputs = [arg for path in tracks for arg in ("-i", str(path))]
    labels = "".join(f"[{i}:a]" for i in range(len(tracks)))
    graph = (f"{labels}concat=n={len(tracks)}:v=0:a=1[out]" if sequence
             else f"{labels}amix=inputs={len(tracks)}:duration=longest:normalize=0[out]")
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *inputs,
               "-filter_complex", graph, "-map", "[out]", "-ac", "1", "-ar", "16000", "-f", "wav", str(target)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise TaskFailed("task execution failed (1403): the audio tracks could not be decoded")


def write_still_frame(image: bytes, target: Path, short_side: int) -> None:
    """The image as an RGB PNG no larger than the resolution asks, with even dimensions (yuv420p)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as opened:
            frame = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise TaskFailed("task execution failed (1403): the image could not be decoded") from exc
    width, height = frame.size
    scale = min(1.0, short_side / min(width, height), round(short_side * 16 / 9) / max(width, height))
    size = (max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2))
    if size != frame.size:
        frame = frame.resize(size, Image.Resampling.BILINEAR)
    frame.save(target, format="PNG", compress_level=1)


def audio_seconds(ffmpeg: str, path: Path) -> float:
    # ffmpeg -i without an output prints the streams and exits non-zero; that is expected.
    probe = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                           text=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=False).stderr
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", probe)
    if not re.search(r"Stream #.*Audio:", probe) or not duration:
        raise TaskFailed("task execution failed (1403): the audio could not be decoded")
    hours, minutes, seconds = duration.groups()
    total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if total <= 0:
        raise TaskFailed("task execution failed (1403): the audio is empty")
    return total


def render_video(ffmpeg: str, frame: Path, audio: Path, seconds: float, target: Path, *,
                 cancelled: threading.Event | None = None, tag: int = 0) -> None:
    """H.264 (yuv420p) of the still frame at the provider's frame rate, ``output_frames(seconds)``
    frames each stamped (``tag``, its number), + AAC of the audio. The frame is converted once and
    looped, and the fast AAC coder is used, so a 10-minute render at 16 fps takes seconds (the H.264
    encode dominates; bench/README.md). Setting ``cancelled`` stops ffmpeg (TaskFailed)."""
    fps = FRAMES_PER_SECOND
    frames = provider_facts.output_frames(seconds)
    video = (f"[0:v]format=yuv420p,loop=loop=-1:size=1,settb=1/{fps},setpts=N,{stamps.drawbox_filter(tag)},"
             f"trim=end_frame={frames}[v]")
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-i", str(frame), "-i", str(audio), "-filter_complex", video,
        "-map", "[v]", "-map", "1:a:0", "-r", str(fps),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k", "-movflags", "+faststart",
        "-f", "mp4", str(target),
    ]
    deadline = time.monotonic() + FFMPEG_TIMEOUT_SECONDS + seconds
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        while True:
            try:
                _, stderr = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                stop = "deleted while rendering" if cancelled is not None and cancelled.is_set() else (
                    "the render timed out" if time.monotonic() > deadline else "")
                if stop:
                    proc.kill()
                    proc.communicate()
                    raise TaskFailed(f"task execution failed (1403): {stop}") from None
    if proc.returncode != 0:
        reason = (stderr.strip().splitlines() or ["ffmpeg failed"])[-1][:200]
        raise TaskFailed(f"task execution failed (1403): {reason}")
