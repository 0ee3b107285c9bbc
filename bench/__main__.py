"""`make bench`: s2v's speed and memory figures, each next to a baseline measured in the same run.

Figures: delivery peak memory across sizes (ratio to the smallest), delivery throughput (ratio
to boto3 upload_file of the same bytes from disk), handler cold-start import time (ratio to a
handler importing only boto3). `python -m bench --quick` shrinks the sizes.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = [str(ROOT / "layers" / "common"), str(ROOT / "local"), str(ROOT / "tests")]
sys.path[:0] = PATHS
MIB = 1024 * 1024
HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
BLOCK = bytes(range(256)) * 4096  # 1 MiB


class _Video(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        size = int(self.path.strip("/").split(".")[0])
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(HEAD)
        left = size - len(HEAD)
        while left > 0:
            n = min(left, len(BLOCK))
            self.wfile.write(BLOCK[:n])
            left -= n


CHILD = """
import sys, time
sys.path[:0] = {paths!r}
from helpers.aws import client
from s2v.delivery import DeliveryPolicy, copy_url_to_s3
s3 = client("s3", {endpoint!r})
policy = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=4 * 1024**3, allow_loopback_http=True)
start = time.perf_counter()
copy_url_to_s3({url!r}, s3_client=s3, bucket="bench-bucket", key="outputs/bench.mp4", policy=policy)
seconds = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(seconds, peak // 1024)
"""

BASELINE_CHILD = """
import sys, time
sys.path[:0] = {paths!r}
from helpers.aws import client
s3 = client("s3", {endpoint!r})
start = time.perf_counter()
s3.upload_file({path!r}, "bench-bucket", "outputs/baseline.mp4")
print(time.perf_counter() - start)
"""


def _run(code: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=900)
    if out.returncode:
        raise SystemExit(f"bench: a measurement failed:\n{out.stderr[-2000:]}")
    return [float(v) for v in out.stdout.split()]


def delivery(sizes_mb: list[int]) -> None:
    from s2v_local.motoserver import MotoServer

    moto = MotoServer()
    moto.start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Video)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    from helpers.aws import client

    client("s3", moto.endpoint_url).create_bucket(Bucket="bench-bucket")
    print("\n1. Delivery peak memory (VmHWM of a fresh interpreter copying the stream into moto's S3)")
    peaks: dict[int, int] = {}
    speeds: dict[int, float] = {}
    for mb in sizes_mb:
        seconds, peak = _run(CHILD.format(paths=PATHS, endpoint=moto.endpoint_url, url=f"{base}/{mb * MIB}.mp4"))
        peaks[mb], speeds[mb] = int(peak), mb / seconds
        print(f"   {mb:>5} MB stream: peak {int(peak):>4} MB RSS, {mb / seconds:7.1f} MB/s")
    smallest, largest = min(peaks), max(peaks)
    print(f"   ratio peak({largest} MB) / peak({smallest} MB) = {peaks[largest] / peaks[smallest]:.2f}  "
          "(target <= 1.2, and <= 150 MB)")
    mb = sizes_mb[len(sizes_mb) // 2]
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        tmp.write(HEAD + BLOCK * mb)
        tmp.flush()
        baseline = _run(BASELINE_CHILD.format(paths=PATHS, endpoint=moto.endpoint_url, path=tmp.name))[0]
    print(f"\n2. Delivery throughput, {mb} MB: stream copy {speeds[mb]:.1f} MB/s vs upload_file from disk "
          f"{mb / baseline:.1f} MB/s: ratio {speeds[mb] / (mb / baseline):.2f}  (target >= 0.8)")
    server.shutdown()
    moto.stop()


COLD = """
import os, sys, time, importlib.util
sys.path[:0] = [{layer!r}]
os.environ.update({{"S2V_BUCKET": "b", "S2V_JOBS_TABLE": "t", "AWS_DEFAULT_REGION": "us-east-1",
                   "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "s2v"}})
start = time.perf_counter()
if {path!r}:
    spec = importlib.util.spec_from_file_location("handler", {path!r})
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
else:
    import boto3  # noqa: F401
print(time.perf_counter() - start)
"""


def built_layer(target: Path) -> Path:
    """The layer's code as layers/common/Makefile ships it: with unchecked-hash bytecode, because
    Lambda cannot write .pyc files to /opt. (Dependencies come from the venv, compiled by pip.)"""
    site = target / "python"
    shutil.copytree(ROOT / "layers" / "common" / "s2v", site / "s2v", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(str(site), quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return site


def cold_start(runs: int) -> None:
    print(f"\n4. Cold start: import time of each handler in a fresh interpreter (median of {runs}) vs boto3 only")
    tmp = tempfile.TemporaryDirectory(prefix="s2v-bench-layer-")
    layer = built_layer(Path(tmp.name))

    def median(path: str) -> float:
        return statistics.median(_run(COLD.format(layer=str(layer), path=path))[0] for _ in range(runs))

    baseline = median("")
    print(f"   {'boto3 only':<10} {baseline * 1000:7.1f} ms")
    for name in ("ingest", "webhook", "poll", "deliver"):
        seconds = median(str(ROOT / "functions" / name / "app.py"))
        print(f"   {name:<10} {seconds * 1000:7.1f} ms  ratio {seconds / baseline:.2f}  (target <= 1.5)")
    tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("figure", nargs="?", choices=["delivery", "cold_start"], help="run one figure only")
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer runs")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    sizes = [10, 50] if args.quick else [10, 200, 1024]
    if args.figure in (None, "delivery"):
        delivery(sizes)
    if args.figure in (None, "cold_start"):
        cold_start(3 if args.quick else 7)


if __name__ == "__main__":
    main()
