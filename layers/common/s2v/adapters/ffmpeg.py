"""ffmpeg for long talks: find the pauses, cut each segment's audio, stitch the segments' videos.

One binary does it all (no ffprobe: the Lambda layer and the imageio-ffmpeg wheel ship only ffmpeg),
always run without a shell, under a timeout, and failing with ``MediaToolError`` carrying the tail of
ffmpeg's stderr. Every output is written to a hidden file beside its target and renamed into place
only once complete, so a failed, killed or timed-out run never leaves a partial file at the path a
caller reads; sources are only ever read.

Timelines are in samples and frames, never in accumulated seconds:
- audio is measured, searched and cut on the decoded sample count (``asetpts=N/SR/TB``), so
  consecutive cuts at the same boundary share it exactly and the segments add up to the upload;
- the stitch gives each segment exactly ``frame_counts`` frames (its source frames, trimmed, or its
  last frame cloned), so every join sits within half a frame of its audio time however long the talk.

Two ways to make the talk's video, both muxing the original upload's audio once, encoded in one
pass (per-segment AAC would add encoder priming at every join):
- ``fit_segment`` + ``join`` (the default): each segment is fitted on its own as soon as it is
  rendered (its own invocation, in parallel with the other renders): trimmed or padded to its
  exact frame count and encoded as a raw H.264 stream with settings every fit of a talk shares.
  ``join`` then concatenates those streams byte for byte (each begins with its parameter sets and
  an IDR frame, no B-frames, so no timestamps to reconcile) and copies them into the MP4: the last
  step moves bytes instead of encoding an hour of video, so any talk fits one invocation.
- ``stitch``: one pass that decodes every segment into a single encoder; needed for a crossfade
  at the joins (it blends frames of two segments), so only short enough talks use it.
Memory stays flat whatever the length (one decoder, one encoder, a few frames each).
The output is a faststart MP4 written to disk, then uploaded by the caller in parts: every player
and editor handles it, its index gives the exact duration and seeking, and the cost is one copy on
local disk plus a sequential rewrite, small beside the encode (a fragmented MP4 could stream
straight to S3, but trades compatibility for an upload that the encode dominates anyway).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from s2v.model.errors import S2VError
from s2v.model.segments import MIN_PAUSE_SECONDS, Pause, Segment, frame_counts, parse_silencedetect

FFMPEG_ENV = "S2V_FFMPEG"
LAYER_FFMPEG = "/opt/bin/ffmpeg"  # the stitch function's layer (layers/ffmpeg)

# Silence threshold for pauses between phrases, measured on a minute of speech-like audio (words
# 0-30 dB below the loudest, white room noise; tests/integration/test_ffmpeg_media.py keeps the
# case): at -35 dBFS every pause of 0.3 s or more is found with noise floors up to -50 dBFS RMS and
# none falls inside a word. -40 dB misses every pause once the floor reaches -50 dBFS; -30 dB puts 4
# to 20 of 39 pauses inside soft words; ffmpeg's default -60 dB misses them all at a -60 dBFS floor.
PAUSE_NOISE_DB = -35.0
STDERR_TAIL_CHARS = 2000
PROBE_TIMEOUT_SECONDS = 60.0
# Decoding runs at hundreds of times real time; these bound a hung or pathological run.
SCAN_TIMEOUT_BASE_SECONDS = 60.0
SCAN_TIMEOUT_PER_AUDIO_SECOND = 0.05
# The stitch encodes every frame: allow real time x 2 plus a margin unless the caller says otherwise
# (a Lambda handler passes what remains of its own timeout).
STITCH_TIMEOUT_BASE_SECONDS = 120.0
STITCH_TIMEOUT_PER_OUTPUT_SECOND = 2.0
AUDIO_BITRATE = "192k"  # AAC at this rate is transparent for speech; the upload is encoded once
KEYFRAME_SECONDS = 4  # seeking granularity of the stitched video
# Memory of the 720p encode (bench figure 8): x264's frame threads and 10-frame lookahead each hold
# whole frames (~165 MB); slice threads, a 2-frame lookahead and 1 B-frame hold ~105 MB, for files
# within 3 % of the size. Threads are capped so a large Lambda does not multiply the buffers.
X264_PARAMS = "sliced-threads=1:rc-lookahead=2:bframes=1"
# A fit has no B-frames: frames are stored in display order, so raw streams join without timestamps.
FIT_X264_PARAMS = "sliced-threads=1:rc-lookahead=2:bframes=0"
FIT_SUFFIX = ".h264"
JOIN_CHUNK_BYTES = 1 << 20  # a fitted segment: raw H.264 (Annex B), parameter sets in-band
# Fitting encodes every frame of one segment (at most one call's 10 minutes): real time x 2 + a margin.
FIT_TIMEOUT_BASE_SECONDS = 60.0
FIT_TIMEOUT_PER_SECOND = 2.0
# Joining copies the video and encodes only the audio (hundreds of times real time).
JOIN_TIMEOUT_BASE_SECONDS = 120.0
JOIN_TIMEOUT_PER_SECOND = 0.1
MAX_ENCODER_THREADS = 4
FRAME_QUEUE = 2  # raw frames queued between ffmpeg's threads (default 8: ~11 MB more per queue at 720p)


class MediaToolError(S2VError):
    """ffmpeg could not do what was asked. ``stderr_tail`` is the end of what it said."""

    def __init__(self, message: str, *, stderr_tail: str = "") -> None:
        super().__init__(f"{message}: {stderr_tail}" if stderr_tail else message)
        self.stderr_tail = stderr_tail


class StitchError(MediaToolError):
    """The segments could not be stitched; nothing was written at the output path."""


class MediaTimeout(StitchError):
    """A fit, join or stitch ran out of the time it was given: trying again may succeed."""


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: str  # ffmpeg's layout name: mono, stereo, 5.1 ...
    sample_format: str  # s16, s32, fltp ...


@dataclass(frozen=True)
class AudioScan:
    """What one decoding pass learns about a talk: exact length and the pauses in it."""

    info: AudioInfo
    samples: int
    pauses: list[Pause]

    @property
    def seconds(self) -> float:
        return self.samples / self.info.sample_rate


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float | None  # None when ffmpeg states no rate


@dataclass(frozen=True)
class SegmentVideo:
    """A rendered segment (a local path or an http(s) URL ffmpeg can read) and the span of the
    talk's audio it was rendered from, in seconds on the talk's timeline."""

    source: str | Path
    start: float
    end: float


@dataclass(frozen=True)
class StitchReport:
    frames: int
    fps: float
    width: int
    height: int
    segment_frames: list[int]  # frames each segment contributes, in order
    crossfade_frames: int
    elapsed_seconds: float
    out_bytes: int
    audio_codec: str = "aac"
    notes: list[str] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.fps


@dataclass(frozen=True)
class FitReport:
    frames: int
    width: int
    height: int
    out_bytes: int
    elapsed_seconds: float


@dataclass(frozen=True)
class FittedSegment:
    """A fitted segment to join: its exact frame count, its size, and how to read its bytes (a file
    or an object store stream, read once, in order)."""

    frames: int
    width: int
    height: int
    open: Callable[[], IO[bytes]]


# ---------------------------------------------------------------------------------- the binary

def ffmpeg_exe() -> str:
    """``$S2V_FFMPEG``, else the layer's ``/opt/bin/ffmpeg``, else the imageio-ffmpeg wheel's binary."""
    configured = os.environ.get(FFMPEG_ENV, "").strip()
    if configured:
        return configured
    if os.access(LAYER_FFMPEG, os.X_OK):
        return LAYER_FFMPEG
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MediaToolError(f"no ffmpeg found: set {FFMPEG_ENV}, attach the ffmpeg layer ({LAYER_FFMPEG}) "
                             "or install imageio-ffmpeg") from None
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _tail(text: str) -> str:
    return text.strip()[-STDERR_TAIL_CHARS:]


def _run(args: Sequence[str], *, timeout: float, doing: str) -> str:
    """Runs ffmpeg with ``args``; returns its stderr (where ffmpeg reports what it found)."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", *args]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaToolError(f"ffmpeg timed out after {timeout:.0f} s {doing}",
                             stderr_tail=_tail((exc.stderr or b"").decode(errors="replace"))) from None
    except OSError as exc:
        raise MediaToolError(f"could not start ffmpeg ({command[0]}) {doing}: {exc}") from None
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise MediaToolError(f"ffmpeg failed {doing} (exit {done.returncode})", stderr_tail=_tail(stderr))
    return stderr


def _partial_path(target: Path) -> Path:
    """A hidden sibling to write into; renamed over ``target`` only when complete."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


# ---------------------------------------------------------------------------------- audio

_AUDIO_STREAM = re.compile(r"Stream #0:\d+[^:]*: Audio: (\w+)[^,]*, (\d+) Hz, ([^,]+), (\w+)")
_SAMPLES = re.compile(r"n_samples: (\d+)")


def scan_audio(path: str | Path, *, noise_db: float = PAUSE_NOISE_DB,
               min_pause: float = MIN_PAUSE_SECONDS) -> AudioScan:
    """Decode ``path`` once: its exact length in samples and its pauses (``silencedetect``: at least
    ``min_pause`` s below ``noise_db`` dBFS on every channel)."""
    if min_pause <= 0:
        raise ValueError("min_pause must be positive")
    stderr = _run(["-i", str(path), "-map", "0:a:0", "-af",
                   f"asetpts=N/SR/TB,silencedetect=noise={noise_db}dB:duration={min_pause},"
                   "aformat=channel_layouts=mono,volumedetect", "-f", "null", "-"],
                  timeout=_scan_timeout(path), doing=f"scanning {Path(str(path)).name}")
    return AudioScan(info=_audio_info(stderr, path), samples=_sample_count(stderr, path),
                     pauses=parse_silencedetect(stderr))


def detect_pauses(audio_path: str | Path, *, noise_db: float = PAUSE_NOISE_DB,
                  min_pause: float = MIN_PAUSE_SECONDS) -> list[Pause]:
    """The pauses of at least ``min_pause`` seconds in a talk (see ``PAUSE_NOISE_DB`` for the threshold)."""
    return scan_audio(audio_path, noise_db=noise_db, min_pause=min_pause).pauses


def probe_audio_seconds(path: str | Path) -> float:
    """The audio's exact length: decoded samples / sample rate (not a header's estimate)."""
    stderr = _run(["-i", str(path), "-map", "0:a:0", "-af", "aformat=channel_layouts=mono,volumedetect",
                   "-f", "null", "-"], timeout=_scan_timeout(path), doing=f"measuring {Path(str(path)).name}")
    return _sample_count(stderr, path) / _audio_info(stderr, path).sample_rate


def probe_audio(path: str | Path) -> AudioInfo:
    """Codec, rate, layout and sample format of the first audio stream (from the header, no decoding)."""
    return _audio_info(_header(path), path)


def cut_audio(src: str | Path, start_s: float, end_s: float, dst: str | Path) -> None:
    """Write samples [round(start_s × rate), round(end_s × rate)) of ``src`` to ``dst``: FLAC for a
    ``.flac`` name, PCM WAV for ``.wav``, both lossless at the source's rate, channels and depth
    (float sources become 24-bit in FLAC, which has no float). Cuts at the same boundary share it to
    the sample. An end past the audio's end stops at the end. ``src`` is only read."""
    src_path, dst_path = Path(src), Path(dst)
    if not 0 <= start_s < end_s:
        raise ValueError(f"need 0 <= start < end, got {start_s}..{end_s}")
    if _same_file(src_path, dst_path):
        raise ValueError("cut_audio never writes over its source")
    kind = dst_path.suffix.lower()
    info = probe_audio(src_path)
    if kind == ".flac":
        codec = ["-c:a", "flac", "-sample_fmt", "s16" if info.sample_format.startswith(("s16", "u8")) else "s32"]
        muxer = "flac"
    elif kind == ".wav":
        codec = ["-c:a", _pcm_codec(info.sample_format)]
        muxer = "wav"
    else:
        raise ValueError(f"cut_audio writes .flac or .wav, not {dst_path.name!r}")
    first, last = round(start_s * info.sample_rate), round(end_s * info.sample_rate)
    partial = _partial_path(dst_path)
    try:
        _run(["-i", str(src_path), "-map", "0:a:0", "-map_metadata", "-1", "-af",
              f"asetpts=N/SR/TB,atrim=start_sample={first}:end_sample={last},asetpts=PTS-STARTPTS",
              *codec, "-f", muxer, "-y", str(partial)],
             timeout=_scan_timeout(src_path), doing=f"cutting {src_path.name} at {start_s:.3f}-{end_s:.3f} s")
        os.replace(partial, dst_path)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class DecodedTrack:
    """A talk's track decoded once to PCM WAV (RF64 past 4 GiB) in its own sample format: a cut
    then reads only its own samples, so cutting a talk is linear in its length (cutting the
    upload itself decodes from its start for every cut: quadratic)."""

    path: Path
    sample_rate: int
    block_align: int  # bytes per frame (all channels)
    data_offset: int
    frames: int
    fmt_chunk: bytes  # the 'fmt ' chunk as ffmpeg wrote it (header included): each piece's format


def decode_track(src: str | Path, dst: str | Path) -> DecodedTrack:
    """Decode ``src`` once to the PCM WAV ``dst``, every sample in order (as ``cut_audio`` counts them)."""
    src_path, dst_path = Path(src), Path(dst)
    if _same_file(src_path, dst_path) or dst_path.suffix.lower() != ".wav":
        raise ValueError("decode_track writes a new .wav file")
    info = probe_audio(src_path)
    partial = _partial_path(dst_path)
    try:
        _run(["-i", str(src_path), "-map", "0:a:0", "-map_metadata", "-1", "-af", "asetpts=N/SR/TB",
              "-c:a", _pcm_codec(info.sample_format), "-rf64", "auto", "-f", "wav", "-y", str(partial)],
             timeout=_scan_timeout(src_path), doing=f"decoding {src_path.name}")
        os.replace(partial, dst_path)
    finally:
        partial.unlink(missing_ok=True)
    return _decoded_layout(dst_path)


def _decoded_layout(path: Path) -> DecodedTrack:
    size = path.stat().st_size
    with path.open("rb") as wav:
        head = wav.read(64 * 1024)
    pos, fmt_chunk = 12, b""
    while pos + 8 <= len(head):
        name, length = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if name == b"fmt ":
            fmt_chunk = head[pos:pos + 8 + length + (length & 1)]
        if name == b"data":  # ffmpeg writes it last; in RF64 its size field is a placeholder
            if len(fmt_chunk) < 24:
                break
            rate, align = struct.unpack("<I", fmt_chunk[12:16])[0], struct.unpack("<H", fmt_chunk[20:22])[0]
            if not align:
                break
            return DecodedTrack(path=path, sample_rate=rate, block_align=align, data_offset=pos + 8,
                                frames=(size - pos - 8) // align, fmt_chunk=fmt_chunk)
        pos += 8 + length + (length & 1)
    raise MediaToolError(f"{path.name}: ffmpeg wrote no PCM data")


def cut_decoded(track: DecodedTrack, start_s: float, end_s: float, dst: str | Path) -> None:
    """``cut_audio`` from a decoded track: samples [round(start_s × rate), round(end_s × rate)) are
    copied into a WAV piece (reading only them), which is encoded like any cut."""
    if not 0 <= start_s < end_s:
        raise ValueError(f"need 0 <= start < end, got {start_s}..{end_s}")
    dst_path = Path(dst)
    first = round(start_s * track.sample_rate)
    last = min(round(end_s * track.sample_rate), track.frames)
    if last <= first:
        raise ValueError(f"{start_s:.3f} s is past the end of {track.path.name}")
    length = (last - first) * track.block_align
    piece = dst_path.with_name(f".{dst_path.name}.{uuid.uuid4().hex[:8]}.piece.wav")
    try:
        with track.path.open("rb") as source, piece.open("wb") as out:
            out.write(b"RIFF" + struct.pack("<I", 4 + len(track.fmt_chunk) + 8 + length) + b"WAVE"
                      + track.fmt_chunk + b"data" + struct.pack("<I", length))
            source.seek(track.data_offset + first * track.block_align)
            left = length
            while left > 0:
                chunk = source.read(min(left, 1024 * 1024))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
        cut_audio(piece, 0.0, (last - first) / track.sample_rate, dst_path)
    finally:
        piece.unlink(missing_ok=True)


def _flac_codec(info: AudioInfo) -> list[str]:
    return ["-c:a", "flac", "-sample_fmt", "s16" if info.sample_format.startswith(("s16", "u8")) else "s32"]


def pad_audio(src: str | Path, seconds: float, dst: str | Path) -> None:
    """Write ``src`` followed by silence to exactly round(``seconds`` × rate) samples, as FLAC at the
    source's rate and channels: a track laid on a longer timeline. ``src`` is only read."""
    src_path, dst_path = Path(src), Path(dst)
    if _same_file(src_path, dst_path) or dst_path.suffix.lower() != ".flac":
        raise ValueError("pad_audio writes a new .flac file")
    info = probe_audio(src_path)
    total = round(seconds * info.sample_rate)
    partial = _partial_path(dst_path)
    try:
        _run(["-i", str(src_path), "-map", "0:a:0", "-map_metadata", "-1", "-af",
              f"asetpts=N/SR/TB,apad=whole_len={total},atrim=end_sample={total}", *_flac_codec(info),
              "-f", "flac", "-y", str(partial)],
             timeout=_scan_timeout(src_path), doing=f"laying {src_path.name} on a {seconds:.3f} s timeline")
        os.replace(partial, dst_path)
    finally:
        partial.unlink(missing_ok=True)


def mix_audio(sources: Sequence[str | Path], dst: str | Path) -> None:
    """Mix tracks that share one timeline into one FLAC track (each at its own level, as long as the
    longest): what two speakers talking in one video sound like together."""
    paths, dst_path = [Path(src) for src in sources], Path(dst)
    if not paths or any(_same_file(p, dst_path) for p in paths) or dst_path.suffix.lower() != ".flac":
        raise ValueError("mix_audio writes a new .flac file from one or more tracks")
    info = probe_audio(paths[0])
    inputs = [arg for path in paths for arg in ("-i", str(path))]
    labels = "".join(f"[{i}:a:0]" for i in range(len(paths)))
    partial = _partial_path(dst_path)
    try:
        _run([*inputs, "-map_metadata", "-1", "-filter_complex",
              f"{labels}amix=inputs={len(paths)}:duration=longest:normalize=0[mix]", "-map", "[mix]",
              "-ar", str(info.sample_rate), *_flac_codec(info), "-f", "flac", "-y", str(partial)],
             timeout=sum(_scan_timeout(p) for p in paths), doing=f"mixing {len(paths)} tracks")
        os.replace(partial, dst_path)
    finally:
        partial.unlink(missing_ok=True)


def _pcm_codec(sample_format: str) -> str:
    base = sample_format.rstrip("p")
    return {"u8": "pcm_u8", "s16": "pcm_s16le", "s32": "pcm_s32le", "s64": "pcm_s32le",
            "flt": "pcm_f32le", "dbl": "pcm_f64le"}.get(base, "pcm_s32le")


def _header(path: str | Path) -> str:
    # ffmpeg -i with no output lists the streams, then exits 1 ("At least one output file must be
    # specified"): that is expected, so this reads stderr whatever the exit code.
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise MediaToolError(f"ffmpeg timed out reading {Path(str(path)).name}") from None
    except OSError as exc:
        raise MediaToolError(f"could not start ffmpeg ({command[0]}): {exc}") from None
    return done.stderr.decode(errors="replace")


def _audio_info(stderr: str, path: str | Path) -> AudioInfo:
    found = _AUDIO_STREAM.search(stderr)
    if not found:
        raise MediaToolError(f"{Path(str(path)).name} has no audio ffmpeg can decode", stderr_tail=_tail(stderr))
    codec, rate, channels, sample_format = found.groups()
    return AudioInfo(codec=codec, sample_rate=int(rate), channels=channels.strip(), sample_format=sample_format)


def _sample_count(stderr: str, path: str | Path) -> int:
    found = _SAMPLES.findall(stderr)
    if not found or int(found[-1]) == 0:
        raise MediaToolError(f"{Path(str(path)).name} decodes to no audio samples", stderr_tail=_tail(stderr))
    return int(found[-1])


def _scan_timeout(path: str | Path) -> float:
    # A size-based bound needs no probing: even 8 kbit/s audio is 1 KB per second.
    try:
        size = Path(str(path)).stat().st_size
    except OSError:
        size = 0
    return SCAN_TIMEOUT_BASE_SECONDS + SCAN_TIMEOUT_PER_AUDIO_SECOND * size / 1000


# ---------------------------------------------------------------------------------- video

_VIDEO_STREAM = re.compile(r"Stream #0:\d+[^:]*: Video: .*?, (\d{1,5})x(\d{1,5})[ ,]")
_FPS = re.compile(r"Stream #0:\d+[^:]*: Video: .*?, ([\d.]+)(k?) fps")


def probe_video(source: str | Path) -> VideoInfo:
    """Size and stated frame rate of the first video stream (from the header, no decoding)."""
    stderr = _header(source)
    size = _VIDEO_STREAM.search(stderr)
    if not size:
        raise MediaToolError(f"{Path(str(source)).name} has no video ffmpeg can read", stderr_tail=_tail(stderr))
    rate = _FPS.search(stderr)
    fps = float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else None
    return VideoInfo(width=int(size.group(1)), height=int(size.group(2)), fps=fps)


def stitch(segments: Sequence[SegmentVideo], audio_path: str | Path, out_path: str | Path, *, fps: float,
           crossfade_ms: float = 0, preset: str = "veryfast", crf: int = 20,
           timeout_s: float | None = None) -> StitchReport:
    """One MP4 of the segments' videos over the original ``audio_path``.

    Segment k contributes exactly ``frame_counts(...)[k]`` frames at ``fps``: its own frames (at
    ``fps``, scaled to the first segment's size), trimmed when it is longer, its last frame repeated
    when it is shorter. ``crossfade_ms`` > 0 fades from the previous segment's last frame into each
    next segment over that long after the join (a cut at a pause is silent on both sides); no frame
    is added or removed, so sync is unchanged. The audio is the upload itself, encoded once to AAC.
    On any failure a ``StitchError`` says why and nothing is left at ``out_path``."""
    started = time.monotonic()
    if not segments:
        raise ValueError("nothing to stitch")
    if fps <= 0:
        raise ValueError("fps must be positive")
    _check_contiguous(segments)
    out = Path(out_path)
    audio = Path(audio_path)
    if _same_file(audio, out) or any(_same_file(Path(str(s.source)), out) for s in segments):
        raise ValueError("stitch never writes over one of its inputs")
    counts = frame_counts([Segment(i, s.start, s.end, "") for i, s in enumerate(segments)], fps)
    if min(counts) < 1:
        raise ValueError(f"segment {counts.index(min(counts))} is shorter than one frame at {fps:g} fps")
    first = probe_video(segments[0].source)
    width, height = first.width // 2 * 2, first.height // 2 * 2  # yuv420p needs even sides
    fade = max(0, round(crossfade_ms / 1000 * fps))
    deadline = started + (timeout_s if timeout_s is not None else
                          STITCH_TIMEOUT_BASE_SECONDS + STITCH_TIMEOUT_PER_OUTPUT_SECOND * segments[-1].end)
    partial = _partial_path(out)
    with tempfile.TemporaryDirectory(prefix="s2v-stitch-") as work_dir:
        work = Path(work_dir)
        try:
            _encode(segments, counts, audio, partial, work, fps=fps, size=(width, height), fade=fade,
                    preset=preset, crf=crf, deadline=deadline)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return StitchReport(frames=sum(counts), fps=fps, width=width, height=height, segment_frames=counts,
                        crossfade_frames=fade, elapsed_seconds=time.monotonic() - started,
                        out_bytes=out.stat().st_size)


def fit_segment(source: str | Path, frames: int, out_path: str | Path, *, fps: float,
                size: tuple[int, int] | None = None, preset: str = "veryfast", crf: int = 20,
                timeout_s: float | None = None) -> FitReport:
    """``source`` made exactly ``frames`` frames at ``fps`` (resampled; trimmed when longer, its last
    frame repeated when shorter), scaled to ``size`` (default: its own, rounded down to even sides),
    written to ``out_path`` as raw H.264 that ``join`` can concatenate with the talk's other fits.
    No audio: the talk's audio is muxed once, by ``join``. Nothing is left at ``out_path`` on failure."""
    started = time.monotonic()
    if frames < 1:
        raise ValueError("a fitted segment has at least one frame")
    if fps <= 0:
        raise ValueError("fps must be positive")
    out = Path(out_path)
    if _same_file(Path(str(source)), out):
        raise ValueError("a fit never writes over its source")
    if size is None:
        info = probe_video(source)
        size = (info.width // 2 * 2, info.height // 2 * 2)  # yuv420p needs even sides
    width, height = size
    rate = f"{fps:g}"
    deadline = started + (timeout_s if timeout_s is not None else
                          FIT_TIMEOUT_BASE_SECONDS + FIT_TIMEOUT_PER_SECOND * frames / fps)
    partial = _partial_path(out)
    with tempfile.TemporaryDirectory(prefix="s2v-fit-") as work_dir:
        progress = Path(work_dir) / "fit.progress"
        command = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", str(progress),
            "-threads", "1", "-thread_queue_size", str(FRAME_QUEUE), "-i", str(source),
            "-filter_complex", f"[0:v:0]{_fit_filter(rate, width, height, frames)}[v]", "-map", "[v]", "-an",
            "-fps_mode", "passthrough", *_fit_encoder(preset, crf, fps), "-f", "h264", "-y", str(partial)]
        try:
            try:
                done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, timeout=_left(deadline), check=False)
            except subprocess.TimeoutExpired:
                raise MediaTimeout(f"timed out fitting {Path(str(source)).name}") from None
            except OSError as exc:
                raise StitchError(f"could not start ffmpeg ({command[0]}): {exc}") from None
            if done.returncode != 0:
                raise StitchError(f"could not fit {Path(str(source)).name} (exit {done.returncode})",
                                  stderr_tail=_tail(done.stderr.decode(errors="replace")))
            written = _progress_frames(progress)
            if written != frames:
                raise StitchError(f"the fit wrote {written} frames, expected {frames}")
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return FitReport(frames=frames, width=width, height=height, out_bytes=out.stat().st_size,
                     elapsed_seconds=time.monotonic() - started)


def join(fitted: Sequence[FittedSegment], audio_path: str | Path, out_path: str | Path, *, fps: float,
         timeout_s: float | None = None) -> StitchReport:
    """One faststart MP4 of the fitted segments' video (copied, not encoded again) over the original
    ``audio_path`` (encoded once to AAC). The fits must share one size (they come from one talk's
    ``fit_segment`` with the same settings). Nothing is left at ``out_path`` on failure."""
    started = time.monotonic()
    if not fitted:
        raise ValueError("nothing to join")
    if fps <= 0:
        raise ValueError("fps must be positive")
    sizes = {(f.width, f.height) for f in fitted}
    if len(sizes) > 1:
        raise ValueError(f"fitted segments of different sizes cannot be joined: {sorted(sizes)}")
    out, audio = Path(out_path), Path(audio_path)
    if _same_file(audio, out):
        raise ValueError("join never writes over its audio")
    frames = sum(f.frames for f in fitted)
    deadline = started + (timeout_s if timeout_s is not None else
                          JOIN_TIMEOUT_BASE_SECONDS + JOIN_TIMEOUT_PER_SECOND * frames / fps)
    partial = _partial_path(out)
    with tempfile.TemporaryDirectory(prefix="s2v-join-") as work_dir:
        progress, log_path = Path(work_dir) / "join.progress", Path(work_dir) / "join.log"
        command = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", str(progress),
            # Raw H.264 has no timestamps: the frame rate gives each frame its time, in order.
            "-fflags", "+genpts", "-f", "h264", "-framerate", f"{fps:g}", "-i", "pipe:0", "-i", str(audio),
            "-map", "0:v:0", "-map", "1:a:0", "-map_metadata", "-1", "-c:v", "copy",
            "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-movflags", "+faststart", "-f", "mp4", "-y", str(partial)]
        try:
            with log_path.open("wb") as log:
                try:
                    muxer = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
                except OSError as exc:
                    raise StitchError(f"could not start ffmpeg ({command[0]}): {exc}") from None
            _feed(muxer, fitted, deadline, log_path)
            written = _progress_frames(progress)
            if written != frames:
                raise StitchError(f"the join wrote {written} frames, expected {frames}",
                                  stderr_tail=_tail(log_path.read_text(errors="replace")))
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    first = fitted[0]
    return StitchReport(frames=frames, fps=fps, width=first.width, height=first.height,
                        segment_frames=[f.frames for f in fitted], crossfade_frames=0,
                        elapsed_seconds=time.monotonic() - started, out_bytes=out.stat().st_size,
                        notes=["segments fitted one by one as they rendered, joined without encoding again"])


def _feed(muxer: subprocess.Popen[bytes], fitted: Sequence[FittedSegment], deadline: float, log_path: Path) -> None:
    """Writes every fit's bytes, in order, into the muxer's stdin, then waits for it to finish."""
    assert muxer.stdin is not None
    try:
        for index, piece in enumerate(fitted):
            _left(deadline)
            with piece.open() as stream:
                try:
                    shutil.copyfileobj(stream, muxer.stdin, JOIN_CHUNK_BYTES)
                except BrokenPipeError:
                    raise StitchError(f"the muxer stopped while reading segment {index}",
                                      stderr_tail=_tail(log_path.read_text(errors="replace"))) from None
        _finish(muxer, log_path, deadline, doing="joining the segments", who="the join")
    finally:
        if muxer.poll() is None:
            muxer.kill()
        muxer.wait()
        if not muxer.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # the muxer died with bytes unread
                muxer.stdin.close()


def _finish(process: subprocess.Popen[bytes], log_path: Path, deadline: float, *, doing: str, who: str) -> None:
    """Close ``process``'s input and wait for it to end in time; a failure carries its log's tail."""
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(timeout=_left(deadline))
    except subprocess.TimeoutExpired:
        raise MediaTimeout(f"timed out {doing}") from None
    if process.returncode != 0:
        raise StitchError(f"{who} failed (exit {process.returncode})",
                          stderr_tail=_tail(log_path.read_text(errors="replace")))


def _fit_filter(rate: str, width: int, height: int, frames: int) -> str:
    """Resample to ``rate``, scale, repeat the last frame as long as needed, keep the first ``frames``."""
    return (f"fps={rate},scale={width}:{height},format=yuv420p,setsar=1,"
            f"tpad=stop=-1:stop_mode=clone,trim=end_frame={frames},setpts=N/({rate}*TB)")


def _fit_encoder(preset: str, crf: int, fps: float) -> list[str]:
    """Settings every fit of a talk shares, so their parameter sets match and they join byte for byte."""
    return ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", "-profile:v", "high",
            "-threads", str(min(MAX_ENCODER_THREADS, os.cpu_count() or 1)), "-x264-params", FIT_X264_PARAMS,
            "-g", str(max(1, round(KEYFRAME_SECONDS * fps)))]


def _check_contiguous(segments: Sequence[SegmentVideo]) -> None:
    if abs(segments[0].start) > 1e-9:
        raise ValueError(f"the first segment must start at 0 s, not {segments[0].start}")
    for before, after in itertools.pairwise(segments):
        if abs(after.start - before.end) > 1e-9:
            raise ValueError(f"segments must follow each other: one ends at {before.end} s, "
                             f"the next starts at {after.start} s")
    for s in segments:
        if s.end <= s.start:
            raise ValueError(f"segment {s.start}..{s.end} s is empty")


def _encode(segments: Sequence[SegmentVideo], counts: Sequence[int], audio: Path, target: Path, work: Path, *,
            fps: float, size: tuple[int, int], fade: int, preset: str, crf: int, deadline: float) -> None:
    """Decoders, one per segment in turn, write raw frames into one encoder's stdin."""
    width, height = size
    rate = f"{fps:g}"
    progress = work / "encoder.progress"
    encoder_log = work / "encoder.log"
    encoder_cmd = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", str(progress),
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", f"{width}x{height}", "-framerate", rate,
        "-thread_queue_size", str(FRAME_QUEUE), "-i", "pipe:0", "-i", str(audio),
        "-map", "0:v:0", "-map", "1:a:0", "-map_metadata", "-1", "-fps_mode", "passthrough",
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-threads", str(min(MAX_ENCODER_THREADS, os.cpu_count() or 1)), "-x264-params", X264_PARAMS,
        "-g", str(max(1, round(KEYFRAME_SECONDS * fps))),
        "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-movflags", "+faststart", "-f", "mp4", "-y", str(target),
    ]
    with encoder_log.open("wb") as log:
        try:
            encoder = subprocess.Popen(encoder_cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        except OSError as exc:
            raise StitchError(f"could not start ffmpeg ({encoder_cmd[0]}): {exc}") from None
    assert encoder.stdin is not None
    try:
        held: Path | None = None
        for index, (segment, frames) in enumerate(zip(segments, counts, strict=True)):
            last = work / f"last-{index}.yuv" if fade and index < len(segments) - 1 else None
            command = _decoder_command(segment.source, frames, rate=rate, size=size,
                                       fade=min(fade, frames - 1) if held else 0, held=held, last=last)
            try:
                decoder = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=encoder.stdin,
                                         stderr=subprocess.PIPE, timeout=_left(deadline), check=False)
            except subprocess.TimeoutExpired:
                raise StitchError(f"timed out decoding segment {index} ({segment.start:.3f}-{segment.end:.3f} s)") \
                    from None
            if decoder.returncode != 0:
                if encoder.poll() is not None:  # the encoder died first: its reason is the real one
                    raise StitchError("the encoder failed", stderr_tail=_tail(encoder_log.read_text(errors="replace")))
                raise StitchError(f"could not decode segment {index} ({segment.start:.3f}-{segment.end:.3f} s, "
                                  f"{segment.source})", stderr_tail=_tail(decoder.stderr.decode(errors="replace")))
            held = last
        _finish(encoder, encoder_log, deadline, doing="encoding the stitched video", who="the encoder")
        encoded = _progress_frames(progress)
        if encoded != sum(counts):
            raise StitchError(f"the encoder wrote {encoded} frames, expected {sum(counts)}",
                              stderr_tail=_tail(encoder_log.read_text(errors="replace")))
    finally:
        if encoder.poll() is None:
            encoder.kill()
        encoder.wait()
        if not encoder.stdin.closed:
            encoder.stdin.close()


def _decoder_command(source: str | Path, frames: int, *, rate: str, size: tuple[int, int], fade: int,
                     held: Path | None, last: Path | None) -> list[str]:
    """ffmpeg writing exactly ``frames`` raw yuv420p frames of ``source`` to stdout: resampled to
    ``rate``, scaled, its last frame cloned as long as needed, cut after ``frames``. With ``fade``,
    its first ``fade`` frames blend from ``held`` (the previous segment's last frame) into it. With
    ``last``, its own last frame is also written there (for the next segment's fade)."""
    width, height = size
    # One decoding thread: decoding is a fraction of the encode, and each thread holds its own frames.
    inputs = ["-threads", "1", "-thread_queue_size", str(FRAME_QUEUE), "-i", str(source)]
    graph = f"[0:v:0]{_fit_filter(rate, width, height, frames)}"
    if fade and held is not None:
        inputs += ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", f"{width}x{height}", "-framerate", rate,
                   "-i", str(held)]
        graph += (f",split[head][body];[head]trim=end_frame={fade}[in];"
                  f"[body]trim=start_frame={fade},setpts=PTS-STARTPTS[rest];"
                  f"[1:v]loop=loop={fade - 1}:size=1,setpts=N/({rate}*TB)[out];"
                  # frame i of the fade shows (i + 1) / (fade + 1) of the new segment
                  f"[out][in]blend=all_expr='A+(B-A)*(round(T*{rate})+1)/{fade + 1}'[mixed];"
                  f"[mixed][rest]concat=n=2:v=1:a=0,setpts=N/({rate}*TB)")
    outputs = []
    if last is not None:
        graph += f",split[v][tail];[tail]trim=start_frame={frames - 1}[last]"
        outputs = ["-map", "[last]", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p",
                   "-y", str(last)]
    else:
        graph += "[v]"
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", *inputs,
            "-filter_complex", graph, "-map", "[v]", "-an", "-fps_mode", "passthrough",
            "-thread_queue_size", str(FRAME_QUEUE),
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1", *outputs]


def _progress_frames(progress: Path) -> int:
    try:
        found = re.findall(r"^frame=(\d+)$", progress.read_text(), re.MULTILINE)
    except OSError:
        return -1
    return int(found[-1]) if found else -1


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise MediaTimeout("the stitch ran out of time")
    return left
