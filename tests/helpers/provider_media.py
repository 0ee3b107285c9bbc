"""Real inputs for the provider tests (a PNG from Pillow, a WAV from the ``wave`` module) and a
reader of what ffmpeg sees in an output."""

from __future__ import annotations

import io
import math
import tempfile
import wave
from array import array
from pathlib import Path

from s2v_local.probe import MediaProbe, probe_media


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


def probe(video: bytes | Path) -> MediaProbe:
    """What ``ffmpeg -i`` prints about a file's streams and duration (bytes or a path)."""
    if isinstance(video, Path):
        return probe_media(video)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.mp4"
        path.write_bytes(video)
        return probe_media(path)
