"""The ffmpeg layer's build (layers/ffmpeg): the right wheel, the right binary, checked, at bin/ffmpeg;
run offline on wheels built here, through the same make target ``sam build`` runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

LAYER = Path(__file__).resolve().parents[2] / "layers/ffmpeg"
MEMBER = "imageio_ffmpeg/binaries/ffmpeg-linux-aarch64-v7.0.2"
AARCH64, X86_64 = 183, 62


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_layer", LAYER / "build_layer.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load()


def elf(machine: int = AARCH64, *, interpreter: bool = False) -> bytes:
    """A minimal 64-bit little-endian ELF executable header with its program header table."""
    kinds = [1] + ([3] if interpreter else [])  # PT_LOAD (+ PT_INTERP for a dynamically linked one)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HHI", header, 16, 2, machine, 1)  # e_type EXEC, e_machine, e_version
    struct.pack_into("<Q", header, 32, 64)  # e_phoff: right after this header
    struct.pack_into("<HHH", header, 52, 64, 56, len(kinds))  # e_ehsize, e_phentsize, e_phnum
    table = b"".join(struct.pack("<I", kind) + bytes(52) for kind in kinds)
    return bytes(header) + table + b"rest of the static ffmpeg"


def wheel(directory: Path, name: str = "imageio_ffmpeg-0.7.0-py3-none-manylinux2014_aarch64.whl",
          members: dict[str, bytes] | None = None) -> Path:
    path = directory / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in (members if members is not None else {
                "imageio_ffmpeg/__init__.py": b"", "imageio_ffmpeg/binaries/README.md": b"Exes are dropped here",
                MEMBER: elf()}).items():
            archive.writestr(member, data)
    return path


@pytest.mark.parametrize(("name", "matches"), [
    ("imageio_ffmpeg-0.7.0-py3-none-manylinux2014_aarch64.whl", True),
    ("imageio_ffmpeg-0.8.1-py3-none-manylinux_2_28_aarch64.whl", True),
    ("imageio_ffmpeg-0.7.0-py3-none-manylinux2014_x86_64.whl", False),
    ("imageio_ffmpeg-0.7.0-py3-none-macosx_11_0_arm64.whl", False),
    ("imageio_ffmpeg-0.7.0-py3-none-win_arm64.whl", False),
    ("imageio_ffmpeg-0.7.0.tar.gz", False),
])
def test_only_a_linux_arm64_wheel_is_taken(name: str, matches: bool) -> None:
    assert build.is_linux_aarch64_wheel(name) is matches


def test_the_one_arm64_wheel_is_selected_among_the_others(tmp_path: Path) -> None:
    names = ["imageio_ffmpeg-0.7.0-py3-none-manylinux2014_x86_64.whl",
             "imageio_ffmpeg-0.7.0-py3-none-manylinux2014_aarch64.whl",
             "imageio_ffmpeg-0.7.0-py3-none-macosx_11_0_arm64.whl"]
    assert build.select_wheel([tmp_path / n for n in names]).name == names[1]
    with pytest.raises(build.LayerBuildError, match="found 0"):
        build.select_wheel([tmp_path / names[0]])


def test_the_static_arm64_binary_lands_executable_at_bin_ffmpeg(tmp_path: Path) -> None:
    out = tmp_path / "layer"
    target = build.extract_ffmpeg(wheel(tmp_path), out)
    assert target == out / "bin" / "ffmpeg" and target.read_bytes() == elf()
    assert target.stat().st_mode & 0o777 == 0o755
    provenance = json.loads((out / "bin" / "ffmpeg.json").read_text())
    assert provenance["member"] == MEMBER and len(provenance["wheel_sha256"]) == 64
    assert sorted(p.name for p in (out / "bin").iterdir()) == ["ffmpeg", "ffmpeg.json"]


@pytest.mark.parametrize(("binary", "reason"), [
    (elf(X86_64), "not AArch64"),
    (elf(interpreter=True), "dynamically linked"),
    (b"#!/bin/sh\necho not ffmpeg\n", "not an ELF"),
])
def test_a_binary_that_would_not_run_on_lambda_arm64_is_refused_and_nothing_installed(
        tmp_path: Path, binary: bytes, reason: str) -> None:
    out = tmp_path / "layer"
    with pytest.raises(build.LayerBuildError, match=reason):
        build.extract_ffmpeg(wheel(tmp_path, members={MEMBER: binary}), out)
    assert list((out / "bin").iterdir()) == []


def test_a_wheel_without_the_arm64_binary_is_refused(tmp_path: Path) -> None:
    only_x86 = wheel(tmp_path, members={"imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v7.0.2": elf(X86_64)})
    with pytest.raises(build.LayerBuildError, match="0 linux-aarch64 ffmpeg binaries"):
        build.extract_ffmpeg(only_x86, tmp_path / "layer")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_sam_make_target_builds_the_layer_from_a_wheel_and_checks_its_digest(tmp_path: Path) -> None:
    # Given a wheel on disk (no download) and sam build's ARTIFACTS_DIR
    source = wheel(tmp_path)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    digest = build._sha256(source)
    run = [shutil.which("make") or "make", "-C", str(LAYER), "build-FfmpegLayer", f"ARTIFACTS_DIR={artifacts}",
           f"WHEEL={source}", f"PYTHON={sys.executable}"]
    # When the target runs with the pinned digest, then the binary is at bin/ffmpeg
    done = subprocess.run([*run, f"WHEEL_SHA256={digest}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (artifacts / "bin" / "ffmpeg").read_bytes() == elf()
    # and a wheel that is not the pinned one fails the build, naming the digest
    (artifacts / "bin" / "ffmpeg").unlink()
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)  # the Makefile's own pin
    assert done.returncode != 0 and "not the pinned wheel" in done.stderr
    assert not (artifacts / "bin" / "ffmpeg").exists()
    # and without ARTIFACTS_DIR it says what is missing
    done = subprocess.run(run[:3], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ARTIFACTS_DIR is not set" in done.stderr
