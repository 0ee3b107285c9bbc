"""`make demo`: the whole pipeline on the embedded local stack, as a user would use it.

Starts moto + the WaveSpeed emulator + the template-driven router, uploads a generated portrait
and speech clip with boto3, shows the job moving through its states, downloads the MP4 and prints
where it is. With WAVESPEED_API_KEY set, the real API renders instead of the emulator.

The stack keeps its data in the local data folder (``snapshot``): the jobs and videos of earlier
runs are restored at start and this run's are saved at the end, so `s2v dashboard` shows them
afterwards. Each run's portrait carries the run's time, so each run is a new job.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from s2v_local import home, samples
from s2v_local.probe import probe_media

FOLDER, STEM = "demo", "alice"
TIMEOUT_SECONDS = 600
# The handlers' JSON logs would drown the progress lines; S2V_DEMO_LOG_LEVEL=INFO shows them.
LOG_LEVEL = os.environ.get("S2V_DEMO_LOG_LEVEL", "WARNING")


def _find_job(stack: Any, image_etag: str) -> dict[str, Any] | None:
    """This run's job: the demo pair's job made from the portrait uploaded (earlier runs' jobs
    may be in the table too)."""
    from s2v.adapters.store import deserialize_item

    ddb = stack.client("dynamodb")
    for page in ddb.get_paginator("scan").paginate(TableName=stack.table_name):
        for item in page.get("Items", []):
            job = deserialize_item(item)
            if (job.get("stem"), job.get("folder")) == (STEM, FOLDER) and (
                    (job.get("image") or {}).get("etag") == image_etag):
                return job
    return None


def _portrait() -> bytes:
    """The sample portrait, stamped with this run's time (a PNG text chunk) so it is a new pair."""
    import io

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("s2v-demo-run", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f" {time.time_ns()}")
    out = io.BytesIO()
    Image.open(io.BytesIO(samples.portrait_png())).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _wait_for_job(stack: Any, image_etag: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    seen: list[str] = []
    started = time.monotonic()
    while time.monotonic() < deadline:
        job = _find_job(stack, image_etag)
        status = job.get("status") if job else "waiting for the pair to settle"
        if not seen or seen[-1] != status:
            seen.append(str(status))
            print(f"  [{time.monotonic() - started:6.1f}s] {status}", flush=True)
        if job and status in ("DELIVERED", "FAILED"):
            return job
        time.sleep(0.5)
    raise SystemExit(f"demo: no result within {TIMEOUT_SECONDS} s (last status: {seen[-1] if seen else '-'})")


def real_output_hosts() -> str:
    """Where a real render may be downloaded from: S2V_OUTPUT_ALLOWED_HOSTS if set, else the same
    default as a deployment (the provider's domain and its one CDN host, never *.cloudfront.net)."""
    from s2v.config import DEFAULT_OUTPUT_HOSTS

    return os.environ.get("S2V_OUTPUT_ALLOWED_HOSTS") or ",".join(DEFAULT_OUTPUT_HOSTS)


def run(out_dir: Path, data_dir: Path | None = None) -> int:
    """``data_dir``: where the stack's data is kept between runs (default: ``snapshot.default_data_dir()``)."""
    from s2v_local.emulator import Emulator
    from s2v_local.snapshot import default_data_dir
    from s2v_local.stack import LocalStack

    data_dir = data_dir or default_data_dir()
    print(f"This checkout's local stack keeps its jobs and videos in {data_dir} (delete it to start empty).")
    real_key = os.environ.get("WAVESPEED_API_KEY", "")
    with ExitStack() as stack_ctx:
        if real_key:
            print("Using the real WaveSpeed API (WAVESPEED_API_KEY is set): inputs go through its media "
                  "upload and status comes by polling. This render is billed to your account.")
            stack = stack_ctx.enter_context(LocalStack(
                provider_base_url=os.environ.get("WAVESPEED_BASE_URL", "https://api.wavespeed.ai"),
                api_key=real_key, webhooks=False, poll_interval_seconds=5, queue_delay_seconds=2,
                parameters={"LogLevel": LOG_LEVEL}, data_dir=data_dir, stack_name=home.stack_name(),
                env_overrides={"S2V_MEDIA_MODE": "upload", "S2V_LOCAL_MODE": "false",
                               "S2V_OUTPUT_ALLOWED_HOSTS": real_output_hosts()},
            ))
        else:
            emulator = stack_ctx.enter_context(Emulator(render_seconds=2.0))
            stack = stack_ctx.enter_context(LocalStack(emulator=emulator, provider_base_url=emulator.base_url,
                                                       poll_interval_seconds=2, queue_delay_seconds=2,
                                                       parameters={"LogLevel": LOG_LEVEL}, data_dir=data_dir,
                                                       stack_name=home.stack_name()))
            print(f"Local stack up: AWS endpoint {stack.endpoint_url}, WaveSpeed emulator {emulator.base_url}")
        if any(stack.restored):
            print(f"Restored {stack.restored[0]} table item(s) and {stack.restored[1]} object(s) of earlier runs "
                  f"from {data_dir}")
        s3 = stack.client("s3")
        image_key, audio_key = f"inputs/{FOLDER}/{STEM}.png", f"inputs/{FOLDER}/{STEM}.wav"
        wav = samples.speech_wav(4.0)
        put = s3.put_object(Bucket=stack.bucket, Key=image_key, Body=_portrait(), ContentType="image/png")
        s3.put_object(Bucket=stack.bucket, Key=audio_key, Body=wav, ContentType="audio/wav")
        print(f"Uploaded s3://{stack.bucket}/{image_key} and s3://{stack.bucket}/{audio_key}; job progress:")
        job = _wait_for_job(stack, put["ETag"].strip('"'))
        if job["status"] == "FAILED":
            error_key = job.get("error_key") or f"outputs/{FOLDER}/{STEM}.error.json"
            print(f"demo: the job failed: {job.get('failure', {}).get('reason')}", file=sys.stderr)
            print(f"      details: s3://{stack.bucket}/{error_key}", file=sys.stderr)
            return 1
        out_dir.mkdir(parents=True, exist_ok=True)
        video_path = out_dir / f"{STEM}.mp4"
        s3.download_file(stack.bucket, job["output_key"], str(video_path))
        report = json.loads(s3.get_object(Bucket=stack.bucket, Key=job["report_key"])["Body"].read())
        media = probe_media(video_path)
        print()
        print(f"Video delivered to s3://{stack.bucket}/{job['output_key']}")
        print(f"Downloaded to {video_path.resolve()}  ({media.describe()})")
        print(f"Job report s3://{stack.bucket}/{job['report_key']}:")
        print(json.dumps({k: report[k] for k in ("job_id", "status", "params", "provider", "audio_seconds",
                                                 "estimated_cost_usd", "timings")}, indent=2))
        if not media.has_video or not media.has_audio:
            print("demo: the delivered file is not a playable video with sound", file=sys.stderr)
            return 1
        print()
        print(f"The stack's jobs and videos are kept in {data_dir}: run `.venv/bin/s2v dashboard` to see them "
              "(`s2v local up --detach` runs the stack in the background; see the README).")
    return 0


def main() -> None:
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    warnings.filterwarnings("ignore", message="No application metrics to publish")  # locally nobody reads them
    try:
        code = run(Path(os.environ.get("S2V_DEMO_OUTPUT", "demo-output")))
    except KeyboardInterrupt:
        code = 130
    except home.DataInUse as exc:
        print(f"demo: {exc}", file=sys.stderr)
        code = 2
    except Exception as exc:  # the demo's contract: a clear message and a non-zero exit
        print(f"demo: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
