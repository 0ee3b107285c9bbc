"""copy_url_to_s3 against moto's real server and a loopback video server: whole copies, bounded
memory, and failures that leave no object and no multipart upload behind."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from helpers.delivery_servers import MB, Output, VideoServer, run_copy_in_child, video_bytes, video_sha256
from s2v.adapters.delivery import MIN_PART_BYTES, DeliveredObject, DeliveryPolicy, copy_url_to_s3
from s2v.model.errors import DeliveryError

LOCAL = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=64 * MB, allow_loopback_http=True,
                       read_timeout=5.0)
KEY = "outputs/talks/alice.mp4"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def bucket(s3: Any, unique: str) -> Iterator[str]:
    name = f"delivery-{unique}"
    s3.create_bucket(Bucket=name)
    yield name
    # moto keeps objects in this process's memory: drop them.
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])


@pytest.fixture(scope="module")
def videos() -> Iterator[VideoServer]:
    with VideoServer() as server:
        yield server


def left_behind(s3: Any, bucket: str) -> tuple[list[str], list[str]]:
    """(object keys, keys with multipart uploads in progress) in ``bucket``."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys, uploads


def stored_sha256(s3: Any, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MB):
        digest.update(chunk)
    return digest.hexdigest()


def test_a_small_video_is_copied_with_its_metadata_and_tags(videos: VideoServer, s3: Any, bucket: str) -> None:
    url = videos.serve(Output(size=300_000))

    got = copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=LOCAL,
                         metadata={"s2v-job-id": "job-1", "s2v-image-key": "inputs/talks/alice.png"},
                         tags={"s2v-job-id": "job-1"})

    head = s3.head_object(Bucket=bucket, Key=KEY)
    assert got == DeliveredObject(bucket=bucket, key=KEY, size=300_000, etag=head["ETag"].strip('"'),
                                  content_type="video/mp4")
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == video_bytes(0, 300_000)
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {"s2v-job-id": "job-1", "s2v-image-key": "inputs/talks/alice.png"}
    assert s3.get_object_tagging(Bucket=bucket, Key=KEY)["TagSet"] == [{"Key": "s2v-job-id", "Value": "job-1"}]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_multipart_video_is_copied_byte_for_byte(videos: VideoServer, s3: Any, bucket: str, framing: str) -> None:
    size = 2 * MIN_PART_BYTES + 7  # two full parts and a short one
    url = videos.serve(Output(size=size, framing=framing, content_type="application/octet-stream"))

    got = copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=LOCAL,
                         metadata={"s2v-job-id": "job-2"}, tags={"s2v-job-id": "job-2", "s2v-stage": "deliver"})

    assert got.size == size and got.etag.endswith("-3")  # S3's ETag for a three-part upload
    assert stored_sha256(s3, bucket, KEY) == video_sha256(size)
    assert s3.head_object(Bucket=bucket, Key=KEY)["Metadata"] == {"s2v-job-id": "job-2"}
    tags = s3.get_object_tagging(Bucket=bucket, Key=KEY)["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("s2v-job-id", "job-2"), ("s2v-stage", "deliver")]
    assert left_behind(s3, bucket) == ([KEY], [])


def test_a_300_mb_stream_is_copied_in_bounded_memory(
    videos: VideoServer, s3: Any, s3_endpoint: str, bucket: str,
) -> None:
    size = 300 * MB
    url = videos.serve(Output(size=size))
    policy = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=1024 * MB, allow_loopback_http=True)

    copied = run_copy_in_child(url, endpoint=s3_endpoint, bucket=bucket, key=KEY, policy=policy)

    print(f"300 MB copy: peak RSS {copied.peak_rss / MB:.0f} MB (after imports {copied.baseline_rss / MB:.0f} MB)")
    assert copied.size == size
    assert copied.peak_rss < 150 * MB  # 81 MB measured, 50 MB of it imports
    assert stored_sha256(s3, bucket, KEY) == video_sha256(size)


FAILURES = [
    pytest.param(Output(size=20 * MB, truncate_at=12 * MB), LOCAL,
                 "download stopped after 12 MB of 20 MB: the provider connection was interrupted", True,
                 id="truncated-during-multipart"),
    pytest.param(Output(size=3 * MB, truncate_at=MB), LOCAL,
                 "download stopped after 1.0 MB of 3.0 MB: the provider connection was interrupted", True,
                 id="truncated-before-first-part"),
    pytest.param(Output(size=20 * MB, truncate_at=10 * MB, framing="chunked"), LOCAL,
                 "download stopped after 10 MB: the provider connection was interrupted", True,
                 id="chunked-stream-cut"),
    pytest.param(Output(size=20 * MB, stall_at=10 * MB, stall_seconds=30), DeliveryPolicy(
                 allowed_hosts=("127.0.0.1",), max_bytes=64 * MB, allow_loopback_http=True, read_timeout=0.5),
                 "download stopped after 10 MB of 20 MB: the provider sent nothing for 0.5 s", True,
                 id="provider-goes-silent"),
    pytest.param(Output(content_type="text/html"), LOCAL, "content type text/html, not a video", False,
                 id="wrong-content-type"),
    pytest.param(Output(headers={"Content-Encoding": "gzip"}), LOCAL, "gzip-encoded", False,
                 id="encoded-body"),
    pytest.param(Output(size=2 * MB, mp4=False), LOCAL, "is not an MP4 video (no 'ftyp' box", False,
                 id="not-an-mp4"),
    pytest.param(Output(framing="close"), LOCAL, "without Content-Length or chunked framing", False,
                 id="length-unknowable"),
    pytest.param(Output(size=40 * MB), DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=16 * MB,
                                                      allow_loopback_http=True),
                 "the output is 40 MB, over the cap of 16 MB (S2V_MAX_OUTPUT_BYTES); nothing was downloaded", False,
                 id="oversize-declared"),
    pytest.param(Output(size=40 * MB, framing="chunked"), DeliveryPolicy(
                 allowed_hosts=("127.0.0.1",), max_bytes=16 * MB, allow_loopback_http=True),
                 "larger than the cap of 16 MB (S2V_MAX_OUTPUT_BYTES); download stopped at 16 MB", False,
                 id="oversize-undeclared"),
    pytest.param(Output(status=404), LOCAL, "the output URL has expired or no longer exists (HTTP 404", False,
                 id="expired-404"),
    pytest.param(Output(status=410), LOCAL, "the output URL has expired or no longer exists (HTTP 410", False,
                 id="expired-410"),
    pytest.param(Output(status=403), LOCAL, "a signed output URL may have expired", False, id="forbidden"),
    pytest.param(Output(status=503), LOCAL, "answered HTTP 503", True, id="provider-unavailable"),
    pytest.param(Output(redirect_to="/outputs/loop.mp4"), LOCAL, "redirected more than 3 times", False,
                 id="redirect-loop"),
]


@pytest.mark.parametrize(("output", "policy", "reason", "retryable"), FAILURES)
def test_a_failed_copy_leaves_no_object_and_says_why(
    videos: VideoServer, s3: Any, bucket: str, output: Output, policy: DeliveryPolicy, reason: str, retryable: bool,
) -> None:
    url = videos.serve(output, path="/outputs/loop.mp4" if output.redirect_to else None)

    with pytest.raises(DeliveryError) as failure:
        copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=policy, metadata={"s2v-job-id": "j"},
                       tags={"s2v-job-id": "j"})

    assert reason in failure.value.reason
    assert failure.value.retryable is retryable
    assert left_behind(s3, bucket) == ([], [])


def test_a_redirect_to_a_host_off_the_allow_list_is_refused_before_contacting_it(
    videos: VideoServer, s3: Any, bucket: str,
) -> None:
    with VideoServer() as elsewhere:
        target = elsewhere.serve(Output(), host="localhost")
        url = videos.serve(Output(redirect_to=target))

        with pytest.raises(DeliveryError) as failure:
            copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=LOCAL)

        assert "redirected to a refused address: output URL host localhost is not on the allow-list " \
               "S2V_OUTPUT_ALLOWED_HOSTS" in failure.value.reason
        assert not failure.value.retryable
        assert elsewhere.hits(target) == 0
    assert left_behind(s3, bucket) == ([], [])


def test_a_redirect_within_the_allow_list_is_followed(videos: VideoServer, s3: Any, bucket: str) -> None:
    target = videos.serve(Output(size=500_000))
    url = videos.serve(Output(redirect_to=target))

    got = copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=LOCAL)

    assert got.size == 500_000 and videos.hits(target) == 1


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_loopback_is_refused_outside_local_mode(videos: VideoServer, s3: Any, bucket: str, scheme: str) -> None:
    strict = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=64 * MB)
    url = videos.serve(Output()).replace("http://", f"{scheme}://")

    with pytest.raises(DeliveryError) as failure:
        copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=strict)

    assert ("must use https" if scheme == "http" else "127.0.0.1 (loopback)") in failure.value.reason
    assert videos.hits(url) == 0
    assert left_behind(s3, bucket) == ([], [])


def test_two_copies_of_one_url_to_one_key_leave_one_whole_object(videos: VideoServer, s3: Any, bucket: str) -> None:
    size = 18 * MB
    url = videos.serve(Output(size=size))
    results: list[DeliveredObject | BaseException] = []

    def copy() -> None:
        try:
            results.append(copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=LOCAL))
        except BaseException as exc:
            results.append(exc)

    copies = [threading.Thread(target=copy) for _ in range(2)]
    for thread in copies:
        thread.start()
    for thread in copies:
        thread.join()

    assert [r.size if isinstance(r, DeliveredObject) else r for r in results] == [size, size]
    assert left_behind(s3, bucket) == ([KEY], [])
    assert stored_sha256(s3, bucket, KEY) == video_sha256(size)


class MisreportedSize:
    """The real client, except HeadObject reports one byte less than S3 stored."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        head = self._s3.head_object(**kwargs)
        return {**head, "ContentLength": head["ContentLength"] - 1}


def test_a_stored_object_that_fails_verification_is_removed(videos: VideoServer, s3: Any, bucket: str) -> None:
    url = videos.serve(Output(size=MB))

    with pytest.raises(DeliveryError) as failure:
        copy_url_to_s3(url, s3_client=MisreportedSize(s3), bucket=bucket, key=KEY, policy=LOCAL)

    assert "held 1048575 bytes after copying 1048576; the object was removed" in failure.value.reason
    assert failure.value.retryable
    assert left_behind(s3, bucket) == ([], [])


def test_a_missing_bucket_is_reported_as_a_delivery_failure(videos: VideoServer, s3: Any, unique: str) -> None:
    url = videos.serve(Output(size=10 * MB))

    with pytest.raises(DeliveryError) as failure:
        copy_url_to_s3(url, s3_client=s3, bucket=f"missing-{unique}", key=KEY, policy=LOCAL)

    assert f"writing s3://missing-{unique}/{KEY} failed" in failure.value.reason
    assert not failure.value.retryable
