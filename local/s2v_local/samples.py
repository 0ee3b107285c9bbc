"""Real sample files for the demo and the tests: a drawn portrait, speech-like audio, other encodings.

Everything is deterministic: the same call returns the same bytes, so tests can compare digests.
Pure Python plus Pillow; ``encode_audio`` shells out to the ffmpeg from the imageio-ffmpeg wheel
and is for tests and the demo only (the Lambda layer never imports this module).
"""

from __future__ import annotations

import io
import math
import random
import subprocess
import tempfile
import wave
from array import array
from functools import lru_cache
from pathlib import Path

# --- images -----------------------------------------------------------------------------------

SKIN, HAIR, SHIRT, BACKGROUND = (236, 188, 150), (70, 45, 30), (40, 90, 160), (205, 225, 240)


def portrait_png(width: int = 512, height: int = 512) -> bytes:
    """A head-and-shoulders cartoon face, centred and scaled to fit ``width`` × ``height``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    unit = min(width, height) / 100  # draw on a 100 × 100 grid centred in the canvas
    cx, cy = width / 2, height / 2

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (cx + x0 * unit, cy + y0 * unit, cx + x1 * unit, cy + y1 * unit)

    draw.rectangle(box(-9, 18, 9, 40), fill=SKIN)                      # neck
    draw.ellipse(box(-42, 34, 42, 94), fill=SHIRT)                     # shoulders
    draw.ellipse(box(-33, -44, 33, -2), fill=HAIR)                     # hair behind the head
    draw.ellipse(box(-31, -10, -23, 6), fill=SKIN)                     # ears
    draw.ellipse(box(23, -10, 31, 6), fill=SKIN)
    draw.ellipse(box(-25, -36, 25, 30), fill=SKIN)                     # face
    draw.chord(box(-27, -40, 27, -6), 180, 360, fill=HAIR)             # fringe
    for side in (-1, 1):
        x = 11 * side
        draw.ellipse(box(x - 7, -8, x + 7, 0), fill="white", outline=(60, 40, 30), width=max(1, round(unit / 2)))
        draw.ellipse(box(x - 3, -7, x + 3, -1), fill=(70, 110, 60))   # iris
        draw.ellipse(box(x - 1.3, -5.3, x + 1.3, -2.7), fill="black")  # pupil
        draw.line(box(x - 7 * side, -13, x + 8 * side, -15), fill=HAIR, width=max(1, round(unit * 1.5)))  # brow
    draw.polygon([(cx, cy + 0 * unit), (cx - 4 * unit, cy + 10 * unit), (cx + 2 * unit, cy + 11 * unit)],
                 fill=(214, 160, 125))                                 # nose
    draw.chord(box(-10, 12, 10, 22), 0, 180, fill=(170, 60, 70))       # mouth, lips parted
    draw.line(box(-10, 17, 10, 17), fill=(120, 30, 40), width=max(1, round(unit / 2)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_as(png: bytes, fmt: str) -> bytes:
    """Re-encode an image as ``png``, ``jpeg``, ``webp``, ``gif``, ``bmp`` or ``tiff``."""
    from PIL import Image

    pillow_format = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF",
                     "bmp": "BMP", "tiff": "TIFF"}.get(fmt.lower())
    if pillow_format is None:
        raise ValueError(f"cannot encode an image as {fmt!r}")
    with Image.open(io.BytesIO(png)) as image:
        converted = image.convert("RGB")
    buffer = io.BytesIO()
    converted.save(buffer, format=pillow_format)
    return buffer.getvalue()


# --- audio ------------------------------------------------------------------------------------

# (F1, F2, F3) in Hz of five vowels, with the bandwidths of those resonances.
VOWEL_FORMANTS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
                  "o": (570, 840, 2410), "u": (300, 870, 2240)}
FORMANT_BANDWIDTHS = (80, 100, 140)
# Syllables: (onset consonant noise or "", vowel, duration s, pitch at start Hz, pitch at end Hz).
SYLLABLES = (
    ("s", "a", 0.20, 132, 120), ("", "e", 0.16, 125, 118), ("t", "i", 0.14, 140, 128),
    ("", "o", 0.22, 120, 104), ("f", "u", 0.18, 118, 110), ("k", "a", 0.15, 136, 126),
    ("", "i", 0.12, 128, 124), ("s", "o", 0.19, 122, 112), ("t", "e", 0.17, 130, 116),
    ("", "a", 0.24, 124, 98),
)
# Words are runs of syllable indexes; the pause after each word is in seconds (longer ends a phrase).
WORDS = (((0, 1), 0.12), ((2, 3, 4), 0.20), ((5, 6), 0.10), ((7, 8, 9), 0.45),
         ((3, 0), 0.15), ((4, 2, 6), 0.18), ((8, 5), 0.12), ((1, 9), 0.50))
LEAD_IN_SECONDS = 0.10
PEAK = 0.6  # of full scale: loud enough to be clearly speech, with headroom


def speech_wav(seconds: float = 3.0, sample_rate: int = 16000) -> bytes:
    """Speech-like mono 16-bit WAV: voiced syllables (glottal pulses through formant resonators)
    grouped into words, with pauses. Not intelligible, but it has the rhythm, pitch and spectrum
    of speech, which is what lip-sync and silence detection look at."""
    total = round(seconds * sample_rate)
    bank = _syllable_bank(sample_rate)
    samples = array("h", bytes(2 * round(LEAD_IN_SECONDS * sample_rate)))
    word = 0
    while len(samples) < total:
        indexes, pause = WORDS[word % len(WORDS)]
        for n, index in enumerate(indexes):
            samples.extend(bank[index])
            if n < len(indexes) - 1:
                samples.extend(array("h", bytes(2 * round(0.03 * sample_rate))))
        samples.extend(array("h", bytes(2 * round(pause * sample_rate))))
        word += 1
    return _wav_bytes(samples[:total], sample_rate)


def silent_wav(seconds: float, sample_rate: int = 16000) -> bytes:
    """Digital silence, mono 16-bit."""
    return _wav_bytes(array("h", bytes(2 * round(seconds * sample_rate))), sample_rate)


def _wav_bytes(samples: array, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


@lru_cache(maxsize=4)
def _syllable_bank(sample_rate: int) -> tuple[array, ...]:
    # Each distinct syllable is synthesised once and reused, so long clips cost only copying.
    noise = random.Random(2024)  # noqa: S311 - fixed seed: deterministic test audio, not crypto
    return tuple(_syllable(sample_rate, noise, *spec) for spec in SYLLABLES)


def _syllable(rate: int, noise: random.Random, onset: str, vowel: str, duration: float,
              pitch_start: float, pitch_end: float) -> array:
    voiced = _formant_filter(_glottal_pulses(rate, duration, pitch_start, pitch_end), rate, VOWEL_FORMANTS[vowel])
    loudest = max(1e-9, max(abs(v) for v in voiced))
    sound = _consonant(rate, noise, onset) + _envelope([v / loudest for v in voiced], rate)
    return array("h", (round(max(-1.0, min(1.0, v)) * PEAK * 32767) for v in sound))


def _glottal_pulses(rate: int, duration: float, pitch_start: float, pitch_end: float) -> list[float]:
    """A Rosenberg-shaped glottal flow, differentiated (lip radiation), with a gliding pitch."""
    count = round(duration * rate)
    phase, previous, out = 0.0, 0.0, []
    for n in range(count):
        pitch = pitch_start + (pitch_end - pitch_start) * n / count
        phase = (phase + pitch / rate) % 1.0
        if phase < 0.4:
            flow = 0.5 * (1 - math.cos(math.pi * phase / 0.4))
        elif phase < 0.56:
            flow = math.cos(math.pi * (phase - 0.4) / 0.32)
        else:
            flow = 0.0
        out.append(flow - previous)
        previous = flow
    return out


def _formant_filter(source: list[float], rate: int, formants: tuple[int, int, int]) -> list[float]:
    """Klatt-style cascade of second-order resonators, one per formant."""
    signal = source
    for frequency, bandwidth in zip(formants, FORMANT_BANDWIDTHS, strict=True):
        c = -math.exp(-2 * math.pi * bandwidth / rate)
        b = 2 * math.exp(-math.pi * bandwidth / rate) * math.cos(2 * math.pi * frequency / rate)
        a = 1 - b - c
        y1 = y2 = 0.0
        filtered = []
        for x in signal:
            y = a * x + b * y1 + c * y2
            filtered.append(y)
            y1, y2 = y, y1
        signal = filtered
    return signal


def _envelope(signal: list[float], rate: int) -> list[float]:
    attack, release = round(0.025 * rate), round(0.06 * rate)
    n = len(signal)
    out = []
    for i, v in enumerate(signal):
        gain = min(1.0, i / attack, (n - i) / release)
        out.append(v * 0.5 * (1 - math.cos(math.pi * gain)))
    return out


def _consonant(rate: int, noise: random.Random, onset: str) -> list[float]:
    """A short burst of shaped noise: hiss for s/f, a click-like burst for t/k; nothing for a vowel."""
    if not onset:
        return []
    length = round((0.07 if onset in "sf" else 0.03) * rate)
    level = {"s": 0.2, "f": 0.08, "t": 0.3, "k": 0.25}[onset]
    previous, out = 0.0, []
    for i in range(length):
        white = noise.uniform(-1, 1)
        hiss = white - previous if onset == "s" else white  # differencing tilts "s" towards high pitch
        previous = white
        fade = math.sin(math.pi * i / length)
        out.append(hiss * level * fade)
    return out


# --- other audio encodings (tests and demo only) ----------------------------------------------

AUDIO_ENCODINGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", "-f", "ipod"],
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "3", "-f", "ogg"],
    "opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
}


def encode_audio(wav: bytes, fmt: str) -> bytes:
    """Re-encode a WAV as mp3, m4a, aac (ADTS), ogg (Vorbis), opus (Ogg Opus), flac or wav."""
    import imageio_ffmpeg

    if fmt not in AUDIO_ENCODINGS:
        raise ValueError(f"cannot encode audio as {fmt!r}; choose one of {', '.join(AUDIO_ENCODINGS)}")
    with tempfile.TemporaryDirectory(prefix="s2v-samples-") as tmp:
        source, target = Path(tmp) / "in.wav", Path(tmp) / f"out.{fmt}"
        source.write_bytes(wav)
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                   "-i", str(source), "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
                   *AUDIO_ENCODINGS[fmt], str(target)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode {fmt}: {proc.stderr.strip()}")
        return target.read_bytes()
