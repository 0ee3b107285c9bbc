"""Build the ffmpeg layer: the static arm64 ffmpeg from an imageio-ffmpeg wheel, at bin/ffmpeg.

    python build_layer.py --out DIR [--version 0.7.0] [--platform manylinux2014_aarch64] [--wheel FILE]

Without ``--wheel`` the pinned wheel is fetched with pip. The binary is checked before it is
installed: an ELF executable for AArch64 with no dynamic loader (a glibc-linked build would fail at
the first stitch on the Lambda runtime, not here). Lambda mounts the layer at /opt, so the function
finds /opt/bin/ffmpeg, where ``s2v.adapters.ffmpeg.ffmpeg_exe`` looks. Standard library only: it
runs inside ``sam build``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "imageio-ffmpeg"
BINARY_MEMBER = re.compile(r"^imageio_ffmpeg/binaries/ffmpeg-linux-aarch64-v[0-9][0-9.]*$")
EM_AARCH64 = 183
PT_INTERP = 3


class LayerBuildError(Exception):
    pass


def is_linux_aarch64_wheel(name: str) -> bool:
    """Whether a wheel file name (name-version[-build]-python-abi-platform.whl) is for Linux on arm64."""
    if not name.endswith(".whl"):
        return False
    parts = name[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return False
    return any(tag.endswith("_aarch64") and (tag.startswith("manylinux") or tag.startswith("linux"))
               for tag in parts[-1].split("."))


def select_wheel(candidates: list[Path]) -> Path:
    """The one Linux arm64 wheel among ``candidates``."""
    matching = [path for path in candidates if is_linux_aarch64_wheel(path.name)]
    if len(matching) != 1:
        found = ", ".join(sorted(path.name for path in candidates)) or "nothing"
        raise LayerBuildError(f"expected one Linux aarch64 {PACKAGE} wheel, found {len(matching)} among: {found}")
    return matching[0]


def download_wheel(version: str, platform: str, directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", platform, "--python-version", "3.11", "--dest", str(directory),
               f"{PACKAGE}=={version}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise LayerBuildError(f"pip could not download {PACKAGE}=={version} for {platform}: {done.stderr.strip()}")
    return select_wheel(sorted(directory.glob("*.whl")))


def check_static_aarch64(path: Path, name: str = "") -> None:
    """Refuse anything but a little-endian 64-bit AArch64 executable without a dynamic loader."""
    name = name or path.name
    with path.open("rb") as binary:
        header = binary.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF":
            raise LayerBuildError(f"{name} is not an ELF executable")
        if header[4] != 2 or header[5] != 1:
            raise LayerBuildError(f"{name} is not a 64-bit little-endian ELF")
        machine = struct.unpack_from("<H", header, 18)[0]
        if machine != EM_AARCH64:
            raise LayerBuildError(f"{name} is for ELF machine {machine}, not AArch64 ({EM_AARCH64})")
        phoff = struct.unpack_from("<Q", header, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        binary.seek(phoff)
        table = binary.read(phentsize * phnum)
    kinds = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(len(table) // max(1, phentsize))]
    if PT_INTERP in kinds:
        raise LayerBuildError(f"{name} is dynamically linked: Lambda's python3.11 runtime (Amazon Linux 2, "
                              "glibc 2.26) may lack the glibc it needs; use a static build "
                              f"({PACKAGE} 0.7.0's manylinux2014 aarch64 wheel)")


def check_sha256(wheel: Path, expected: str) -> None:
    actual = _sha256(wheel)
    if actual != expected.lower():
        raise LayerBuildError(f"{wheel.name} has sha256 {actual}, expected {expected}: not the pinned wheel")


def extract_ffmpeg(wheel: Path, out: Path) -> Path:
    """Install the wheel's arm64 ffmpeg at ``out``/bin/ffmpeg (complete, checked and executable, or not at all)."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if BINARY_MEMBER.match(name)]
        if len(members) != 1:
            raise LayerBuildError(f"{wheel.name} holds {len(members)} linux-aarch64 ffmpeg binaries, expected 1")
        target = out / "bin" / "ffmpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(".ffmpeg.partial")
        try:
            with archive.open(members[0]) as source, partial.open("wb") as copy:
                shutil.copyfileobj(source, copy, 1024 * 1024)
            check_static_aarch64(partial, members[0])
            partial.chmod(0o755)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    provenance = {"wheel": wheel.name, "wheel_sha256": _sha256(wheel), "member": members[0],
                  "ffmpeg_sha256": _sha256(target)}
    (out / "bin" / "ffmpeg.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="the layer's root (sam build's ARTIFACTS_DIR)")
    parser.add_argument("--version", default="0.7.0")
    parser.add_argument("--platform", default="manylinux2014_aarch64")
    parser.add_argument("--wheel", type=Path, help="use this wheel instead of downloading one")
    parser.add_argument("--sha256", default="", help="refuse a wheel whose digest differs (the pinned one's)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="s2v-ffmpeg-layer-") as scratch:
            wheel = select_wheel([args.wheel]) if args.wheel else download_wheel(args.version, args.platform,
                                                                                Path(scratch))
            if args.sha256:
                check_sha256(wheel, args.sha256)
            binary = extract_ffmpeg(wheel, args.out)
    except LayerBuildError as exc:
        print(f"build_layer: {exc}", file=sys.stderr)
        return 1
    print(f"build_layer: {binary} ({binary.stat().st_size // (1024 * 1024)} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
