"""Figure 7: `s2v dashboard`'s pages at 10,000 jobs, each next to the DynamoDB reads it is made of.

The jobs table (from template.yaml, on moto's server) gets N job items shaped like real ones
(history, params, inputs: ~2 KB each; 80 % delivered, 10 % failed, the rest waiting or active)
plus the spend guard's day items. The dashboard runs as `s2v dashboard` runs it (its own HTTP
server on 127.0.0.1) and each page is fetched over HTTP with its access cookie. Baselines are
the one query a page is built on, sent straight to DynamoDB. Note that moto walks the whole table
for every query (real DynamoDB reads only the page), so absolute times here are moto's.
"""

from __future__ import annotations

import logging
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import median

STATES = ["DELIVERED"] * 16 + ["FAILED"] * 2 + ["QUEUED", "PROCESSING"]
CODES = ["not_an_image", "audio_too_long", "provider_failed", "params_invalid"]


def _job_item(n: int, now: float, rng: random.Random) -> dict[str, Any]:
    from s2v.adapters.store import serialize
    from s2v.model.jobs import Failure, InputObject, Job, Status

    status = Status(rng.choice(STATES))
    created = now - (10_000 - n) * 240 - rng.random()  # one every 4 minutes: ~28 days
    folder = rng.choice(["talks", "talks/2025", "news", "lessons/en", "lessons/de"])
    stem = f"{rng.choice(['alice', 'bob', 'carol', 'dave'])}-{n:05d}"
    steps = ["RECEIVED", "SUBMITTING", "SUBMITTED", "PROCESSING", "COMPLETED", "DELIVERED"]
    steps = steps if status is Status.DELIVERED else ["RECEIVED", str(status)]
    job = Job(job_id=f"{n:032x}", status=status, version=len(steps), folder=folder, stem=stem,
              image=InputObject(f"inputs/{folder}/{stem}.png", "9f" * 16, 240_000),
              audio=InputObject(f"inputs/{folder}/{stem}.wav", "4e" * 16, 1_900_000),
              created_at=created, updated_at=created + 60, params={"prompt": "a calm news anchor",
                                                                   "resolution": "480p", "seed": -1},
              audio_seconds=12.5, estimated_cost_usd=0.39, provider_id=f"{n:032x}"[::-1],
              provider_model="wavespeed-ai/wan-2.2/speech-to-video", render_seconds=30 + rng.random() * 60,
              submitted_at=created + 2, completed_at=created + 50, delivered_at=created + 55,
              admitted_day=datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d"), reserved_cost_usd=0.39,
              output_key=f"outputs/{folder}/{stem}.mp4", report_key=f"outputs/{folder}/{stem}.json",
              failure=Failure("validate", rng.choice(CODES), "inputs/... is not an image: upload a PNG, JPEG or "
                              "WebP file") if status is Status.FAILED else None,
              history=tuple({"status": s, "at": created + i * 10, "note": f"step {s.lower()}"}
                            for i, s in enumerate(steps)))
    return {k: serialize(v) for k, v in job.to_dict().items() if v is not None}


def _fill(ddb: Any, table: str, jobs: int, now: float) -> float:
    from s2v.adapters.store import SPEND_PREFIX, serialize

    rng = random.Random(7)
    items = [_job_item(n, now, rng) for n in range(jobs)]
    for d in range(30):
        day = (datetime.fromtimestamp(now, UTC) - timedelta(days=d)).strftime("%Y-%m-%d")
        items.append({"job_id": {"S": SPEND_PREFIX + day}, "spent": serialize(round(rng.random() * 15, 2))})
    for i in range(0, len(items), 25):
        request = {table: [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]}
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    return sum(len(str(i)) for i in items[:jobs]) / jobs


def _timed(fn: Any, runs: int) -> float:
    return _side_by_side([fn], runs)[0]


def _side_by_side(fns: list[Any], runs: int) -> list[float]:
    """Median time of each, measured in turns (a, b, a, b, ...) so drift hits both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, kept in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return [median(t) for t in times]


def run(jobs: int = 10_000, runs: int = 5) -> None:
    import boto3
    import requests

    from helpers.aws import create_jobs_table
    from s2v_cli.dashboard import running
    from s2v_cli.queries import CREATED_INDEX, LIST_ATTRIBUTES, SEARCH_ATTRIBUTES, STATUS_INDEX
    from s2v_cli.target import Target
    from s2v_cli.views import StackLimits
    from s2v_local.motoserver import MotoServer

    print(f"\n7. Dashboard at {jobs:,} jobs: page over HTTP vs the one DynamoDB query it is built on "
          f"(median of {runs}; moto walks the table per query)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = MotoServer()
    server.start()
    try:
        endpoint = server.endpoint_url
        ddb = create_jobs_table(endpoint, "bench-dashboard")

        def client(service: str) -> Any:
            return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                                aws_access_key_id="testing", aws_secret_access_key="testing")

        started = time.perf_counter()
        size = _fill(ddb, "bench-dashboard", jobs, time.time())
        print(f"   filled in {time.perf_counter() - started:.0f} s; a job item is ~{size / 1024:.1f} KB as JSON")
        target = Target(description="bench", bucket="bench", table="bench-dashboard",
                        limits=StackLimits(daily_budget_usd=20.0, max_in_flight=2), client_factory=client)

        def query(index: str, key: str, value: str, limit: int = 51,
                  attributes: tuple[str, ...] | None = LIST_ATTRIBUTES) -> None:
            names = {"#k": key, **{f"#p{i}": a for i, a in enumerate(attributes or ())}}
            extra = {"ProjectionExpression": ", ".join(n for n in names if n != "#k")} if attributes else {}
            ddb.query(TableName="bench-dashboard", IndexName=index, KeyConditionExpression="#k = :v",
                      ExpressionAttributeNames=names, ExpressionAttributeValues={":v": {"S": value}},
                      ScanIndexForward=False, Limit=limit, **extra)

        with running(target, access_key="bench") as url:
            base = url.split("/?", 1)[0]
            session = requests.Session()
            session.get(url.replace("/?", "/jobs?"), timeout=60)  # the access cookie (not the overview yet)

            def page(path: str) -> str:
                response = session.get(base + path, timeout=300)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
                return response.text

            print("   baseline: the query the page is built on (same index, page size and attributes), sent "
                  "straight to DynamoDB")
            rows = [
                ("jobs page, all states", "/jobs", lambda: query(CREATED_INDEX, "record_type", "job")),
                ("jobs page, state FAILED", "/jobs?state=FAILED", lambda: query(STATUS_INDEX, "status", "FAILED")),
            ]
            for label, path, baseline in rows:
                page(path)  # warm: templates compiled, connections open
                base_s, page_s = _side_by_side([baseline, lambda p=path: page(p)], runs)
                print(f"   {label:<26} {page_s * 1000:7.0f} ms  vs one query {base_s * 1000:6.0f} ms  "
                      f"ratio {page_s / base_s:.2f}")
            whole = _timed(lambda: query(CREATED_INDEX, "record_type", "job", attributes=None), runs)
            print(f"   {'(the same query, whole items)':<26} {whole * 1000:7.0f} ms")
            # No job matches: the page reads chunks of keys + folder + name until its time or read bound.
            searched = int(re.search(r"Searched (\d+) jobs", page("/jobs?name=nobody")).group(1))  # type: ignore
            one, search = _side_by_side([lambda: query(CREATED_INDEX, "record_type", "job", searched,
                                                       SEARCH_ATTRIBUTES), lambda: page("/jobs?name=nobody")], runs)
            print(f"   {'jobs page, name search':<26} {search * 1000:7.0f} ms  vs one query {one * 1000:6.0f} ms  "
                  f"ratio {search / one:.2f}  ({searched} jobs searched, then 'keep searching')")
            job_id = f"{jobs - 1:032x}"
            page(f"/jobs/{job_id}")
            get, one = _side_by_side([lambda: ddb.get_item(TableName="bench-dashboard", Key={"job_id": {"S": job_id}}),
                                      lambda: page(f"/jobs/{job_id}")], runs)
            print(f"   {'one job page':<26} {one * 1000:7.0f} ms  vs one GetItem {get * 1000:6.0f} ms  "
                  f"ratio {one / get:.2f}")
            started = time.perf_counter()
            first = page("/")  # the page answers within its wait; figures still being read follow
            answered = time.perf_counter() - started
            while 'id="still-reading"' in first:
                time.sleep(0.5)
                first = page("/?fragment=1")
            complete = time.perf_counter() - started
            warm = _timed(lambda: page("/"), runs)
            print(f"   {'overview, first view':<26} {answered * 1000:7.0f} ms  to answer, {complete:.1f} s until every "
                  "figure is in (9 COUNT queries, 2 window queries, 1 BatchGetItem, 2 GetItems)")
            print(f"   {'overview, within 10 s':<26} {warm * 1000:7.0f} ms  (figures kept 10 s, or 3x as long as "
                  "they took; active states' counts 2 s)")
    finally:
        server.stop()
