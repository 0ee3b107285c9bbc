"""Figures 3, 5 and 6: the whole pipeline on the local stack (moto + the WaveSpeed emulator).

3. Completion-to-delivered latency: from the moment the emulator marks a task completed to the
   job's DELIVERED timestamp, on the webhook path and on the poll-only path.
5. Burst: N pairs dropped at once, the emulator rendering in no time (renders reused): every pair
   submitted exactly once, and the drain rate.
6. The AWS cost of one job, from the burst's request counts and handler durations (bench.cost).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.common import median, percentile

API_KEY = "bench-key"
BENCH = "s2v-bench"  # tags the benchmark's own AWS requests, which the cost model leaves out


@dataclass
class Run:
    stack: Any
    emulator: Any


@contextmanager
def local_stack(*, webhooks: bool, poll_seconds: float | None, render_seconds: float, concurrency: int,
                max_in_flight: int, env: dict[str, str] | None = None) -> Iterator[Run]:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with Emulator(api_key=API_KEY, render_seconds=render_seconds, concurrency=concurrency,
                  reuse_renders=True) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, api_key=API_KEY, webhooks=webhooks,
        poll_interval_seconds=poll_seconds, queue_delay_seconds=1, ingest_concurrency=5,
        parameters={"MaxInFlightJobs": str(max_in_flight), "DailyBudgetUSD": "1000000", "LogLevel": "WARNING"},
        env_overrides=env or {},
    ) as stack:
        for name in ("werkzeug", "s2v_local"):
            logging.getLogger(name).setLevel(logging.WARNING)
        yield Run(stack=stack, emulator=emulator)


def drop_pairs(run: Run, folder: str, count: int, *, spacing: float = 0.0, workers: int = 8) -> float:
    """Upload ``count`` portrait + speech pairs; returns when the first upload started."""
    from s2v_local import samples

    png, wav = samples.portrait_png(256, 320), samples.speech_wav(1.0)
    s3 = run.stack.client("s3", caller=BENCH)
    started = time.time()

    def put(i: int) -> None:
        stem = f"p{i:05d}"
        s3.put_object(Bucket=run.stack.bucket, Key=f"inputs/{folder}/{stem}.png", Body=png)
        s3.put_object(Bucket=run.stack.bucket, Key=f"inputs/{folder}/{stem}.wav", Body=wav)

    if spacing:
        for i in range(count):
            put(i)
            time.sleep(spacing)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(put, range(count)))
    return started


# The table's layout, written out rather than imported: `--against REV` runs this bench on an earlier
# tree, whose modules may live elsewhere (s2v.store before s2v.adapters.store).
DUE_INDEX, DUE_BUCKET, QUEUED_BUCKET = "due-index", "due", "queued"


def raw_jobs(run: Run, folder: str) -> list[dict[str, Any]]:
    """The folder's job items as DynamoDB stores them (wire format)."""
    ddb = run.stack.client("dynamodb", caller=BENCH)
    items = [i for page in ddb.get_paginator("scan").paginate(TableName=run.stack.table_name)
             for i in page.get("Items", [])]
    return [i for i in items if i.get("folder", {}).get("S") == folder]


def plain(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {k: _native(deserializer.deserialize(v)) for k, v in item.items()}


def _native(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _native(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_native(v) for v in value]
    return value


def jobs(run: Run, folder: str) -> list[dict[str, Any]]:
    return [plain(i) for i in raw_jobs(run, folder)]


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's published rule: each attribute's name plus its value (strings and
    binary by length, numbers ~1 byte per 2 significant digits + 1, maps and lists 3 bytes + 1 per
    element + their contents, booleans and nulls 1 byte)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    (kind, data), = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "B":
        return len(data)
    if kind == "N":
        return len(str(data).strip("-").replace(".", "").lstrip("0")) // 2 + 2
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_bytes({kind[0]: v}) for v in data)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(v) for v in data)
    return 3 + sum(1 + len(k.encode()) + _value_bytes(v) for k, v in data.items())  # M


def wait_until_ended(run: Run, folder: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """Waits until the poller's index holds no active job and the table holds ``count`` ended ones.
    (Listing outputs/ or scanning the table every second costs moto more CPU than the jobs do once
    a few thousand objects are in the bucket.)"""
    ddb = run.stack.client("dynamodb", caller=BENCH)

    def active(bucket: str) -> int:
        return int(ddb.query(TableName=run.stack.table_name, IndexName=DUE_INDEX, Select="COUNT",
                             KeyConditionExpression="poll_bucket = :b",
                             ExpressionAttributeValues={":b": {"S": bucket}})["Count"])

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not active(DUE_BUCKET) and not active(QUEUED_BUCKET):
            found = jobs(run, folder)
            if sum(1 for j in found if j["status"] in ("DELIVERED", "FAILED")) >= count:
                return found
        time.sleep(1.0)
    found = jobs(run, folder)
    statuses = Counter(j["status"] for j in found)
    raise SystemExit(f"bench: {folder}: only {dict(statuses)} of {count} jobs after {timeout:.0f} s")


def delivery_lags(run: Run, ended: list[dict[str, Any]]) -> list[float]:
    failed = [j for j in ended if j["status"] != "DELIVERED"]
    if failed:
        raise SystemExit(f"bench: {len(failed)} jobs failed, e.g. {failed[0].get('failure')}")
    return [float(j["delivered_at"]) - run.emulator.finished_at[j["provider_id"]] for j in ended]


def latency(samples: int) -> None:
    print(f"\n3. Completion-to-delivered latency ({samples} jobs per path, pairs dropped 0.7 s apart)")
    with local_stack(webhooks=True, poll_seconds=None, render_seconds=1.0, concurrency=8, max_in_flight=50) as run:
        drop_pairs(run, "webhook", samples, spacing=0.7)
        lags = delivery_lags(run, wait_until_ended(run, "webhook", samples, timeout=120 + samples))
    print(f"   webhook path: p50 {median(lags):.2f} s, p90 {percentile(lags, 90):.2f} s, max {max(lags):.2f} s  "
          "(target p50 <= 2 s)")
    interval = 5.0
    # The per-job backoff capped at the schedule interval, as the template's defaults are (60 s / 1 min).
    env = {"S2V_POLL_MIN_SECONDS": "1", "S2V_POLL_MAX_SECONDS": str(int(interval))}
    with local_stack(webhooks=False, poll_seconds=interval, render_seconds=1.0, concurrency=8, max_in_flight=50,
                     env=env) as run:
        drop_pairs(run, "poll", samples, spacing=0.7)
        lags = delivery_lags(run, wait_until_ended(run, "poll", samples, timeout=120 + samples * 2))
    print(f"   poll path, schedule every {interval:g} s: p50 {median(lags):.2f} s, p90 {percentile(lags, 90):.2f} s, "
          f"max {max(lags):.2f} s = {max(lags) / interval:.2f} x the interval  (target: bounded by the interval)")


def burst(pairs: int, *, quiet: bool = False) -> dict[str, Any]:
    if quiet:  # a side-by-side run (bench.side_by_side) prints the figures itself
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            return burst(pairs)
    print(f"\n5. Burst: {pairs} pairs dropped at once, renders take no time")
    with local_stack(webhooks=True, poll_seconds=None, render_seconds=0.0, concurrency=64,
                     max_in_flight=max(2, pairs)) as run:
        before = Counter(run.stack.request_counts)  # the stack's own set-up requests are not a job's
        cpu, moto_cpu = time.process_time(), run.stack.moto_cpu_seconds
        started = time.time()
        drop_pairs(run, "burst", pairs)
        dropped = time.time()
        ended = wait_until_ended(run, "burst", pairs, timeout=600 + pairs)
        sizes = [item_bytes(i) for i in raw_jobs(run, "burst")]
        delivered = [j for j in ended if j["status"] == "DELIVERED"]
        last = max(float(j.get("delivered_at") or 0) for j in ended)
        stems = Counter(os.path.basename(str(t["input"]["image"]).split("?")[0])
                        for t in run.emulator.tasks.values())
        duplicates = sum(n - 1 for n in stems.values())
        print(f"   uploads took {dropped - started:.1f} s; {len(delivered)}/{pairs} delivered, "
              f"{run.emulator.submission_count} submissions, {duplicates} duplicate submissions")
        failures = Counter((j.get("failure") or {}).get("code", "?") for j in ended if j["status"] != "DELIVERED")
        if failures:
            print(f"   FAILED jobs by code: {dict(failures)}, e.g. "
                  f"{next(j['failure'] for j in ended if j['status'] != 'DELIVERED')}")
        rate = pairs / (last - started)
        print(f"   drain rate {rate:.1f} jobs/s, first upload to last delivery {last - started:.1f} s  "
              "(target >= 20 jobs/s, exactly one submission per pair)")
        # One process runs moto, the emulator and every handler: one GIL, so CPU per job sets the pace.
        cpu, moto_cpu = time.process_time() - cpu, run.stack.moto_cpu_seconds - moto_cpu
        app_requests = sum(n for (caller, _, _), n in (Counter(run.stack.request_counts) - before).items()
                           if caller == "app")
        print(f"   CPU per job {cpu / pairs * 1000:.0f} ms in this process ({os.cpu_count()} cores, one GIL): "
              f"moto {moto_cpu / pairs * 1000:.0f} ms for {app_requests / pairs:.0f} AWS requests, "
              f"handlers + router + emulator {(cpu - moto_cpu) / pairs * 1000:.0f} ms; "
              f"ceiling at one core {pairs / cpu:.1f} jobs/s")
        billed = Counter({f"{svc} {op}": n for (caller, svc, op), n in (Counter(run.stack.request_counts) - before)
                          .items() if caller == "app"})
        print(f"   billed AWS requests per job {sum(billed.values()) / pairs:.1f}: "
              + ", ".join(f"{what} {n / pairs:.2f}" for what, n in billed.most_common()))
        print(f"   job items {sum(sizes) / len(sizes) / 1024:.2f} KB on average, {max(sizes) / 1024:.2f} KB at most "
              f"(a write of one: {math.ceil(max(sizes) / 1024)} write units, in a transaction "
              f"{2 * math.ceil(max(sizes) / 1024)})")
        return {"jobs": ended, "pairs": pairs, "requests": Counter(run.stack.request_counts) - before,
                "durations": run.stack.invocation_durations(),
                "scheduled_durations": run.stack.invocation_durations(scheduled=True), "template": run.stack.template,
                "summary": {"cpu_ms": cpu / pairs * 1000, "moto_ms": moto_cpu / pairs * 1000, "rate": rate,
                            "delivered": len(delivered), "duplicates": duplicates,
                            "failures": [j.get("failure") for j in ended if j["status"] != "DELIVERED"],
                            "billed": {k: n / pairs for k, n in billed.items()},
                            "item_bytes_mean": sum(sizes) / len(sizes), "item_bytes_max": max(sizes)}}


def queue_release(pairs: int, *, max_in_flight: int = 2, render_seconds: float = 2.0) -> None:
    """Pairs over MaxInFlightJobs wait as QUEUED; each finished render should hand its slot to the
    next job at once. The poller keeps the template's one-minute schedule, so a slot that waited
    for it would show as minutes, not seconds."""
    print(f"\n5b. Queue release: {pairs} pairs, MaxInFlightJobs {max_in_flight}, renders of {render_seconds:g} s, "
          "poller on its 1-minute schedule")
    with local_stack(webhooks=True, poll_seconds=None, render_seconds=render_seconds, concurrency=max_in_flight,
                     max_in_flight=max_in_flight) as run:
        started = drop_pairs(run, "queued", pairs)
        ended = wait_until_ended(run, "queued", pairs, timeout=120 + pairs * render_seconds * 4)
        last = max(float(j.get("delivered_at") or 0) for j in ended)
        queued = sum(1 for j in ended if any(h["status"] == "QUEUED" for h in j["history"]))
        render_bound = pairs / max_in_flight * render_seconds
    print(f"   {queued} jobs queued; all {pairs} delivered {last - started:.1f} s after the first upload, "
          f"{(last - started) / render_bound:.2f} x the {render_bound:.0f} s the renders alone take "
          f"(a slot idle until each scheduled run would take ~{pairs / max_in_flight:.0f} min)")
