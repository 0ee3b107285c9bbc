"""The jobs-table stream's router (flows/stream.py) in the deliver function: one read of the job per
change, the freed slot handed to a queued job, delivery and its metrics from the job it read."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers.flow import Flow, make_flow
from s2v.flows import poll
from s2v.model.jobs import Job, Status
from s2v_local import samples
from s2v_local.emulator import Emulator
from s2v_local.stack import LambdaContext

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0.2) as em:
        yield em


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url, S2V_MAX_IN_FLIGHT_JOBS="1")


def drop(flow: Flow, stem: str) -> str:
    flow.put(f"inputs/r/{stem}.png", samples.portrait_png(96, 96))
    flow.put(f"inputs/r/{stem}.wav", samples.speech_wav(0.6))
    return flow.ingest(f"inputs/r/{stem}.wav").job_id


def deliver_handler(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """functions/deliver/app.py loaded as Lambda would, its cold-start Deps swapped for the flow's."""
    for name, value in {"S2V_BUCKET": flow.bucket, "S2V_JOBS_TABLE": flow.table, "S2V_LOCAL_MODE": "true",
                        "S2V_OUTPUT_ALLOWED_HOSTS": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("deliver_router", ROOT / "functions" / "deliver" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "deps", flow.deps)
    return module


def context() -> LambdaContext:
    return LambdaContext(function_name="deliver", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:"
                         "deliver", memory_limit_in_mb=512, aws_request_id="request-1", log_group_name="deliver",
                         log_stream_name="stream", deadline=time.monotonic() + 900)


def record(job_id: str, old: Status, new: Status) -> dict[str, Any]:
    return {"eventName": "MODIFY", "dynamodb": {"Keys": {"job_id": {"S": job_id}},
                                                "OldImage": {"job_id": {"S": job_id}, "status": {"S": str(old)}},
                                                "NewImage": {"job_id": {"S": job_id}, "status": {"S": str(new)}}}}


def guard_record(flow: Flow, old_in_flight: int) -> dict[str, Any]:
    """The spend guard's stream record as the table holds it now (its in-flight count was ``old_in_flight``)."""
    item = flow.deps.store._db.get_item(TableName=flow.table, Key={"job_id": {"S": "#guard"}})["Item"]
    return {"eventName": "MODIFY", "dynamodb": {"Keys": {"job_id": {"S": "#guard"}}, "NewImage": item,
                                                "OldImage": {**item, "in_flight": {"N": str(old_in_flight)}}}}


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_finished_job_is_delivered_its_slot_released_and_its_metrics_told_from_one_read(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job that rendered and left the provider, and one queued behind the in-flight limit of 1
    first, queued = drop(flow, "s0"), drop(flow, "s1")
    assert flow.job(queued).status is Status.QUEUED
    emulator.wait_for_task(flow.job(first).provider_id)
    assert poll.check(flow.job(first), flow.deps) == "completed"
    handler = deliver_handler(flow, monkeypatch)
    reads: list[str] = []
    real_get = flow.deps.store.get

    def counted_get(job_id: str) -> Job | None:
        reads.append(job_id)
        return real_get(job_id)

    monkeypatch.setattr(flow.deps.store, "get", counted_get)
    told: list[Job] = []
    monkeypatch.setattr(handler, "add_ended_job_metrics", told.append)

    # When the stream hands the deliver function the guard's change (a slot freed while a job waits)
    # and the job's change PROCESSING -> COMPLETED, written in one transaction
    records = [guard_record(flow, old_in_flight=1), record(first, Status.PROCESSING, Status.COMPLETED)]
    result = handler.handler({"Records": records}, context())

    # Then the queued job took the freed slot, the video was delivered, the job was read once, and the
    # metrics describe the job as delivered (its cost included) without reading it again
    assert result == {"outcomes": ["delivered"]}
    assert flow.job(queued).status in (Status.SUBMITTING, Status.SUBMITTED, Status.PROCESSING, Status.COMPLETED)
    assert reads.count(first) == 1
    stored = flow.job(first)
    assert [(j.job_id, j.status, j.final_cost_usd) for j in told] == [
        (first, Status.DELIVERED, stored.final_cost_usd)]
    # and, none waiting any more, the next freed slot wakes nothing
    assert "queued_at" not in guard_record(flow, 1)["dynamodb"]["NewImage"]


def test_a_job_ending_while_none_waits_costs_no_query_for_queued_jobs(
        flow: Flow, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from s2v.flows import stream

    # Given a job that rendered and left the provider, and no job ever queued
    first = drop(flow, "s0")
    emulator.wait_for_task(flow.job(first).provider_id)
    assert poll.check(flow.job(first), flow.deps) == "completed"
    monkeypatch.setattr(flow.deps.store, "queued", lambda limit=50: pytest.fail("queried the queue"))
    # When the stream hands over the guard's change and the job's: only the delivery runs
    assert stream.on_record(guard_record(flow, old_in_flight=1), flow.deps) is None
    routed = stream.on_record(record(first, Status.PROCESSING, Status.COMPLETED), flow.deps)
    assert routed is not None and routed.outcome == "delivered"


def test_a_bookkeeping_item_and_a_change_to_a_running_status_wake_nothing(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    from s2v.flows import stream

    monkeypatch.setattr(flow.deps.store, "get", lambda job_id: pytest.fail(f"read {job_id}"))
    monkeypatch.setattr(flow.deps.store, "queued", lambda limit=50: pytest.fail("queried the queue"))
    spend = {"dynamodb": {"Keys": {"job_id": {"S": "#spend#2026-12-06"}}, "NewImage": {"spent": {"N": "1"}}}}
    assert stream.on_record(spend, flow.deps) is None
    admitted = {"dynamodb": {"Keys": {"job_id": {"S": "#guard"}}, "OldImage": {"in_flight": {"N": "0"}},
                             "NewImage": {"in_flight": {"N": "1"}, "queued_at": {"N": "5"}}}}
    assert stream.on_record(admitted, flow.deps) is None
    routed = stream.on_record(record("j1", Status.SUBMITTED, Status.PROCESSING), flow.deps)
    assert routed is not None and (routed.job, routed.outcome) == (None, "")
