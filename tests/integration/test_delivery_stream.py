"""Delivery of real HTTP streams into moto's S3: nothing partial, clear failures (bounded memory: test_delivery.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.aws import client
from s2v.adapters.delivery import DeliveryPolicy, copy_url_to_s3
from s2v.model.errors import DeliveryError

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@dataclass
class Knobs:
    size: int = 100_000
    truncate_at: int | None = None
    content_type: str = "video/mp4"
    status: int = 200
    location: str = ""
    body_head: bytes = MP4_HEAD
    send_length: bool = True
    lie_length: int | None = None
    hits: list[str] = field(default_factory=list)


def video_bytes(size: int, head: bytes = MP4_HEAD) -> Iterator[bytes]:
    yield head[:size]
    left = size - len(head)
    block = bytes(range(256)) * 4096  # 1 MiB
    while left > 0:
        yield block[: min(left, len(block))]
        left -= len(block)


class VideoServer:
    """A loopback server generating MP4-looking bodies on the fly, with fault knobs."""

    def __init__(self) -> None:
        self.knobs = Knobs()
        knobs_ref = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                k = knobs_ref.knobs
                k.hits.append(self.path)
                if k.location:
                    self.send_response(302)
                    self.send_header("Location", k.location)
                    self.end_headers()
                    return
                self.send_response(k.status)
                self.send_header("Content-Type", k.content_type)
                if k.send_length:
                    self.send_header("Content-Length", str(k.lie_length or k.size))
                self.end_headers()
                if k.status != 200:
                    return
                sent = 0
                for chunk in video_bytes(k.size, k.body_head):
                    if k.truncate_at is not None and sent + len(chunk) > k.truncate_at:
                        self.wfile.write(chunk[: k.truncate_at - sent])
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/out.mp4"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[VideoServer]:
    srv = VideoServer()
    yield srv
    srv.close()


@pytest.fixture
def s3(moto_endpoint: str, unique: str):
    s3 = client("s3", moto_endpoint)
    s3.create_bucket(Bucket=f"out-{unique}")
    s3.bucket = f"out-{unique}"  # type: ignore[attr-defined]
    return s3


LOCAL = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=50_000_000, allow_loopback_http=True,
                       chunk_size=5 * 1024 * 1024)


def nothing_left(s3, key: str) -> bool:
    objects = s3.list_objects_v2(Bucket=s3.bucket, Prefix=key).get("KeyCount", 0)
    uploads = s3.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    return objects == 0 and not uploads


def test_a_multipart_sized_stream_is_copied_whole_with_metadata_and_tags(server: VideoServer, s3) -> None:
    server.knobs = Knobs(size=12 * 1024 * 1024 + 7)
    got = copy_url_to_s3(server.url, s3_client=s3, bucket=s3.bucket, key="outputs/a.mp4", policy=LOCAL,
                         metadata={"s2v-job-id": "j1"}, tags={"s2v-job-id": "j1"})
    assert got.size == 12 * 1024 * 1024 + 7
    head = s3.head_object(Bucket=s3.bucket, Key="outputs/a.mp4")
    assert head["ContentLength"] == got.size and head["Metadata"]["s2v-job-id"] == "j1"
    assert head["ContentType"] == "video/mp4"
    tags = s3.get_object_tagging(Bucket=s3.bucket, Key="outputs/a.mp4")["TagSet"]
    assert {"Key": "s2v-job-id", "Value": "j1"} in tags
    body = s3.get_object(Bucket=s3.bucket, Key="outputs/a.mp4")["Body"].read()
    assert body == b"".join(video_bytes(got.size))


def test_copying_the_same_url_twice_leaves_one_identical_object(server: VideoServer, s3) -> None:
    server.knobs = Knobs(size=300_000)
    for _ in range(2):
        copy_url_to_s3(server.url, s3_client=s3, bucket=s3.bucket, key="outputs/b.mp4", policy=LOCAL)
    listed = s3.list_objects_v2(Bucket=s3.bucket, Prefix="outputs/")["Contents"]
    assert [o["Key"] for o in listed] == ["outputs/b.mp4"] and listed[0]["Size"] == 300_000


@pytest.mark.parametrize(("knobs", "message", "retryable"), [
    (Knobs(size=9 * 1024 * 1024, truncate_at=6 * 1024 * 1024), "interrupted", True),
    (Knobs(size=200_000, truncate_at=100_000), "interrupted", True),
    (Knobs(content_type="text/html"), "content type text/html", False),
    (Knobs(size=60_000_000), "over the cap", False),
    (Knobs(size=60_000_000, send_length=False), "without Content-Length", False),
    (Knobs(status=404), "expired", False),
    (Knobs(status=503), "503", True),
    (Knobs(body_head=b"<html><body>not a video</body></html>"), "not an MP4", False),
    (Knobs(location="https://evil.example.com/x.mp4"), "allow-list", False),
    (Knobs(location="http://10.1.2.3/x.mp4"), "https", False),
])
def test_failed_copies_leave_nothing_under_outputs_and_say_why(
    server: VideoServer, s3, knobs: Knobs, message: str, retryable: bool,
) -> None:
    server.knobs = knobs
    with pytest.raises(DeliveryError, match=message) as info:
        copy_url_to_s3(server.url, s3_client=s3, bucket=s3.bucket, key="outputs/c.mp4", policy=LOCAL)
    assert info.value.retryable is retryable
    assert nothing_left(s3, "outputs/c.mp4")


def test_loopback_is_refused_outside_local_mode(server: VideoServer, s3) -> None:
    strict = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=10**9)
    server.knobs = Knobs()
    with pytest.raises(DeliveryError, match="https"):
        copy_url_to_s3(server.url, s3_client=s3, bucket=s3.bucket, key="outputs/d.mp4", policy=strict)
    assert server.knobs.hits == []  # refused before any request was made
