"""The long-form media steps with the real ffmpeg: pauses found in speech-like audio, segment audio
cut to the sample, and segment videos stitched over the original audio (frames read back from
their stamps, sync measured by cross-correlation)."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from helpers import av_sync
from helpers.stamps import read_stamps, read_stamps_or_none, runs, stamped_video
from s2v.adapters import ffmpeg as media
from s2v.adapters.ffmpeg import MediaToolError, SegmentVideo, StitchError
from s2v.model.segments import Segment, frame_counts
from s2v_local import samples
from s2v_local.probe import probe_media
from s2v_local.stamps import Stamp

RATE = 16000
FPS = 16


def write_wav(path: Path, signal: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def pcm(media_path: Path, *, fmt: str = "s16le") -> np.ndarray:
    """Every decoded sample of the first audio stream, as ffmpeg decodes it."""
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(media_path),
                          "-map", "0:a:0", "-f", fmt, "-"], check=True, capture_output=True, timeout=120).stdout
    return np.frombuffer(raw, dtype={"s16le": "<i2", "s32le": "<i4"}[fmt])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or "partial" in p.name)


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("talk") / "talk.wav",
                     np.frombuffer(samples.speech_wav(30.0, RATE)[44:], dtype="<i2") / 32768)


# ---------------------------------------------------------------------------------- the binary

def test_ffmpeg_exe_takes_the_setting_then_the_layer_then_the_wheel(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("S2V_FFMPEG", "/custom/ffmpeg")
    assert media.ffmpeg_exe() == "/custom/ffmpeg"
    monkeypatch.delenv("S2V_FFMPEG")
    layer = tmp_path / "ffmpeg"
    layer.write_text("#!/bin/sh\n")
    layer.chmod(0o755)
    monkeypatch.setattr(media, "LAYER_FFMPEG", str(layer))
    assert media.ffmpeg_exe() == str(layer)
    monkeypatch.setattr(media, "LAYER_FFMPEG", str(tmp_path / "absent"))
    assert media.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, talk: Path) -> None:
    monkeypatch.setenv("S2V_FFMPEG", "/nowhere/ffmpeg")
    with pytest.raises(MediaToolError, match="could not start ffmpeg"):
        media.probe_audio_seconds(talk)


# ---------------------------------------------------------------------------------- measuring and pauses

def test_audio_length_is_the_exact_sample_count(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "odd.wav", np.full(12345, 0.1))
    assert media.probe_audio_seconds(wav) == 12345 / RATE
    scan = media.scan_audio(wav)
    assert scan.samples == 12345 and scan.info.sample_rate == RATE and scan.info.channels == "mono"


def test_audio_that_is_not_audio_is_a_clear_error(tmp_path: Path) -> None:
    note = tmp_path / "note.wav"
    note.write_text("not a recording")
    with pytest.raises(MediaToolError, match=r"note\.wav") as caught:
        media.probe_audio_seconds(note)
    assert caught.value.stderr_tail  # ffmpeg's own words come along


def _word_spans(clean: np.ndarray, gap: float = 0.08) -> list[tuple[float, float]]:
    loud = np.flatnonzero(clean)
    breaks = np.flatnonzero(np.diff(loud) > gap * RATE)
    starts = np.concatenate([[loud[0]], loud[breaks + 1]])
    ends = np.concatenate([loud[breaks], [loud[-1]]])
    return [(s / RATE, e / RATE) for s, e in zip(starts, ends, strict=True)]


def test_pauses_are_found_in_noisy_speech_with_soft_words_and_never_inside_a_word(tmp_path: Path) -> None:
    # Given a minute of speech-like audio: words 0 to 30 dB below the loudest, room noise at -50 dBFS
    clean = np.frombuffer(samples.speech_wav(60.0, RATE)[44:], dtype="<i2") / 32768
    words = _word_spans(clean)
    rng = np.random.default_rng(7)
    gain = np.ones_like(clean)
    for start, end in words:
        gain[round(start * RATE):round(end * RATE) + 1] = 10 ** (rng.uniform(-30, 0) / 20)
    noisy = write_wav(tmp_path / "noisy.wav", clean * gain + rng.standard_normal(len(clean)) * 10 ** (-50 / 20))
    silent_gaps = [(end, start) for (_, end), (start, _) in itertools.pairwise(words) if start - end >= 0.3]
    # When its pauses are detected with the default threshold
    pauses = media.detect_pauses(noisy)
    # Then every gap of 0.3 s or more between words is found, and no pause lies inside a word
    assert len(silent_gaps) >= 15
    assert all(any(p.start < gap_end and p.end > gap_start for p in pauses) for gap_start, gap_end in silent_gaps)
    assert not [p for p in pauses if any(s < p.middle < e for s, e in words)]
    assert all(p.length >= 0.3 for p in pauses)


# ---------------------------------------------------------------------------------- cutting

@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_cuts_are_sample_exact_and_add_up_to_the_upload(talk: Path, tmp_path: Path, suffix: str) -> None:
    # Given a talk and cut points that are not on sample boundaries
    before = hashlib.sha256(talk.read_bytes()).hexdigest()
    bounds = [0.0, 7.123456, 18.00003, 30.0]
    # When each span is cut
    parts = []
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        part = tmp_path / f"part{index}{suffix}"
        media.cut_audio(talk, start, end, part)
        parts.append(part)
    # Then each part holds exactly its samples, and together they are the talk, sample for sample
    original = pcm(talk)
    decoded = [pcm(p) for p in parts]
    assert [len(d) for d in decoded] == [round(e * RATE) - round(s * RATE) for s, e in itertools.pairwise(bounds)]
    assert np.array_equal(np.concatenate(decoded), original)
    assert hashlib.sha256(talk.read_bytes()).hexdigest() == before
    assert leftovers(tmp_path) == []


def test_cuts_of_a_compressed_upload_follow_its_decoded_samples(talk: Path, tmp_path: Path) -> None:
    mp3 = tmp_path / "talk.mp3"
    mp3.write_bytes(samples.encode_audio(talk.read_bytes(), "mp3"))
    total = media.probe_audio_seconds(mp3)
    media.cut_audio(mp3, 0.0, 12.5, tmp_path / "a.flac")
    media.cut_audio(mp3, 12.5, total, tmp_path / "b.flac")
    # MP3 decodes to float: the parts keep it at 24 bits (FLAC has no float), every sample in its place
    first, second = pcm(tmp_path / "a.flac", fmt="s32le"), pcm(tmp_path / "b.flac", fmt="s32le")
    assert len(first) == 12.5 * RATE
    whole = pcm(mp3, fmt="s32le")
    assert len(first) + len(second) == len(whole)
    assert np.max(np.abs(np.concatenate([first, second]) / 2**31 - whole / 2**31)) < 1e-6


def test_float_audio_is_cut_to_24_bit_flac_without_audible_change(tmp_path: Path) -> None:
    signal = np.sin(np.arange(RATE * 3) * 2 * np.pi * 440 / RATE).astype("<f4") * 0.5
    source = tmp_path / "float.wav"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac", "1",
                    "-i", "-", "-c:a", "pcm_f32le", str(source)], input=signal.tobytes(), check=True, timeout=60)
    media.cut_audio(source, 1.0, 2.0, tmp_path / "part.flac")
    part = pcm(tmp_path / "part.flac", fmt="s32le") / 2**31
    assert len(part) == RATE
    assert np.max(np.abs(part - signal[RATE:2 * RATE])) < 1e-6  # 24-bit: -144 dB


def test_cutting_never_touches_the_source_and_fails_without_leaving_a_file(talk: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="source"):
        media.cut_audio(talk, 0, 1, talk)
    with pytest.raises(ValueError, match=r"\.flac or \.wav"):
        media.cut_audio(talk, 0, 1, tmp_path / "part.mp3")
    with pytest.raises(ValueError, match="start < end"):
        media.cut_audio(talk, 2, 1, tmp_path / "part.flac")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(MediaToolError):
        media.cut_audio(broken, 0, 1, tmp_path / "part.flac")
    assert not (tmp_path / "part.flac").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- stitching

SPANS = [(0.0, 9.53), (9.53, 20.11), (20.11, 30.0)]
EXPECTED = frame_counts([Segment(i, s, e, "") for i, (s, e) in enumerate(SPANS)], FPS)  # [152, 170, 158]


def render_segments(directory: Path, extra_frames: list[int], sizes: list[tuple[int, int]] | None = None,
                    spans: list[tuple[float, float]] = SPANS) -> list[SegmentVideo]:
    """Stamped segment videos, each ``extra`` frames longer (or shorter) than its span needs."""
    counts = frame_counts([Segment(i, s, e, "") for i, (s, e) in enumerate(spans)], FPS)
    return [SegmentVideo(stamped_video(directory / f"segment{i}.mp4", n + extra, tag=i + 1,
                                       size=(sizes or [(160, 120)] * len(spans))[i]), start, end)
            for i, ((start, end), n, extra) in enumerate(zip(spans, counts, extra_frames, strict=True))]


def test_stitch_fits_each_segment_to_its_span_and_keeps_the_upload_in_sync(talk: Path, tmp_path: Path) -> None:
    # Given three rendered segments: two frames short, three frames long, and exact
    segments = render_segments(tmp_path, [-2, 3, 0])
    # When they are stitched over the original talk
    out = tmp_path / "talk.mp4"
    report = media.stitch(segments, talk, out, fps=FPS)
    # Then each contributes exactly its span's frames: the short one repeats its last frame, the long
    # one loses its extra frames, and no frame is duplicated or missing at a join
    assert report.segment_frames == EXPECTED and report.frames == sum(EXPECTED) == round(30.0 * FPS)
    assert runs(read_stamps(out)) == [(1, 0, EXPECTED[0] - 3), (1, EXPECTED[0] - 3, EXPECTED[0] - 3),
                                      (1, EXPECTED[0] - 3, EXPECTED[0] - 3),
                                      (2, 0, EXPECTED[1] - 1), (3, 0, EXPECTED[2] - 1)]
    # and the video lasts as long as the audio, within one frame
    assert abs(probe_media(out).duration_seconds - 30.0) <= 1 / FPS
    # and the audio is the upload, in sync at the start, at every join and at the end
    lags = av_sync.lags(out, talk, [1.0, 9.53, 20.11, 29.0])
    assert max(abs(lag) for lag in lags) <= 0.001, lags
    assert report.audio_codec == "aac" and probe_media(out).audio_codec == "aac"


def test_the_sync_check_notices_a_shifted_track(talk: Path, tmp_path: Path) -> None:
    # The lag measure itself: a copy of the talk delayed by 5 ms reads as 5 ms late.
    late = tmp_path / "late.wav"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(talk), "-af", "adelay=5", str(late)],
                   check=True, timeout=60)
    assert av_sync.lags(late, talk, [5.0, 20.0]) == [pytest.approx(0.005, abs=1 / av_sync.RATE)] * 2


def test_segments_of_another_size_are_scaled_to_the_first(talk: Path, tmp_path: Path) -> None:
    segments = render_segments(tmp_path, [0, 0, 0], sizes=[(160, 120), (320, 240), (160, 120)])
    out = tmp_path / "talk.mp4"
    report = media.stitch(segments, talk, out, fps=FPS)
    assert (report.width, report.height) == (160, 120) and probe_media(out).width == 160
    read = read_stamps_or_none(out)  # the scaled segment's stamps are scaled too: not readable
    assert len(read) == sum(EXPECTED)
    assert read[:EXPECTED[0]] == [Stamp(1, i) for i in range(EXPECTED[0])]
    assert read[-EXPECTED[2]:] == [Stamp(3, i) for i in range(EXPECTED[2])]


def test_crossfade_blends_into_each_next_segment_without_moving_a_frame(talk: Path, tmp_path: Path) -> None:
    segments = render_segments(tmp_path, [0, 0, 0])
    out = tmp_path / "faded.mp4"
    report = media.stitch(segments, talk, out, fps=FPS, crossfade_ms=190)
    assert report.crossfade_frames == 3 and report.frames == sum(EXPECTED)
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(out), "-vf", "format=gray",
                          "-f", "rawvideo", "-"], check=True, capture_output=True, timeout=60).stdout
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 120, 160)
    assert len(frames) == sum(EXPECTED)
    bit0 = frames[:, 4, 4].astype(int)  # the centre of the frame-number stamp's lowest bit
    join = EXPECTED[0]
    # the previous segment's last frame (an odd number: bit 0 white) fades into frames 0, 1, 2 of the next
    last = bit0[join - 1]
    assert last > 200
    expected_fade = [last + (new - last) * (i + 1) / 4 for i, new in enumerate((0, 255, 0))]
    assert bit0[join:join + 3] == pytest.approx(expected_fade, abs=12)
    # outside the fades every frame reads as a clean stamp, in order
    clean = frames[join + 3:join + EXPECTED[1]]
    assert all(abs(int(f[4, 4]) - (255 if i % 2 else 0)) < 40 for i, f in enumerate(clean, start=3))
    lags = av_sync.lags(out, talk, [9.53, 20.11])
    assert max(abs(lag) for lag in lags) <= 0.001


def test_a_broken_segment_fails_the_stitch_and_leaves_nothing(talk: Path, tmp_path: Path) -> None:
    segments = render_segments(tmp_path, [0, 0, 0])
    broken = tmp_path / "segment1.mp4"
    broken.write_bytes(broken.read_bytes()[:2000])  # a download cut short
    out = tmp_path / "talk.mp4"
    with pytest.raises(StitchError, match="segment 1") as caught:
        media.stitch(segments, talk, out, fps=FPS)
    assert caught.value.stderr_tail
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_failed_encode_or_a_timeout_leaves_nothing_and_keeps_an_earlier_output(talk: Path, tmp_path: Path) -> None:
    segments = render_segments(tmp_path, [0, 0, 0])
    out = tmp_path / "talk.mp4"
    out.write_bytes(b"an earlier, complete output")
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("no audio here")
    with pytest.raises(StitchError):
        media.stitch(segments, not_audio, out, fps=FPS)
    with pytest.raises(StitchError, match="time"):
        media.stitch(segments, talk, out, fps=FPS, timeout_s=0.01)
    assert out.read_bytes() == b"an earlier, complete output" and leftovers(tmp_path) == []


def test_stitch_refuses_gaps_overlaps_and_writing_over_an_input(talk: Path, tmp_path: Path) -> None:
    segments = render_segments(tmp_path, [0, 0, 0])
    with pytest.raises(ValueError, match="follow each other"):
        media.stitch([segments[0], segments[2]], talk, tmp_path / "out.mp4", fps=FPS)
    with pytest.raises(ValueError, match="start at 0"):
        media.stitch(segments[1:], talk, tmp_path / "out.mp4", fps=FPS)
    with pytest.raises(ValueError, match="inputs"):
        media.stitch(segments, talk, segments[0].source, fps=FPS)


# ------------------------------------------------------------- fit each segment, then join them

def fit_all(segments: list[SegmentVideo], directory: Path,
            size: tuple[int, int] | None = None) -> list[media.FittedSegment]:
    counts = frame_counts([Segment(i, s.start, s.end, "") for i, s in enumerate(segments)], FPS)
    fitted = []
    for i, (segment, frames) in enumerate(zip(segments, counts, strict=True)):
        path = directory / f"fit{i}{media.FIT_SUFFIX}"
        report = media.fit_segment(segment.source, frames, path, fps=FPS, size=size)
        assert report.frames == frames and report.out_bytes == path.stat().st_size
        fitted.append(media.FittedSegment(report.frames, report.width, report.height,
                                          open=lambda path=path: path.open("rb")))
    return fitted


def test_fitted_segments_join_without_encoding_again_frame_exact_and_in_sync(talk: Path, tmp_path: Path) -> None:
    # Given three rendered segments (two frames short, three long, exact), each fitted on its own
    segments = render_segments(tmp_path, [-2, 3, 0])
    fitted = fit_all(segments, tmp_path)
    # When the fits are joined over the original talk
    out = tmp_path / "talk.mp4"
    report = media.join(fitted, talk, out, fps=FPS)
    # Then every join is frame exact: the short one repeats its last frame, the long one loses its extra
    assert report.segment_frames == EXPECTED and report.frames == sum(EXPECTED)
    assert runs(read_stamps(out)) == [(1, 0, EXPECTED[0] - 3), (1, EXPECTED[0] - 3, EXPECTED[0] - 3),
                                      (1, EXPECTED[0] - 3, EXPECTED[0] - 3),
                                      (2, 0, EXPECTED[1] - 1), (3, 0, EXPECTED[2] - 1)]
    # and the video lasts as long as the audio, within one frame, with the upload's audio in sync
    probed = probe_media(out)
    assert abs(probed.duration_seconds - 30.0) <= 1 / FPS and probed.audio_codec == "aac"
    lags = av_sync.lags(out, talk, [1.0, 9.53, 20.11, 29.0])
    assert max(abs(lag) for lag in lags) <= 0.001, lags
    # and the video was copied, not encoded again: its bytes are the fits' bytes plus the MP4's index
    video_bytes = sum((tmp_path / f"fit{i}{media.FIT_SUFFIX}").stat().st_size for i in range(3))
    assert video_bytes < report.out_bytes < video_bytes + 600_000


def test_a_fit_to_another_size_joins_with_the_rest(talk: Path, tmp_path: Path) -> None:
    # A segment rendered at another size is fitted to the talk's size before the join.
    segments = render_segments(tmp_path, [0, 0, 0], sizes=[(160, 120), (320, 240), (160, 120)])
    fitted = fit_all(segments, tmp_path, size=(160, 120))
    out = tmp_path / "talk.mp4"
    media.join(fitted, talk, out, fps=FPS)
    read = read_stamps_or_none(out)
    assert len(read) == sum(EXPECTED) and probe_media(out).width == 160
    assert read[-EXPECTED[2]:] == [Stamp(3, i) for i in range(EXPECTED[2])]


def test_fits_of_different_sizes_are_refused(talk: Path, tmp_path: Path) -> None:
    segments = render_segments(tmp_path, [0, 0, 0], sizes=[(160, 120), (320, 240), (160, 120)])
    with pytest.raises(ValueError, match="different sizes"):
        media.join(fit_all(segments, tmp_path), talk, tmp_path / "talk.mp4", fps=FPS)
    assert not (tmp_path / "talk.mp4").exists()


def test_a_broken_segment_fails_its_fit_and_a_broken_fit_fails_the_join_leaving_nothing(
        talk: Path, tmp_path: Path) -> None:
    segments = render_segments(tmp_path, [0, 0, 0])
    broken = tmp_path / "segment1.mp4"
    broken.write_bytes(broken.read_bytes()[:2000])  # a download cut short
    with pytest.raises(MediaToolError, match=r"segment1\.mp4") as caught:
        media.fit_segment(broken, EXPECTED[1], tmp_path / "fit1.h264", fps=FPS)
    assert caught.value.stderr_tail and not (tmp_path / "fit1.h264").exists()
    fitted = fit_all([segments[0], segments[2]], tmp_path)
    out = tmp_path / "talk.mp4"
    out.write_bytes(b"an earlier, complete output")
    # a fit cut short in storage: fewer frames than it claims
    short = tmp_path / "fit1.h264"
    short.write_bytes(short.read_bytes()[: short.stat().st_size // 3])
    with pytest.raises(StitchError, match="frames"):
        media.join(fitted, talk, out, fps=FPS)
    with pytest.raises(StitchError, match="time"):
        media.join(fit_all([segments[0], segments[2]], tmp_path), talk, out, fps=FPS, timeout_s=0.0)
    assert out.read_bytes() == b"an earlier, complete output" and leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_cuts_from_the_decoded_track_are_the_cuts_of_the_upload(talk: Path, tmp_path: Path, suffix: str) -> None:
    # Given a talk decoded once, and cut points that are not on sample boundaries
    decoded = media.decode_track(talk, tmp_path / "talk.wav")
    bounds = [0.0, 7.123456, 18.00003, 30.0]
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        # When a span is cut from the decoded track, and from the upload as before
        media.cut_decoded(decoded, start, end, tmp_path / f"linear{index}{suffix}")
        media.cut_audio(talk, start, end, tmp_path / f"direct{index}{suffix}")
        # Then both hold exactly the same samples
        assert np.array_equal(pcm(tmp_path / f"linear{index}{suffix}"), pcm(tmp_path / f"direct{index}{suffix}"))
    assert sorted(p.name for p in tmp_path.iterdir() if "piece" in p.name or "partial" in p.name) == []


def test_a_compressed_upload_decoded_once_cuts_like_the_upload(talk: Path, tmp_path: Path) -> None:
    mp3 = tmp_path / "talk.mp3"
    mp3.write_bytes(samples.encode_audio(talk.read_bytes(), "mp3"))
    decoded = media.decode_track(mp3, tmp_path / "talk.wav")
    total = media.probe_audio_seconds(mp3)
    assert decoded.frames == round(total * decoded.sample_rate)
    for name, (start, end) in {"a": (0.0, 12.5), "b": (12.5, total)}.items():
        media.cut_decoded(decoded, start, end, tmp_path / f"{name}-linear.flac")
        media.cut_audio(mp3, start, end, tmp_path / f"{name}-direct.flac")
        assert np.array_equal(pcm(tmp_path / f"{name}-linear.flac", fmt="s32le"),
                              pcm(tmp_path / f"{name}-direct.flac", fmt="s32le"))
