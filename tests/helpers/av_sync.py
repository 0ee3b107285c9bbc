"""A/V sync for tests: how far a video's audio track sits from the original audio, by cross-correlation."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np

RATE = 16000  # both sides are decoded to mono at this rate by the same resampler: 62.5 us resolution


def decode_mono(media: Path | str, rate: int = RATE) -> np.ndarray:
    """The first audio stream as mono float32 samples at ``rate`` (edit lists and priming honoured)."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(media),
               "-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]
    raw = subprocess.run(command, check=True, capture_output=True, timeout=600).stdout
    return np.frombuffer(raw, dtype="<f4")


def lag_seconds(copy: np.ndarray, original: np.ndarray, at: float, *, window: float = 2.0,
                max_lag: float = 0.1, rate: int = RATE) -> float:
    """How late ``copy`` plays the original's audio around ``at`` seconds (negative: early): the lag
    of the cross-correlation peak of a ``window`` s stretch, searched within ± ``max_lag`` s."""
    half, reach = round(window * rate / 2), round(max_lag * rate)
    centre = min(max(round(at * rate), half + reach), len(original) - half - reach)
    reference = original[centre - half:centre + half].astype(np.float64)
    if not reference.any():
        raise ValueError(f"the original is silent around {at} s: no lag to measure there")
    stretch = copy[centre - half - reach:centre + half + reach].astype(np.float64)
    if len(stretch) < len(reference) + 2 * reach:
        raise ValueError(f"the copy is too short to measure at {at} s")
    size = 1 << (len(stretch) + len(reference)).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(stretch, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = correlation[:2 * reach + 1]  # index i: the copy's stretch starts i samples after the original's
    return (int(np.argmax(lags)) - reach) / rate


def lags(video: Path | str, original: Path | str, at: Sequence[float], **kwargs: float) -> list[float]:
    """``lag_seconds`` of ``video``'s audio against ``original`` at each time in ``at``."""
    copy, reference = decode_mono(video), decode_mono(original)
    return [lag_seconds(copy, reference, t, **kwargs) for t in at]
