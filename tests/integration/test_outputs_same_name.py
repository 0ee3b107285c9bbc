"""One owner of ``outputs/`` (``s2v.flows.outputs``): jobs that share an output name, delivered,
failed or cancelled in any order, or at once, never lose or overwrite each other's outputs.

Against moto's server (which enforces S3's conditional writes) and a real HTTP video server. The
invariants, checked after every generated schedule:

1. the plain ``<name>.mp4`` is the video of the newest delivered job (by the order jobs were
   recorded), whoever finished last;
2. every delivered job's record names an object that holds its own video (and its report); every
   failed job's record names its own error report: nothing was lost, nothing is another job's;
3. no error or cancelled marker older than the plain video sits at a plain name;
4. only the outputs module wrote under ``outputs/``, and copies from the provider went to keys only
   their job writes.
"""

from __future__ import annotations

import ast
import itertools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import s2v.adapters.delivery
from helpers.delivery_servers import Output, VideoServer
from helpers.flow import Flow, make_flow
from s2v.flows import deliver, outputs
from s2v.model.jobs import Failure, InputObject, Job, Status
from s2v.model.outputs import CANCELLED, ERROR, META_JOB, VIDEO, owner, plain_key, rank

ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = ("deliver", "fail", "cancel")


@pytest.fixture(scope="module")
def videos() -> Iterator[VideoServer]:
    with VideoServer() as server:
        yield server


@pytest.fixture(scope="module")
def flow(moto_endpoint: str, videos: VideoServer) -> Flow:
    return make_flow(moto_endpoint, uuid.uuid4().hex[:10], "http://127.0.0.1:9")


_sizes = itertools.count(20_000, 7)


def recorded_job(flow: Flow, videos: VideoServer, folder: str, stem: str, created_at: float, outcome: str,
                 *, output_name: str = "") -> Job:
    """A job as the pipeline leaves it before the deliver step: COMPLETED with a distinct video,
    FAILED without a report, or CANCELLED with the provider told."""
    job_id = uuid.uuid4().hex
    status = {"deliver": Status.COMPLETED, "fail": Status.FAILED, "cancel": Status.CANCELLED}[outcome]
    job = Job(job_id=job_id, status=status, version=1, folder=folder, stem=stem,
              image=InputObject(f"inputs/{folder}/{stem}.png", "e1", 10),
              audio=InputObject(f"inputs/{folder}/{stem}.wav", "e2", 10),
              created_at=created_at, updated_at=created_at, output_name=output_name)
    fields: dict[str, Any] = {}
    if status is Status.COMPLETED:
        fields = {"output_url": videos.serve(Output(size=next(_sizes))), "provider_id": "task-" + job_id[:8]}
    elif status is Status.FAILED:
        fields = {"failure": Failure(stage="provider", code="provider_failed", reason="the provider said it failed")}
    else:
        fields = {"cancelled_by": "tester", "cancelled_at": created_at, "provider_delete": "deleted"}
    job = replace(job, **{k: v for k, v in fields.items() if k in Job.__dataclass_fields__})
    return flow.deps.store.create(job)


def head(flow: Flow, key: str) -> dict[str, Any] | None:
    return flow.deps.objects.head(key)


def assert_outputs_hold(flow: Flow, jobs: list[Job], base: str) -> None:
    stored = {job.job_id: flow.job(job.job_id) for job in jobs}
    delivered = [j for j in stored.values() if j.status is Status.DELIVERED]
    # 2. every record names its own objects
    for job in stored.values():
        named = {Status.DELIVERED: (job.output_key, job.report_key), Status.FAILED: (job.error_key,),
                 Status.CANCELLED: (job.report_key,)}[job.status]
        for key in named:
            assert key, f"{job.status} job {job.job_id[:8]} names no output"
            found = head(flow, key)
            assert found is not None, f"{job.job_id[:8]}'s record names {key}, which does not exist"
            assert found["Metadata"][META_JOB] == job.job_id, f"{key} holds another job's output"
    # 1. the plain name is the newest delivered job's
    plain = head(flow, plain_key(base, VIDEO))
    if delivered:
        newest = max(delivered, key=lambda j: rank(j.created_at, j.job_id))
        assert plain is not None and owner(plain)[0] == newest.job_id, "the plain name is not the newest video"
        assert newest.output_key == plain_key(base, VIDEO)
        # 3. no older marker beside it
        for marker in (ERROR, CANCELLED):
            found = head(flow, plain_key(base, marker))
            assert found is None or owner(found)[1] > owner(plain)[1], f"a stale {marker.suffix} beside the video"
    else:
        assert plain is None
    # no delivered video lost: one video object per delivered job carries its id
    listed = flow.s3.list_objects_v2(Bucket=flow.bucket, Prefix=base).get("Contents", [])
    video_owners = [owner(head(flow, o["Key"]))[0] for o in listed if o["Key"].endswith(".mp4")]
    assert sorted(set(video_owners)) == sorted(j.job_id for j in delivered)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outcomes=st.lists(st.sampled_from(OUTCOMES), min_size=2, max_size=3), data=st.data())
def test_jobs_sharing_a_name_in_any_order_keep_every_output_and_the_newest_holds_the_name(
        flow: Flow, videos: VideoServer, outcomes: list[str], data: st.DataObject) -> None:
    # Given jobs for one name, recorded in this order, each ending its own way
    folder = "same-" + uuid.uuid4().hex[:8]
    jobs = [recorded_job(flow, videos, folder, "alice", 1_000.0 + i, outcome) for i, outcome in enumerate(outcomes)]
    # When the deliver step handles them in any order, some twice (stream redelivery)
    order = data.draw(st.permutations(list(range(len(jobs)))))
    again = data.draw(st.lists(st.sampled_from(list(range(len(jobs)))), max_size=2))
    for i in [*order, *again]:
        deliver.on_job_change(jobs[i].job_id, flow.deps)
    # Then every invariant holds
    assert_outputs_hold(flow, jobs, f"outputs/{folder}/alice")


def test_overlapping_deliveries_of_one_name_keep_both_videos_and_the_newest_wins(
        flow: Flow, videos: VideoServer) -> None:
    for _ in range(4):
        # Given four renders for one name finishing at the same moment
        folder = "race-" + uuid.uuid4().hex[:8]
        jobs = [recorded_job(flow, videos, folder, "bob", 2_000.0 + i, "deliver") for i in range(4)]
        barrier = threading.Barrier(len(jobs))
        threads = [threading.Thread(target=_deliver_at_once, args=(flow, job, barrier)) for job in reversed(jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Then none is lost and the newest holds the plain name
        assert_outputs_hold(flow, jobs, f"outputs/{folder}/bob")


def _deliver_at_once(flow: Flow, job: Job, barrier: threading.Barrier) -> None:
    barrier.wait()
    deliver.on_job_change(job.job_id, flow.deps)


def test_two_stems_one_output_name_the_later_recorded_holds_it_whoever_finishes_last(
        flow: Flow, videos: VideoServer) -> None:
    folder = "tmpl-" + uuid.uuid4().hex[:8]
    older = recorded_job(flow, videos, folder, "take1", 3_000.0, "deliver", output_name="final")
    newer = recorded_job(flow, videos, folder, "take2", 3_001.0, "deliver", output_name="final")
    deliver.on_job_change(newer.job_id, flow.deps)
    deliver.on_job_change(older.job_id, flow.deps)  # the older render finishes last
    assert_outputs_hold(flow, [older, newer], f"outputs/{folder}/final")
    assert flow.job(older.job_id).output_key == f"outputs/{folder}/final.{older.job_id[:12]}.mp4"


def test_a_retry_that_delivers_clears_the_cancelled_and_error_markers_beside_it(
        flow: Flow, videos: VideoServer) -> None:
    folder = "retry-" + uuid.uuid4().hex[:8]
    cancelled = recorded_job(flow, videos, folder, "c1", 4_000.0, "cancel")
    failed = recorded_job(flow, videos, folder, "c1", 4_001.0, "fail")
    deliver.on_job_change(cancelled.job_id, flow.deps)
    deliver.on_job_change(failed.job_id, flow.deps)
    retry = recorded_job(flow, videos, folder, "c1", 4_002.0, "deliver")
    deliver.on_job_change(retry.job_id, flow.deps)
    listed = {o["Key"] for o in flow.s3.list_objects_v2(Bucket=flow.bucket, Prefix=f"outputs/{folder}/")["Contents"]}
    assert f"outputs/{folder}/c1.mp4" in listed
    assert f"outputs/{folder}/c1.cancelled.json" not in listed and f"outputs/{folder}/c1.error.json" not in listed
    # the older entries are kept under their jobs' names, and their records say so
    assert_outputs_hold(flow, [cancelled, failed, retry], f"outputs/{folder}/c1")


def test_the_copy_from_the_provider_only_ever_writes_a_key_its_own_job_writes(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # (a size check that fails after the copy deletes what is at that key: it must be the job's own)
    written: list[tuple[str, str]] = []
    real = s2v.adapters.delivery.copy_url_to_s3

    def spy(url: str, **kwargs: Any) -> Any:
        written.append((kwargs["key"], kwargs["metadata"][META_JOB]))
        return real(url, **kwargs)

    monkeypatch.setattr(s2v.adapters.delivery, "copy_url_to_s3", spy)
    folder = "stage-" + uuid.uuid4().hex[:8]
    jobs = [recorded_job(flow, videos, folder, "dana", 5_000.0 + i, "deliver") for i in range(2)]
    for job in jobs:
        deliver.on_job_change(job.job_id, flow.deps)
    assert [key for key, _ in written] == [outputs.staging_key(j, flow.deps.settings) for j in jobs]
    assert all(key.endswith(job_id + ".mp4") for key, job_id in written)


# --- one writer ------------------------------------------------------------------------------------

S3_WRITES = {"put_object", "copy_object", "delete_object", "delete_objects", "upload_file", "upload_fileobj",
             "create_multipart_upload", "complete_multipart_upload", "copy_url_to_s3", "put_json"}
# The primitives (they write the key their caller names) and the one owner that names outputs/ keys.
# Elsewhere only ``deps.objects.upload_file`` (segment audio and fits under work/), which refuses any
# key under outputs/ (tested below).
WRITERS = {"adapters/objects.py", "adapters/delivery.py", "flows/outputs.py"}


def test_only_the_outputs_module_calls_s3_writes_directly() -> None:
    package = ROOT / "layers/common/s2v"
    offenders = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                guarded = (name == "upload_file" and isinstance(node.func, ast.Attribute)
                           and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "objects")
                if name in S3_WRITES and relative not in WRITERS and not guarded:
                    offenders.append(f"{relative}:{node.lineno} {name}")
    assert offenders == [], "S3 writes outside s2v.flows.outputs and the adapters: " + ", ".join(offenders)


def test_the_object_store_refuses_to_write_under_outputs(flow: Flow, tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    with pytest.raises(PermissionError, match=r"only s2v\.flows\.outputs"):
        flow.deps.objects.upload_file(str(path), "outputs/sneaky.mp4", content_type="video/mp4")
    flow.deps.objects.upload_file(str(path), "work/fine.bin", content_type="application/octet-stream")


# --- the local stack enforces the conditions the owner relies on ------------------------------------

@pytest.mark.parametrize("condition", [{"IfMatch": '"0123"'}, {"IfNoneMatch": "*"}, {"CopySourceIfMatch": '"0123"'}])
def test_the_local_s3_refuses_a_copy_whose_condition_fails_like_aws(flow: Flow, condition: dict[str, str]) -> None:
    flow.put("work/cond-src", b"new")
    flow.put("work/cond-dst", b"old")
    with pytest.raises(ClientError) as refused:
        flow.s3.copy_object(Bucket=flow.bucket, Key="work/cond-dst",
                            CopySource={"Bucket": flow.bucket, "Key": "work/cond-src"}, **condition)
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert flow.s3.get_object(Bucket=flow.bucket, Key="work/cond-dst")["Body"].read() == b"old"
    etag = flow.s3.head_object(Bucket=flow.bucket, Key="work/cond-dst")["ETag"]
    flow.s3.copy_object(Bucket=flow.bucket, Key="work/cond-dst", CopySource={"Bucket": flow.bucket,
                                                                            "Key": "work/cond-src"}, IfMatch=etag)
    assert flow.s3.get_object(Bucket=flow.bucket, Key="work/cond-dst")["Body"].read() == b"new"


def test_a_cancel_racing_a_reuploads_delivery_leaves_the_earlier_video_where_its_record_says(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from s2v.flows.cancel import cancel

    # Given an earlier job delivered under the plain name, and a re-upload's render just finished
    folder = "cancel-" + uuid.uuid4().hex[:8]
    earlier = recorded_job(flow, videos, folder, "eve", 6_000.0, "deliver")
    deliver.on_job_change(earlier.job_id, flow.deps)
    reupload = recorded_job(flow, videos, folder, "eve", 6_001.0, "deliver")
    # When the re-upload is cancelled right after its video took the plain name
    real = outputs.place_video

    def placed_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        key = real(*args, **kwargs)
        cancel(reupload.job_id, flow.deps, by="tester")
        return key

    monkeypatch.setattr(outputs, "place_video", placed_then_cancelled)
    assert deliver.on_job_change(reupload.job_id, flow.deps) == "cancelled"
    monkeypatch.undo()
    deliver.on_job_change(reupload.job_id, flow.deps)  # the CANCELLED record
    # Then the re-upload left nothing but its entry, and the earlier video is where its record says
    assert flow.job(reupload.job_id).status is Status.CANCELLED
    assert_outputs_hold(flow, [earlier, reupload], f"outputs/{folder}/eve")
