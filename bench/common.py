"""What every benchmark shares: import paths, and running a measurement in a fresh interpreter."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = [str(ROOT / "layers" / "common"), str(ROOT / "local"), str(ROOT / "tests")]
MIB = 1024 * 1024


def run_child(code: str, *, timeout: float = 900) -> list[float]:
    """Run ``code`` in a fresh interpreter; it prints numbers on its last line."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=timeout)
    if out.returncode:
        raise SystemExit(f"bench: a measurement failed:\n{out.stderr[-2000:]}")
    return [float(v) for v in out.stdout.strip().splitlines()[-1].split()]


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
