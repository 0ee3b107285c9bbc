"""Figure 10: what a hostile document costs, and how large a busy job's history grows (issue 24 §1).

10a: parsing a hostile manifest (deep nesting, 5,000-digit numbers, thousands of unknown columns,
lone surrogates) through the one bounded parser, against parsing a valid manifest of 1,000 rows;
every hostile one is refused, each within the same order of time as the valid one.
10b: a QUEUED job's history after a day of admit/defer cycles under a busy provider (1,440 poll
runs), in bytes, against the same job after one cycle; and what the unbounded list would hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable


def _best(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run() -> None:
    from s2v.model.errors import InputError
    from s2v.model.history import append, entry
    from s2v.model.manifest import parse_manifest

    def parse(body: bytes, key: str = "inputs/m.batch.json") -> str:
        try:
            manifest = parse_manifest(body, key, input_prefix="inputs/", max_rows=10_000, max_prompt_chars=2000)
        except InputError as refused:
            return refused.code
        refused_rows = len(manifest.rows) - manifest.valid_rows
        return f"{refused_rows} rows refused" if refused_rows else "accepted"

    valid = json.dumps([{"image": f"p{i}.png", "audio": f"p{i}.wav", "prompt": "a warm greeting", "seed": i}
                        for i in range(1000)]).encode()
    hostile = {
        "nested 5,000 deep": b'{"rows": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "nested 1 MiB deep": b"[" * (1 << 20),
        "seed of 5,000 digits": b'[{"image": "a.png", "audio": "a.wav", "seed": ' + b"9" * 5000 + b"}]",
        "5,000 unknown columns (JSON)": json.dumps([{"image": "a.png", "audio": "a.wav",
                                                     **{f"x{i}": 1 for i in range(5000)}}]).encode(),
        "20,000 unknown columns (CSV)": (",".join(["image", "audio", *(f"x{i}" for i in range(20_000))])
                                         + "\na.png,a.wav\n").encode(),
        "1,000 rows with a lone surrogate": valid.replace(b"a warm greeting", b"a warm \\ud800"),
    }
    baseline = _best(lambda: parse(valid))
    print(f"\n10a. Hostile manifests through the bounded parser; baseline: a valid 1,000-row manifest "
          f"({len(valid) // 1024} KiB) parsed in {baseline * 1000:.1f} ms")
    for name, body in hostile.items():
        key = "inputs/m.batch.csv" if "CSV" in name else "inputs/m.batch.json"
        seconds = _best(lambda body=body, key=key: parse(body, key))
        print(f"    {name:34s} -> {parse(body, key):20s} {seconds * 1000:8.1f} ms = {seconds / baseline:5.2f}x")

    cycle = [("SUBMITTING", "admitted"), ("QUEUED", "provider busy: 429 Too Many Requests (retry after 1 s)")]
    history: tuple[dict, ...] = ({"status": "RECEIVED", "at": 0.0, "note": "created"},)
    after_one = 0
    for run_no in range(1440):
        for status, note in cycle:
            history = append(history, entry(status, 1.7e9 + run_no * 60.0, note))
        if run_no == 0:
            after_one = len(json.dumps(history))
    bounded = len(json.dumps(history))
    unbounded = after_one + 1439 * len(json.dumps([entry(s, 1.7e9, n) for s, n in cycle]))
    print(f"10b. A QUEUED job's history after a day under 429 (1,440 poll runs): {bounded:,} bytes, "
          f"{len(history)} entries = {bounded / after_one:.2f}x its size after one run ({after_one} bytes); "
          f"unbounded it would be {unbounded:,} bytes ({unbounded / 400_000:.0%} of DynamoDB's 400 KB item)")
