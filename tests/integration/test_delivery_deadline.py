"""A copy ends at its deadline whatever the source does (drips bytes, goes silent, never answers):
the multipart upload is aborted, nothing is left under outputs/, and the reason says a later attempt
may work. Real loopback servers, moto's S3."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.aws import client
from helpers.delivery_servers import MB, Output, VideoServer
from s2v.adapters.delivery import DeliveryPolicy, copy_url_to_s3
from s2v.model.errors import DeliveryError

# A read timeout far longer than the deadlines below: only the deadline can end these copies in time.
LOCAL = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=64 * MB, allow_loopback_http=True,
                       read_timeout=20.0)
KEY = "outputs/talks/slow.mp4"
OUT_OF_TIME = "the delivery deadline"
SLACK = 1.0  # seconds past the deadline a stopped copy may take (aborting the upload included)


@pytest.fixture(scope="module")
def videos() -> Iterator[VideoServer]:
    with VideoServer() as server:
        yield server


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return client("s3", moto_endpoint)


@pytest.fixture
def bucket(s3: Any, unique: str) -> str:
    s3.create_bucket(Bucket=f"deadline-{unique}")
    return f"deadline-{unique}"


def record_calls(s3: Any) -> list[str]:
    """The S3 operations ``s3`` (a fresh client) makes from now on, the managed transfer's included."""
    calls: list[str] = []
    s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def left_behind(s3: Any, bucket: str) -> tuple[list[str], list[str]]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys, uploads


def copy_with(seconds: float, url: str, s3: Any, bucket: str) -> tuple[DeliveryError, float]:
    """Copy ``url`` with a deadline ``seconds`` away; the failure and how long the copy took."""
    start = time.monotonic()
    with pytest.raises(DeliveryError) as failure:
        copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=LOCAL, deadline=start + seconds)
    return failure.value, time.monotonic() - start


def test_a_source_dripping_bytes_is_cut_at_the_deadline_and_its_upload_aborted(
    videos: VideoServer, s3: Any, bucket: str,
) -> None:
    # Given a source that sends 6 MB (a first part goes to S3), then one byte every 0.2 s: never
    # silent long enough for the read timeout, and 14 MB would take it weeks.
    url = videos.serve(Output(size=20 * MB, drip_at=6 * MB, drip_seconds=0.2))
    calls = record_calls(s3)

    # When the copy has 3 s
    error, took = copy_with(3.0, url, s3, bucket)

    # Then it stops at the deadline, aborts the upload it had begun, and says why
    assert 3.0 <= took < 3.0 + SLACK, f"the copy took {took:.1f} s"
    assert calls == ["CreateMultipartUpload", "UploadPart", "AbortMultipartUpload"]
    assert error.retryable
    assert error.reason == ("download stopped after 6.0 MB of 20 MB: the delivery deadline passed, the output from "
                            "127.0.0.1 came too slowly; a later attempt may work")
    assert left_behind(s3, bucket) == ([], [])


def test_a_silent_source_is_cut_at_the_deadline_not_at_the_read_timeout(
    videos: VideoServer, s3: Any, bucket: str,
) -> None:
    url = videos.serve(Output(size=3 * MB, stall_at=MB, stall_seconds=60))

    error, took = copy_with(1.5, url, s3, bucket)

    assert 1.5 <= took < 1.5 + SLACK, f"the copy took {took:.1f} s"
    assert error.retryable and error.reason.startswith("download stopped after 1.0 MB of 3.0 MB: " + OUT_OF_TIME)
    assert left_behind(s3, bucket) == ([], [])


def test_a_source_that_never_answers_is_given_up_at_the_deadline(s3: Any, bucket: str) -> None:
    # Given a server that accepts the connection (the kernel's backlog) and never sends a header
    with socket.create_server(("127.0.0.1", 0)) as mute:
        url = f"http://127.0.0.1:{mute.getsockname()[1]}/outputs/v.mp4"

        error, took = copy_with(1.0, url, s3, bucket)

    assert 1.0 <= took < 1.0 + SLACK, f"the copy took {took:.1f} s"
    assert error.retryable and OUT_OF_TIME in error.reason and "127.0.0.1" in error.reason
    assert left_behind(s3, bucket) == ([], [])


def test_a_copy_whose_deadline_has_passed_does_not_contact_the_source(
    videos: VideoServer, s3: Any, bucket: str,
) -> None:
    url = videos.serve(Output(size=MB))

    error, took = copy_with(-1.0, url, s3, bucket)

    assert took < SLACK and videos.hits(url) == 0
    assert error.retryable and OUT_OF_TIME in error.reason
    assert left_behind(s3, bucket) == ([], [])


def test_a_copy_that_finishes_before_its_deadline_is_stored(videos: VideoServer, s3: Any, bucket: str) -> None:
    url = videos.serve(Output(size=6 * MB))

    got = copy_url_to_s3(url, s3_client=s3, bucket=bucket, key=KEY, policy=LOCAL, deadline=time.monotonic() + 60)

    assert got.size == 6 * MB and left_behind(s3, bucket) == ([KEY], [])
