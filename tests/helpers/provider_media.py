"""Real inputs for the provider tests (a PNG from Pillow, a WAV from the ``wave`` module) and a
reader of what ffmpeg sees in an output."""

from __future__ import annotations

import io
import math
import re
import subprocess
import tempfile
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path


def png(width: int = 320, height: int = 400) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (205, 225, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.25, height * 0.15, width * 0.75, height * 0.65), fill=(236, 188, 150))
    draw.rectangle((width * 0.4, height * 0.45, width * 0.6, height * 0.5), fill=(170, 60, 70))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    """Mono 16-bit PCM: a 220 Hz tone that swells like syllables, ``seconds`` long."""
    frames = round(seconds * rate)
    samples = array("h", (round(9000 * math.sin(2 * math.pi * 220 * n / rate) * abs(math.sin(math.pi * 3 * n / rate)))
                          for n in range(frames)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as source:
        return source.getnframes() / source.getframerate()


@dataclass(frozen=True)
class Probe:
    video_codec: str
    audio_codec: str
    duration_seconds: float
    width: int
    height: int
    pixel_format: str


def probe(video: bytes | Path) -> Probe:
    """What ``ffmpeg -i`` prints about a file's streams and duration."""
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.mp4"
        if isinstance(video, bytes):
            path.write_bytes(video)
        else:
            path = video
        # ffmpeg -i without an output describes the input and exits non-zero; that is expected.
        text = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                              capture_output=True, text=True, timeout=60, check=False).stderr
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    video_stream = re.search(r"Stream #.*?Video: (\w+).*?, (yuv\w+|rgb\w+)[(,].*?(\d{2,5})x(\d{2,5})", text)
    audio_stream = re.search(r"Stream #.*?Audio: (\w+)", text)
    seconds = 0.0
    if duration:
        hours, minutes, secs = duration.groups()
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(secs)
    return Probe(
        video_codec=video_stream.group(1) if video_stream else "",
        audio_codec=audio_stream.group(1) if audio_stream else "",
        duration_seconds=seconds,
        width=int(video_stream.group(3)) if video_stream else 0,
        height=int(video_stream.group(4)) if video_stream else 0,
        pixel_format=video_stream.group(2) if video_stream else "",
    )
