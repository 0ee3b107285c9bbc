"""Figures 5 and 6 side by side with an earlier commit: ``python -m bench burst --against REV``.

Each run is a fresh interpreter with one local stack, alternating this tree and a git worktree of
REV (in ABBA order, so neither side always runs first on a warming or loaded machine); the figures
are medians per side and their ratios, so a regression is a ratio measured in one session, not a
number from another day. Both sides run this bench's code (the burst, the request counts, the item
sizes) against their own handlers, layer, template and local stack.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT

CHILD = """
import contextlib, io, json, logging, os, sys
sys.path[:0] = {paths!r}
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
logging.basicConfig(level=logging.WARNING)
from bench import cost, pipeline
result = pipeline.burst({pairs}, quiet=True)
with contextlib.redirect_stdout(io.StringIO()):
    result["summary"]["cost_usd"] = cost.report(result)
print(json.dumps(result["summary"]))
"""


def worktree(rev: str) -> Path:
    """A checkout of ``rev`` beside the repository (made once, reused)."""
    sha = subprocess.run(["git", "rev-parse", "--short=10", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"s2v-bench-{sha}"
    if not (path / "template.yaml").is_file():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT, check=True,
                       capture_output=True)
    return path


def one_run(tree: Path, pairs: int) -> dict[str, Any]:
    paths = [str(tree / "layers" / "common"), str(tree / "local"), str(ROOT)]
    code = CHILD.format(paths=paths, pairs=pairs)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                         timeout=1800)
    if out.returncode:
        raise SystemExit(f"bench: a burst on {tree} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(rev: str, pair_counts: list[int], *, runs: int) -> None:
    theirs = worktree(rev)
    for pairs in pair_counts:
        print(f"\n5/6. Burst of {pairs} pairs, this tree vs {rev} ({theirs.name}), {runs} runs each, alternating")
        results: dict[str, list[dict[str, Any]]] = {"this": [], rev: []}
        for i in range(runs):
            order = [("this", ROOT), (rev, theirs)]
            for side, tree in order if i % 2 == 0 else order[::-1]:
                summary = one_run(tree, pairs)
                results[side].append(summary)
                print(f"   run {i + 1} {side:<8} CPU/job {summary['cpu_ms']:.0f} ms (moto {summary['moto_ms']:.0f}), "
                      f"{summary['rate']:.1f} jobs/s, billed requests/job {sum(summary['billed'].values()):.1f}, "
                      f"{summary['delivered']}/{pairs} delivered, {summary['duplicates']} duplicates", flush=True)
                for failure in summary.get("failures", []):
                    print(f"     not delivered: {failure}")
        print_comparison(results, rev)


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def print_comparison(results: dict[str, list[dict[str, Any]]], rev: str) -> None:
    ours, base = results["this"], results[rev]
    print(f"   {'median of the runs':<34} {'this tree':>12} {rev:>12} {'ratio':>7}")
    for label, key, fmt in (("CPU per job (ms)", "cpu_ms", "{:.0f}"), ("  of which moto (ms)", "moto_ms", "{:.0f}"),
                            ("drain rate (jobs/s)", "rate", "{:.2f}"), ("AWS cost per job (USD)", "cost_usd", "{:.7f}"),
                            ("job item, mean (bytes)", "item_bytes_mean", "{:.0f}"),
                            ("job item, largest (bytes)", "item_bytes_max", "{:.0f}")):
        a, b = _median(ours, key), _median(base, key)
        print(f"   {label:<34} {fmt.format(a):>12} {fmt.format(b):>12} {a / b if b else float('nan'):>6.2f}x")
    kinds = sorted({k for r in ours + base for k in r["billed"]})
    billed_a = {k: statistics.median(r["billed"].get(k, 0.0) for r in ours) for k in kinds}
    billed_b = {k: statistics.median(r["billed"].get(k, 0.0) for r in base) for k in kinds}
    total_a, total_b = (statistics.median(sum(r["billed"].values()) for r in rows) for rows in (ours, base))
    print(f"   {'billed AWS requests per job':<34} {total_a:>12.1f} {total_b:>12.1f} {total_a / total_b:>6.2f}x")
    for kind in sorted(kinds, key=lambda k: -max(billed_a[k], billed_b[k])):
        if max(billed_a[kind], billed_b[kind]) >= 0.005:
            print(f"     {kind:<32} {billed_a[kind]:>12.2f} {billed_b[kind]:>12.2f}")
