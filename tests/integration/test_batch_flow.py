"""Manifests through the real flows (moto's S3, DynamoDB and SQS, the emulator over HTTP), one step
at a time: bad manifests are refused whole with a report and nothing submitted; rows wait for late
files; a row's values beat the folder's defaults; the same manifest twice makes nothing new; the
report is rebuilt from the table and the "Batch finished" event is sent once.
"""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

import pytest

from helpers import media_files
from helpers.aws import client
from helpers.events import event_bus
from helpers.flow import Flow
from s2v.flows import batch, poll
from s2v.flows.stream import on_job_change
from s2v.model.jobs import Status, row_job_id
from s2v.model.manifest import batch_id_for
from s2v_local.emulator import Emulator, Faults

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@cache
def image() -> bytes:
    return media_files.portrait("png", 160, 200)


@cache
def speech() -> bytes:
    return media_files.speech(1.0)


@pytest.fixture(scope="module")
def emulator_options() -> dict[str, Any]:
    # Every render fails at once: rows end quickly without ffmpeg, and a failed row is still a row.
    return {"render_seconds": 0, "faults": Faults(fail_renders=True)}


@pytest.fixture
def flow_env(moto_endpoint: str, unique: str, bus: tuple[str, Any]) -> dict[str, str]:
    sqs = client("sqs", moto_endpoint)
    queue = sqs.create_queue(QueueName=f"ingest-{unique}")["QueueUrl"]
    return dict(S2V_INGEST_QUEUE_URL=queue,
                S2V_MAX_IN_FLIGHT_JOBS="20", S2V_MAX_MANIFEST_ROWS="5", S2V_BATCH_WAIT_SECONDS="600",
                S2V_BATCH_RETRY_SECONDS="1",
                S2V_EVENT_BUS=bus[0], S2V_BATCH_REPORT_SECONDS="0")


@pytest.fixture
def bus(moto_endpoint: str, unique: str) -> tuple[str, Any]:
    """The flow's own event bus and a reader of every s2v event published on it."""
    return event_bus(moto_endpoint, unique)


@pytest.fixture
def events(bus: tuple[str, Any]) -> Any:
    return bus[1]


def pump(flow: Flow) -> int:
    """Run every batch-rows message now in the ingest queue through the flow; how many there were."""
    sqs, url = flow.deps.sqs, flow.deps.settings.ingest_queue_url
    count = 0
    while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in msgs:
            batch.on_rows(json.loads(m["Body"])[batch.ROWS_MESSAGE], flow.deps)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            count += 1
    return count


def report(flow: Flow, key: str) -> dict[str, Any]:
    return dict(json.loads(flow.s3.get_object(Bucket=flow.bucket, Key=key)["Body"].read()))


@pytest.mark.parametrize(("name", "body", "code", "words"), [
    ("broken.batch.json", b'{"rows": [', "invalid_manifest", "is not valid JSON"),
    ("list.batch.json", b'{"rows": "alice.png"}', "invalid_manifest", "must hold a list of rows"),
    ("colour.batch.csv", b"image,audio,colour\na.png,a.wav,red\n", "unknown_columns", "'colour'"),
    ("typo.batch.json", b'[{"image": "a.png", "audio": "a.wav", "promt": "hi"}]', "unknown_columns",
     "'promt' (did you mean 'prompt'?)"),
    ("noaudio.batch.csv", b"image,prompt\na.png,hi\n", "missing_columns", "no audio column"),
    ("empty.batch.csv", b"image,audio\n", "empty_manifest", "has no rows"),
    ("many.batch.csv", b"image,audio\n" + b"".join(b"a%d.png,a%d.wav\n" % (i, i) for i in range(6)), "too_many_rows",
     "has 6 rows; the limit is 5"),
    ("binary.batch.csv", b"\xff\xfe\x00bad", "invalid_manifest", "not UTF-8"),
])
def test_a_manifest_that_cannot_be_read_is_refused_whole_with_a_report_and_nothing_submitted(
        flow: Flow, emulator: Emulator, name: str, body: bytes, code: str, words: str) -> None:
    flow.put(f"inputs/show/{name}", body)
    submitted = emulator.submission_count
    result = flow.ingest(f"inputs/show/{name}")
    assert result.outcome == "failed" and words in result.detail
    written = report(flow, f"outputs/show/{name.rsplit('.', 1)[0]}.report.json")
    assert written["state"] == "rejected" and written["error"]["code"] == code and words in written["error"]["reason"]
    assert written["submitted"] == 0
    assert pump(flow) == 0 and flow.jobs() == [] and emulator.submission_count == submitted


def test_rows_become_jobs_once_wait_for_late_files_and_end_with_one_batch_finished_event(
        flow: Flow, events: Any) -> None:
    flow.put("inputs/show/_defaults.json", json.dumps({"prompt": "folder prompt", "seed": 5}).encode())
    flow.put("inputs/show/media/a.png", image())
    flow.put("inputs/show/media/a.wav", speech())
    flow.put("inputs/shared/b.png", image())
    rows = [
        {"image": "media/a.png", "audio": "media/a.wav", "seed": 7},
        {"image": "media/a.png", "audio": "media/a.wav", "seed": 8, "output_name": "{stem}-eight"},
        {"image": "/inputs/shared/b.png", "audio": "media/late.wav", "prompt": "row prompt"},
        {"image": "media/a.png", "audio": "media/a.wav", "resolution": "4k"},
    ]
    body = json.dumps({"rows": rows}).encode()
    key = "inputs/show/ep1.batch.json"
    batch_id = batch_id_for(key, body)
    flow.put(key, body)

    first = flow.ingest(key)
    assert first.outcome == "batch" and first.job_id == batch_id
    start = report(flow, "outputs/show/ep1.batch.report.json")
    assert start["progress"] == "0 of 4 done" and {r["state"] for r in start["rows"]} == {"WAITING"}
    assert pump(flow) == 1  # four rows, one chunk
    ids = [row_job_id(batch_id, n) for n in (1, 2, 3, 4)]
    one, two, bad = flow.job(ids[0]), flow.job(ids[1]), flow.job(ids[3])
    assert flow.deps.store.get(ids[2]) is None  # row 3 waits for its audio
    # Same files, different params: two jobs, each with its row's values over the folder's defaults.
    assert (one.params["seed"], two.params["seed"]) == (7, 8) and one.params["prompt"] == "folder prompt"
    assert one.param_sources["seed"] == f"{key} row 1" and one.param_sources["prompt"] == "inputs/show/_defaults.json"
    assert two.output_name == "a-eight"
    assert bad.status is Status.FAILED and bad.failure is not None and bad.failure.code == "invalid_resolution"
    assert f"{key} row 4: resolution" in bad.failure.reason

    # The same manifest again makes nothing new, and nothing is sent again.
    # (Counted by jobs, not messages: the waiting row's message, delayed a second, may already be back
    # on a loaded machine.)
    made = {j.job_id for j in flow.jobs()}
    assert flow.ingest(key).outcome == "duplicate"
    time.sleep(1.1)
    assert pump(flow) >= 1  # the waiting row came back after its delay, and waits again
    assert {j.job_id for j in flow.jobs()} == made
    flow.put("inputs/show/media/late.wav", speech())
    time.sleep(1.1)  # the waiting row's message is delayed a second at least
    assert pump(flow) >= 1
    late = flow.job(ids[2])
    assert late.image is not None and late.image.key == "inputs/shared/b.png" and late.params["prompt"] == "row prompt"

    # Every render fails at the provider: poll until each row has ended, then deliver (report) each.
    deadline = time.monotonic() + 30
    while any(flow.job(i).status is not Status.FAILED for i in ids):
        assert time.monotonic() < deadline, [flow.job(i).status for i in ids]
        flow.clock.advance(10)
        poll.run(flow.deps)
        time.sleep(0.05)
    for job_id in ids + ids:  # every stream record delivered twice
        on_job_change(job_id, flow.deps)

    final = report(flow, "outputs/show/ep1.batch.report.json")
    assert final["state"] == "finished" and final["progress"] == "4 of 4 done"
    assert final["totals"]["failed"] == 4 and final["totals"]["waiting"] == 0
    assert [r["error"]["code"] for r in final["rows"]] == ["provider_failed"] * 3 + ["invalid_resolution"]
    finished = [e for e in events() if e["detail-type"] == "Batch finished"]
    assert len(finished) == 1 and finished[0]["detail"]["totals"]["rows"] == 4
    assert flow.deps.store.get_batch(batch_id)["state"] == "finished"


def drop_messages(flow: Flow) -> int:
    """What the ingest DLQ does to a message, as far as the batch can tell: it is never processed."""
    sqs, url = flow.deps.sqs, flow.deps.settings.ingest_queue_url
    count = 0
    while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            count += 1
    return count


def test_rows_whose_fan_out_message_went_to_the_dlq_fail_with_a_reason_and_the_batch_finishes(
        flow: Flow, emulator: Emulator, events: Any) -> None:
    flow.put("inputs/lost/a.png", image())
    flow.put("inputs/lost/a.wav", speech())
    body = b"image,audio,prompt\na.png,a.wav,one\na.png,a.wav,two\n"
    key = "inputs/lost/ep.batch.csv"
    batch_id = batch_id_for(key, body)
    flow.put(key, body)
    assert flow.ingest(key).outcome == "batch"
    submitted = emulator.submission_count
    assert drop_messages(flow) == 1  # the one chunk of rows never reaches on_rows
    ids = [row_job_id(batch_id, n) for n in (1, 2)]

    # Within the wait window and the lost-row grace after it, the rows are only waiting.
    flow.clock.advance(600 + 3600 - 5)
    batch.run_due(flow.deps)
    assert all(flow.deps.store.get(i) is None for i in ids)
    assert report(flow, "outputs/lost/ep.batch.report.json")["state"] == "running"

    flow.clock.advance(10)
    assert batch.run_due(flow.deps) == 1
    lost = [flow.job(i) for i in ids]
    assert [j.status for j in lost] == [Status.FAILED, Status.FAILED]
    for n, job in enumerate(lost, start=1):
        assert job.failure is not None and job.failure.code == "row_lost"
        assert f"{key} row {n} was never turned into a job" in job.failure.reason
        assert "IngestDLQ" in job.failure.reason and f"s2v retry {job.job_id}" in job.failure.reason
    for job_id in ids:  # their stream records
        on_job_change(job_id, flow.deps)
    final = report(flow, "outputs/lost/ep.batch.report.json")
    assert final["state"] == "finished" and final["progress"] == "2 of 2 done"
    assert [r["error"]["code"] for r in final["rows"]] == ["row_lost", "row_lost"]
    assert [e for e in events() if e["detail-type"] == "Batch finished"]
    # Should the lost message still turn up, it makes no second job and submits nothing.
    batch.send_rows(batch_id, [1, 2], flow.deps, delay=0)
    pump(flow)
    assert [flow.job(i).status for i in ids] == [Status.FAILED, Status.FAILED]
    assert emulator.submission_count == submitted
