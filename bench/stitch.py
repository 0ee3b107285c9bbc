"""Figure 8: the long-form stitch, as it runs: each segment fitted on its own as it renders (in
parallel, one invocation each), then one join of the fits over the talk's audio. Time per output
minute and peak memory (the whole process tree: Python and ffmpeg) of a fit and of the join of an
hour of 720p at the provider's 16 fps, next to a plain ``ffmpeg -c copy`` concat of the same
renders in the same run (the baseline, which cannot fit frames to spans or carry the original
audio, but shows what merely moving the bytes costs).

The segments are one 2-minute 720p render reused (ffmpeg's moving ``testsrc2`` picture, stamped:
a still portrait would flatter the encoder), so the hour has 30 joins. The audio is a generated
talk, muxed once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import PATHS, ROOT

SEGMENT_SECONDS = 120
SIZE = "1280x720"

FIT = """
import sys
sys.path[:0] = {paths!r}
from s2v.adapters.ffmpeg import fit_segment
report = fit_segment({video!r}, {frames}, {out!r}, fps={fps})
print(report.frames, report.out_bytes)
"""

JOIN = """
import sys
from pathlib import Path
sys.path[:0] = {paths!r}
from s2v.adapters.ffmpeg import FittedSegment, join
fit = Path({fit!r})
pieces = [FittedSegment({frames}, {width}, {height}, open=lambda: fit.open("rb")) for _ in range({count})]
report = join(pieces, {audio!r}, {out!r}, fps={fps})
print(report.frames, report.out_bytes)
"""


def _tree_rss_kib(root: int) -> int:
    """VmRSS of ``root`` and all its descendants, in KiB (0 once it has exited)."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def _measure(command: list[str], *, timeout: float) -> tuple[float, list[tuple[float, int]], str]:
    """Run ``command``; its wall time, (time, tree RSS KiB) samples every 0.2 s, and its stdout."""
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            samples.append((time.perf_counter() - started, _tree_rss_kib(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode:
        raise SystemExit(f"bench: {command[0]} failed:\n{err[-2000:]}")
    return time.perf_counter() - started, samples, out


def _quarters(samples: list[tuple[float, int]], seconds: float) -> list[int]:
    """Peak RSS in MiB within each quarter of the run (flat memory: about equal quarters)."""
    peaks = [0, 0, 0, 0]
    for at, kib in samples:
        quarter = min(3, int(4 * at / seconds))
        peaks[quarter] = max(peaks[quarter], kib // 1024)
    return peaks


def run(minutes: int) -> None:
    import imageio_ffmpeg

    from s2v.model import provider_facts
    from s2v_local import samples, stamps

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    fps = provider_facts.OUTPUT_FRAMES_PER_SECOND
    total = minutes * 60
    segment = min(SEGMENT_SECONDS, total)
    print(f"\n8. Long-form stitch, {minutes} min of {SIZE} at {fps} fps ({-(-total // segment)} segments)")
    with tempfile.TemporaryDirectory(prefix="s2v-bench-stitch-") as tmp:
        work = Path(tmp)
        video, audio = work / "segment.mp4", work / "talk.wav"
        audio.write_bytes(samples.speech_wav(float(total), 16000))
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                        "-f", "lavfi", "-i", f"testsrc2=s={SIZE}:r={fps}",
                        "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                        "-vf", f"format=yuv420p,{stamps.drawbox_filter(1)}", "-frames:v", str(segment * fps + 2),
                        "-t", str(segment), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-movflags", "+faststart", str(video)], check=True, timeout=1800)
        count = total // segment
        fit = work / "segment.h264"
        code = FIT.format(paths=PATHS, video=str(video), out=str(fit), frames=segment * fps, fps=fps)
        fitting, fit_rss, out = _measure([sys.executable, "-c", code], timeout=3600)
        width, height = (int(v) for v in SIZE.split("x"))
        code = JOIN.format(paths=PATHS, fit=str(fit), frames=segment * fps, width=width, height=height, count=count,
                           audio=str(audio), out=str(work / "joined.mp4"), fps=fps)
        ours, ours_rss, out = _measure([sys.executable, "-c", code], timeout=6 * 3600)
        frames, size = (int(v) for v in out.split())
        listing = work / "segments.txt"
        listing.write_text("".join(f"file '{video}'\n" for _ in range(count)))
        copy, copy_rss, _ = _measure([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "concat",
                                      "-safe", "0", "-i", str(listing), "-c", "copy", str(work / "copied.mp4")],
                                     timeout=3600)
    fit_minutes = segment / 60
    print(f"   fit of one {segment} s segment (each runs in its own invocation as its segment renders): "
          f"{fitting:.1f} s = {fitting / fit_minutes:.1f} s per output minute, peak RSS "
          f"{max((kib for _, kib in fit_rss), default=0) // 1024} MiB (a 10-minute segment: "
          f"~{10 * fitting / fit_minutes:.0f} s here, within the function's 900 s)")
    peak = max((kib for _, kib in ours_rss), default=0) // 1024
    print(f"   join of {count} fits: {ours:.1f} s = {ours / minutes:.2f} s per output minute ({frames} frames, "
          f"{size / 2**20:.0f} MiB); "
          f"plain -c copy concat: {copy:.1f} s = {copy / minutes:.3f} s per minute; ratio {ours / copy:.1f}x")
    print(f"   join peak RSS (Python + ffmpeg): {peak} MiB (target < 200); by quarter of the run "
          f"{_quarters(ours_rss, ours)} MiB (flat: the same whatever the length); -c copy concat peak "
          f"{max((kib for _, kib in copy_rss), default=0) // 1024} MiB")
