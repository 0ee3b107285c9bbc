"""What ffmpeg (from the imageio-ffmpeg wheel) sees in a media file: streams and duration."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MediaProbe:
    duration_seconds: float
    video_codec: str
    audio_codec: str
    width: int
    height: int
    pixel_format: str = ""

    @property
    def has_video(self) -> bool:
        return bool(self.video_codec)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codec)

    def describe(self) -> str:
        return (f"{self.duration_seconds:.2f} s, video {self.video_codec} {self.width}x{self.height}, "
                f"audio {self.audio_codec}")


def probe_media(path: Path | str) -> MediaProbe:
    import imageio_ffmpeg

    # ffmpeg -i with no output prints the container's streams and exits non-zero; that is expected.
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    text = proc.stderr
    duration = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    video = re.search(r"Stream #.*?Video: (\w+).*?, (yuv\w+|rgb\w+)?[(,]?.*?(\d{2,5})x(\d{2,5})", text)
    audio = re.search(r"Stream #.*?Audio: (\w+)", text)
    seconds = 0.0
    if duration:
        h, m, s = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(s)
    return MediaProbe(
        duration_seconds=seconds,
        video_codec=video.group(1) if video else "",
        audio_codec=audio.group(1) if audio else "",
        width=int(video.group(3)) if video else 0,
        height=int(video.group(4)) if video else 0,
        pixel_format=(video.group(2) or "") if video else "",
    )
