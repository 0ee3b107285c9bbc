"""The deliver step against moto and the emulator: reports, idempotency, re-uploads, notifications,
and the deliver handler's deadline."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers.delivery_servers import MB, Output, VideoServer
from helpers.events import event_bus
from helpers.flow import Flow, make_flow
from s2v.adapters.delivery import STOP_MARGIN_SECONDS
from s2v.flows import poll
from s2v.flows.deliver import on_job_change
from s2v.flows.status import DELIVERY_GRACE_SECONDS
from s2v.model.errors import TransientError
from s2v.model.jobs import Status
from s2v_local import samples
from s2v_local.emulator import Emulator
from s2v_local.stack import LambdaContext

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0) as em:
        yield em


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator, bus: tuple[str, Any]) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url, S2V_EVENT_BUS=bus[0])


@pytest.fixture
def bus(moto_endpoint: str, unique: str) -> tuple[str, Any]:
    """The flow's own event bus and a reader of every s2v event published on it."""
    return event_bus(moto_endpoint, unique)


@pytest.fixture
def events(bus: tuple[str, Any]) -> Any:
    return bus[1]


def render(flow: Flow, stem: str, *, image: bytes | None = None) -> str:
    """Drop a pair, submit it, and poll until the emulator's render is COMPLETED."""
    flow.put(f"inputs/talks/{stem}.png", image or samples.portrait_png(128, 128))
    flow.put(f"inputs/talks/{stem}.wav", samples.speech_wav(0.8))
    result = flow.ingest(f"inputs/talks/{stem}.wav")
    assert result.outcome == "submitted", result
    deadline = time.monotonic() + 30
    while flow.job(result.job_id).status is not Status.COMPLETED:
        assert time.monotonic() < deadline, flow.job(result.job_id)
        flow.clock.advance(10)
        poll.run(flow.deps)
        time.sleep(0.05)
    return result.job_id


def outputs(flow: Flow) -> list[str]:
    listed = flow.s3.list_objects_v2(Bucket=flow.bucket, Prefix="outputs/").get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_duplicate_stream_records_make_one_video_one_report_and_one_event(flow: Flow, events: Any) -> None:
    job_id = render(flow, "alice")
    assert [on_job_change(job_id, flow.deps) for _ in range(3)] == ["delivered", "noop", "noop"]
    assert outputs(flow) == ["outputs/talks/alice.json", "outputs/talks/alice.mp4"]
    delivered = [e for e in events() if e["detail-type"] == "Video delivered"]
    assert len(delivered) == 1 and delivered[0]["detail"]["job_id"] == job_id
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key="outputs/talks/alice.json")["Body"].read())
    assert report["status"] == "DELIVERED" and report["output"]["bytes"] > 0
    assert flow.job(job_id).status is Status.DELIVERED


def test_a_reupload_keeps_the_older_video_under_its_job_id(flow: Flow) -> None:
    first = render(flow, "bob")
    on_job_change(first, flow.deps)
    second = render(flow, "bob", image=samples.portrait_png(160, 160))  # changed bytes → a new job
    assert second != first
    on_job_change(second, flow.deps)
    assert outputs(flow) == sorted([
        "outputs/talks/bob.json", "outputs/talks/bob.mp4",
        f"outputs/talks/bob.{first[:12]}.json", f"outputs/talks/bob.{first[:12]}.mp4",
    ])
    newest = flow.s3.head_object(Bucket=flow.bucket, Key="outputs/talks/bob.mp4")["Metadata"]["s2v-job-id"]
    kept = flow.s3.head_object(Bucket=flow.bucket, Key=f"outputs/talks/bob.{first[:12]}.mp4")
    assert newest == second and kept["Metadata"]["s2v-job-id"] == first


def test_a_folder_name_template_names_the_video_and_colliding_names_keep_both(flow: Flow) -> None:
    # Given a folder whose defaults name every video after the folder alone (so two names collide)
    flow.put("inputs/talks/_defaults.json", json.dumps({"output_name": "../{folder}-{resolution}"}).encode())
    first = render(flow, "carol")
    assert on_job_change(first, flow.deps) == "delivered"
    second = render(flow, "dave")
    assert on_job_change(second, flow.deps) == "delivered"
    # Then the names render from the template, stay in the folder ('..' is dropped), and the
    # later delivery takes the plain name while the earlier video and report are kept by job id
    assert outputs(flow) == sorted([
        "outputs/talks/talks-480p.json", "outputs/talks/talks-480p.mp4",
        f"outputs/talks/talks-480p.{first[:12]}.json", f"outputs/talks/talks-480p.{first[:12]}.mp4",
    ])
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key="outputs/talks/talks-480p.json")["Body"].read())
    assert report["job_id"] == second and report["output"]["key"] == "outputs/talks/talks-480p.mp4"
    assert report["param_sources"]["output_name"] == "inputs/talks/_defaults.json"


def test_an_expired_output_fails_the_job_with_an_error_report_and_an_event(
    flow: Flow, emulator: Emulator, events: Any,
) -> None:
    from s2v_local.emulator import Faults

    job_id = render(flow, "carol")
    emulator.faults = Faults(output_404=True)
    try:
        assert on_job_change(job_id, flow.deps) == "failed"
    finally:
        emulator.faults = Faults()
    job = flow.job(job_id)
    assert job.status is Status.FAILED and job.failure and job.failure.stage == "deliver"
    assert "expired" in job.failure.reason
    assert on_job_change(job_id, flow.deps) == "reported"
    assert outputs(flow) == ["outputs/talks/carol.error.json"]
    assert [e["detail-type"] for e in events()] == ["Job failed"]


def deliver_handler(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """functions/deliver/app.py loaded as Lambda would, its cold-start Deps swapped for the flow's."""
    for name, value in {"S2V_BUCKET": flow.bucket, "S2V_JOBS_TABLE": flow.table, "S2V_LOCAL_MODE": "true",
                        "S2V_OUTPUT_ALLOWED_HOSTS": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("deliver_app_under_test", ROOT / "functions" / "deliver" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "deps", flow.deps)
    return module


def invocation(seconds_left: float) -> LambdaContext:
    return LambdaContext(function_name="deliver", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:"
                         "deliver", memory_limit_in_mb=512, aws_request_id="request-1", log_group_name="deliver",
                         log_stream_name="stream", deadline=time.monotonic() + seconds_left)


@pytest.mark.filterwarnings("ignore:No application metrics to publish")  # the failed invocation counts nothing
def test_the_handler_stops_a_slow_download_before_lambda_would_and_the_poller_redelivers(
    flow: Flow, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a rendered job whose output comes from a source that drips its last bytes (6 s in all)
    job_id = render(flow, "dave")
    good_url = flow.job(job_id).output_url
    handler = deliver_handler(flow, monkeypatch)
    record = {"eventName": "MODIFY", "dynamodb": {"Keys": {"job_id": {"S": job_id}},
                                                  "NewImage": {"status": {"S": "COMPLETED"}}}}
    with VideoServer() as slow:
        flow.deps.store.touch(flow.job(job_id),
                              output_url=slow.serve(Output(size=6 * MB + 60, drip_at=6 * MB, drip_seconds=0.1)))

        # When the stream invokes the deliver function with 2 s left before its stop margin
        start = time.monotonic()
        with pytest.raises(TransientError) as failure:
            handler.handler({"Records": [record]}, invocation(STOP_MARGIN_SECONDS + 2))
        took = time.monotonic() - start

    # Then it gave up at its deadline, saying why: nothing under outputs/, no upload left open, the job
    # still COMPLETED (the stream retries the record; the poller redelivers after its grace period)
    assert 2 <= took < 3.5, f"the handler took {took:.1f} s"
    assert str(failure.value) == ("download stopped after 6.0 MB of 6.0 MB: the delivery deadline passed, the "
                                  "output from 127.0.0.1 came too slowly; a later attempt may work")
    assert outputs(flow) == []
    assert flow.s3.list_multipart_uploads(Bucket=flow.bucket).get("Uploads", []) == []
    assert flow.job(job_id).status is Status.COMPLETED
    # and when the poller asks for the delivery again, a healthy source completes it
    flow.deps.store.touch(flow.job(job_id), output_url=good_url)
    flow.clock.advance(DELIVERY_GRACE_SECONDS + 1)
    assert poll.check(flow.job(job_id), flow.deps) == "redeliver"
    assert flow.job(job_id).delivery_attempts == 1
    assert handler.handler({"Records": [record]}, invocation(900)) == {"outcomes": ["delivered"]}
    assert outputs(flow) == ["outputs/talks/dave.json", "outputs/talks/dave.mp4"]
