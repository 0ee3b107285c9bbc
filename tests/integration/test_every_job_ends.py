"""Every job ends (docs/reliability.md): poisoned documents, deleted inputs, a busy provider, and jobs
whose processing crashes, through the real flows on moto's server and the emulator over HTTP.

Each case ends its job FAILED with a code and an error report (or keeps it short and moving), and
never stops the jobs beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

from helpers import media_files
from helpers.aws import client
from helpers.crash import Crash, crash_after
from helpers.flow import Flow, make_flow
from s2v.flows import batch, ingest, poll
from s2v.flows.stream import on_job_change
from s2v.model.bounds import MAX_CHECK_CRASHES, MAX_WORK_ATTEMPTS
from s2v.model.jobs import Job, Status, row_job_id
from s2v_local.emulator import Emulator, Faults

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
API_KEY = "flow-test-key"


@cache
def image() -> bytes:
    return media_files.portrait("png", 160, 200)


@cache
def speech() -> bytes:
    return media_files.speech(1.5)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # Renders never finish while the module runs: what matters is how each job ends before that.
    with Emulator(api_key=API_KEY, render_seconds=3600) as running:
        yield running


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator) -> Iterator[Flow]:
    emulator.faults = Faults()
    queue = client("sqs", moto_endpoint).create_queue(QueueName=f"ingest-{unique}")["QueueUrl"]
    yield make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_IN_FLIGHT_JOBS="20",
                    S2V_INGEST_QUEUE_URL=queue, S2V_BATCH_WAIT_SECONDS="600", S2V_BATCH_REPORT_SECONDS="0")
    emulator.faults = Faults()


def put_pair(flow: Flow, folder: str, stem: str) -> str:
    base = f"inputs/{folder}/{stem}" if folder else f"inputs/{stem}"
    flow.put(base + ".png", image())
    flow.put(base + ".wav", speech())
    return base


def drop_pair(flow: Flow, folder: str, stem: str) -> Job:
    result = flow.ingest(put_pair(flow, folder, stem) + ".wav")
    assert result.job_id, result
    return flow.job(result.job_id)


def error_report(flow: Flow, job: Job) -> dict[str, Any]:
    """The failed job's error report, written by the deliver step as for any failure."""
    assert on_job_change(job.job_id, flow.deps) == "reported"
    key = f"outputs/{job.folder}/{job.stem}.error.json" if job.folder else f"outputs/{job.stem}.error.json"
    return dict(json.loads(flow.s3.get_object(Bucket=flow.bucket, Key=key)["Body"].read()))


def poll_runs(flow: Flow, runs: int, *, every: float) -> None:
    """Poll runs, each followed by the ingest function taking what the poller sent back through its
    queue (orphaned RECEIVED jobs are validated there, never in the poller)."""
    for _ in range(runs):
        flow.clock.advance(every)
        poll.run(flow.deps)
        flow.drain_ingest()


POISONS = {
    "deep": ("[" * 5000 + "]" * 5000).encode(),
    "huge_seed": b'{"seed": ' + b"7" * 5000 + b"}",
    "huge_segment_seconds": b'{"segment_seconds": 1e' + b"9" * 500 + b"}",
    "lone_surrogate": b'{"prompt": "hello \\ud800"}',
    "many_keys": json.dumps({f"k{i}": 1 for i in range(5000)}).encode(),
}
CODES = {"deep": "document_too_deep", "huge_seed": "number_too_long", "huge_segment_seconds": "number_too_long",
         "lone_surrogate": "not_utf8_text", "many_keys": "too_many_keys"}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_a_poisoned_defaults_file_fails_every_job_below_it_with_a_clear_reason(flow: Flow, poison: str) -> None:
    flow.put("inputs/team/_defaults.json", POISONS[poison])
    jobs = [drop_pair(flow, "team", "a"), drop_pair(flow, "team/deeper", "b")]
    for job in jobs:
        assert job.status is Status.FAILED and job.failure is not None, job.status
        assert job.failure.code == CODES[poison]
        assert job.failure.reason.startswith("inputs/team/_defaults.json")
        assert error_report(flow, job)["code"] == CODES[poison]
    # Beside it, a folder without the poison renders as usual.
    assert drop_pair(flow, "other", "c").status is Status.SUBMITTED


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_a_poisoned_sidecar_fails_its_job(flow: Flow, poison: str) -> None:
    flow.put("inputs/s/alice.json", POISONS[poison])
    job = drop_pair(flow, "s", "alice")
    assert job.status is Status.FAILED and job.failure is not None and job.failure.code == CODES[poison]
    assert error_report(flow, job)["code"] == CODES[poison]


@pytest.mark.parametrize("deleted", ["png", "wav", "json"])
def test_an_input_deleted_after_its_job_was_recorded_fails_it_with_inputs_missing(flow: Flow, deleted: str) -> None:
    base = put_pair(flow, "gone", "dora")
    flow.put(base + ".json", b'{"prompt": "hi"}')
    with pytest.raises(Crash), crash_after(flow.deps.store, "create_once"):
        flow.ingest(base + ".wav")  # the job is recorded, then its ingest dies
    (job,) = flow.jobs()
    assert job.status is Status.RECEIVED
    flow.s3.delete_object(Bucket=flow.bucket, Key=f"{base}.{deleted}")

    poll_runs(flow, 1, every=ingest.ORPHAN_AFTER_SECONDS + 1)

    job = flow.job(job.job_id)
    assert job.status is Status.FAILED and job.failure is not None and job.failure.code == "inputs_missing"
    assert f"{base}.{deleted}" in job.failure.reason
    assert error_report(flow, job)["code"] == "inputs_missing"


def test_a_job_queued_under_a_busy_provider_keeps_a_short_history(flow: Flow, emulator: Emulator) -> None:
    emulator.faults = Faults(submit_429=10_000, retry_after_seconds=1)
    job = drop_pair(flow, "busy", "eve")
    assert job.status is Status.QUEUED
    sizes = []
    for _ in range(60):  # an hour of poll runs: each admits the job and hears 429 again
        poll_runs(flow, 1, every=60)
        sizes.append(len(json.dumps(client("dynamodb", flow.endpoint).get_item(
            TableName=flow.table, Key={"job_id": {"S": job.job_id}})["Item"])))
    job = flow.job(job.job_id)
    assert job.status is Status.QUEUED
    assert len(job.history) <= 5
    assert job.history[-1]["cycles"] >= 60 and "provider busy" in job.history[-1]["note"]
    assert max(sizes) - min(sizes[5:]) < 200  # the item stopped growing


def test_a_queued_job_past_the_queue_deadline_ends_failed(flow: Flow, emulator: Emulator) -> None:
    emulator.faults = Faults(submit_429=10_000, retry_after_seconds=1)
    job = drop_pair(flow, "busy", "fred")
    assert job.status is Status.QUEUED
    poll_runs(flow, 1, every=flow.deps.settings.queue_deadline_seconds + 1)
    job = flow.job(job.job_id)
    assert job.status is Status.FAILED and job.failure is not None and job.failure.code == "queued_too_long"
    assert "provider busy" in job.failure.reason
    assert error_report(flow, job)["code"] == "queued_too_long"


def test_a_job_whose_release_raises_never_stops_the_queue_behind_it_nor_the_later_steps(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.faults = Faults(submit_429=1, retry_after_seconds=0)  # "two" queues behind "one"
    first, second = drop_pair(flow, "q", "one"), drop_pair(flow, "q", "two")
    assert (first.status, second.status) == (Status.QUEUED, Status.QUEUED)
    original = poll.release_validated

    def broken(job: Job, deps: Any) -> Any:
        if job.job_id == first.job_id:
            raise RuntimeError("this one job's item is broken")
        return original(job, deps)

    monkeypatch.setattr(poll, "release_validated", broken)
    steps: list[str] = []

    def run_due(deps: Any) -> int:
        steps.append("batch reports")
        return 0

    monkeypatch.setattr(poll, "run_due", run_due)
    flow.clock.advance(5)
    report = poll.run(flow.deps)

    assert flow.job(second.job_id).status is Status.SUBMITTED
    assert flow.job(first.job_id).status is Status.QUEUED
    assert report.errors == 1 and steps == ["batch reports"]


def test_a_job_whose_validation_keeps_crashing_ends_failed_after_bounded_attempts(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("the inspector blew up")  # not an InputError: before, retried forever

    monkeypatch.setattr(ingest, "inspect_audio", crash)
    base = put_pair(flow, "crash", "gil")
    with pytest.raises(MemoryError):
        flow.ingest(base + ".wav")  # ingest's attempt: the SQS message is redelivered, then the poller
    for _ in range(3):
        with pytest.raises(MemoryError):
            flow.ingest(base + ".wav")
    (job,) = flow.jobs()
    assert (job.status, job.work_attempts) == (Status.RECEIVED, 4)

    poll_runs(flow, 3, every=ingest.ORPHAN_AFTER_SECONDS + 1)

    job = flow.job(job.job_id)
    assert job.status is Status.FAILED and job.failure is not None and job.failure.code == "attempts_exhausted"
    assert job.work_attempts == MAX_WORK_ATTEMPTS
    assert error_report(flow, job)["code"] == "attempts_exhausted"


def test_a_killed_attempt_counts_too(flow: Flow) -> None:
    base = put_pair(flow, "kill", "hal")
    with pytest.raises(Crash), crash_after(flow.deps.store, "create_once"):
        flow.ingest(base + ".wav")  # killed right after the job was created, its first attempt counted in it
    for _ in range(MAX_WORK_ATTEMPTS - 1):
        with pytest.raises(Crash), crash_after(flow.deps.store, "touch"):
            flow.ingest(base + ".wav")  # killed right after the attempt was counted
    (job,) = flow.jobs()
    assert job.work_attempts == MAX_WORK_ATTEMPTS
    poll_runs(flow, 1, every=ingest.ORPHAN_AFTER_SECONDS + 1)
    assert flow.job(job.job_id).failure.code == "attempts_exhausted"  # type: ignore[union-attr]


def test_a_check_that_keeps_crashing_ends_its_job_and_spares_the_others(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    sick, well = drop_pair(flow, "c", "ivy"), drop_pair(flow, "c", "jon")
    assert (sick.status, well.status) == (Status.SUBMITTED, Status.SUBMITTED)
    original = poll.check

    def check(job: Job, deps: Any, **kwargs: Any) -> str:
        if job.job_id == sick.job_id:
            raise KeyError("a field this code did not expect")
        return original(job, deps, **kwargs)

    monkeypatch.setattr(poll, "check", check)
    poll_runs(flow, MAX_CHECK_CRASHES + 1, every=60)

    sick_now = flow.job(sick.job_id)
    assert sick_now.status is Status.FAILED and sick_now.failure is not None
    assert sick_now.failure.code == "check_failed"
    assert flow.job(well.job_id).check_count >= MAX_CHECK_CRASHES  # checked every run meanwhile


@pytest.mark.parametrize(("document", "code"), [
    (b'{"rows": ' + b"[" * 5000 + b"]" * 5000 + b"}", "document_too_deep"),
    (b'[{"image": "a.png", "audio": "a.wav", "seed": ' + b"1" * 5000 + b"}]", "number_too_long"),
    (json.dumps([{"image": "a.png", "audio": "a.wav", **{f"x{i}": 1 for i in range(5000)}}]).encode(),
     "too_many_keys"),
])
def test_a_manifest_that_cannot_be_parsed_gets_a_rejected_batch_report(flow: Flow, document: bytes,
                                                                      code: str) -> None:
    flow.put("inputs/m/show.batch.json", document)
    result = flow.ingest("inputs/m/show.batch.json")
    assert result.outcome == "failed"
    written = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key="outputs/m/show.batch.report.json")["Body"].read())
    assert written["state"] == "rejected" and written["error"]["code"] == code


def pump(flow: Flow) -> None:
    sqs, url = flow.deps.sqs, flow.deps.settings.ingest_queue_url
    while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in msgs:
            batch.on_rows(json.loads(m["Body"])[batch.ROWS_MESSAGE], flow.deps)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_one_bad_manifest_row_fails_that_row_only(flow: Flow) -> None:
    for stem in ("a", "b", "c"):
        put_pair(flow, "rows", stem)
    rows = [{"image": "a.png", "audio": "a.wav"}, {"image": "b.png", "audio": "b.wav", "prompt": "SURROGATE"},
            {"image": "c.png", "audio": "c.wav", "prompt": "p" * 300_000}, {"image": "c.png", "audio": "c.wav"}]
    flow.put("inputs/rows/r.batch.json", json.dumps(rows).replace("SURROGATE", "\\udc00").encode())
    result = flow.ingest("inputs/rows/r.batch.json")
    assert result.outcome == "batch", result
    pump(flow)
    jobs = {n: flow.job(row_job_id(result.job_id, n)) for n in (1, 2, 3, 4)}
    assert jobs[2].failure is not None and jobs[2].failure.code == "not_utf8_text"
    assert jobs[3].failure is not None and jobs[3].failure.code == "prompt_too_long"
    assert jobs[1].status is Status.SUBMITTED and jobs[4].status is Status.SUBMITTED


def test_a_job_no_write_can_reach_never_stops_the_run(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write to the sick job fails (as for an item at DynamoDB's 400 KB limit): its check, its
    retry bookkeeping and its ending all raise, and the run still checks the others and goes on."""
    from s2v.model.errors import TransientError

    sick, well = drop_pair(flow, "w", "kim"), drop_pair(flow, "w", "lou")
    store = flow.deps.store

    def refuse(name: str) -> Any:
        original = getattr(store, name)

        def write(job: Job, *args: Any, **kwargs: Any) -> Any:
            if job.job_id == sick.job_id:
                raise RuntimeError("ValidationException: Item size has exceeded the maximum allowed size")
            return original(job, *args, **kwargs)
        return write

    for name in ("touch", "transition"):
        monkeypatch.setattr(store, name, refuse(name))
    original_check = poll.check

    def check(job: Job, deps: Any, **kwargs: Any) -> str:
        if job.job_id == sick.job_id:
            raise TransientError("the provider's answer could not be recorded")
        return original_check(job, deps, **kwargs)

    monkeypatch.setattr(poll, "check", check)
    steps: list[str] = []

    def run_due(deps: Any) -> int:
        steps.append("batch reports")
        return 0

    monkeypatch.setattr(poll, "run_due", run_due)
    flow.clock.advance(60)
    report = poll.run(flow.deps)

    assert report.errors >= 2 and steps == ["batch reports"]
    assert flow.job(well.job_id).check_count == 1
