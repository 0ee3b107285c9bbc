"""Figures 1-2: the deliver code's peak memory across stream sizes, and its throughput.

Each copy runs in a fresh interpreter (VmHWM is that process's peak RSS). The video comes from
bench.video_server in its own process; moto's S3 runs in this one.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile

from bench.common import MIB, PATHS, ROOT, median, run_child
from bench.video_server import video_bytes

COPY = """
import sys, time
sys.path[:0] = {paths!r}
from helpers.aws import client
from s2v.adapters.delivery import DeliveryPolicy, copy_url_to_s3
s3 = client("s3", {endpoint!r})
policy = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=4 * 1024**3, allow_loopback_http=True)
start = time.perf_counter()
# With a deadline, as the deliver handler copies (its watchdog thread included in the figures).
copy_url_to_s3({url!r}, s3_client=s3, bucket="bench-bucket", key="outputs/bench.mp4", policy=policy,
               deadline=time.monotonic() + 3600)
seconds = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(seconds, peak // 1024)
"""

UPLOAD_FILE = """
import sys, time
sys.path[:0] = {paths!r}
from helpers.aws import client
s3 = client("s3", {endpoint!r})
start = time.perf_counter()
s3.upload_file({path!r}, "bench-bucket", "outputs/baseline.mp4")
print(time.perf_counter() - start)
"""


def run(sizes_mb: list[int], *, samples: int) -> None:
    from helpers.aws import client
    from s2v_local.motoserver import MotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = MotoServer()
    moto.start()
    videos = subprocess.Popen([sys.executable, "-m", "bench.video_server"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert videos.stdout is not None
        base = f"http://127.0.0.1:{videos.stdout.readline().strip()}"
        client("s3", moto.endpoint_url).create_bucket(Bucket="bench-bucket")

        def copy(mb: int) -> tuple[float, int]:
            url = f"{base}/{mb * MIB}.mp4"
            seconds, peak = run_child(COPY.format(paths=PATHS, endpoint=moto.endpoint_url, url=url))
            return seconds, int(peak)

        print("\n1. Delivery peak memory (VmHWM of a fresh interpreter copying an HTTP stream into moto's S3)")
        peaks: dict[int, int] = {}
        for mb in sizes_mb:
            seconds, peaks[mb] = copy(mb)
            print(f"   {mb:>5} MB stream: peak {peaks[mb]:>4} MB RSS  ({mb / seconds:.0f} MB/s)")
        smallest, largest = min(peaks), max(peaks)
        print(f"   ratio peak({largest} MB) / peak({smallest} MB) = {peaks[largest] / peaks[smallest]:.2f}  "
              f"(target <= 1.2; largest peak {peaks[largest]} MB, target <= 150 MB)")

        mb = sizes_mb[len(sizes_mb) // 2]
        with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
            tmp.write(video_bytes(mb * MIB))
            tmp.flush()
            ours, theirs = [], []
            for _ in range(samples):  # interleaved, so drift on a noisy machine hits both alike
                ours.append(mb / copy(mb)[0])
                theirs.append(mb / run_child(UPLOAD_FILE.format(paths=PATHS, endpoint=moto.endpoint_url,
                                                                path=tmp.name))[0])
        print(f"\n2. Delivery throughput, {mb} MB, median of {samples}: stream copy {median(ours):.0f} MB/s vs "
              f"boto3 upload_file from disk {median(theirs):.0f} MB/s: ratio {median(ours) / median(theirs):.2f}  "
              "(target >= 0.8)")
    finally:
        videos.terminate()
        videos.wait(timeout=10)
        moto.stop()
