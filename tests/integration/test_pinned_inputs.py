"""The provider renders, and bills, exactly the bytes that were validated.

A pair is validated (1 s of speech), then its audio key is overwritten with 60 s before the
provider fetches it (the job waits in the queue meanwhile). On a versioned bucket the provider is
handed the validated version, by presigned GET or by the provider's media upload; on a bucket
without versioning the job fails naming the change, and nothing reaches the provider. Real HTTP
to the emulator, which fetches and measures what it renders; moto's server holds the bucket.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import requests

from helpers.aws import client
from helpers.flow import Flow, make_flow
from s2v.flows.ingest import submit_validated
from s2v.flows.submission import forget_balance
from s2v.model.jobs import Status
from s2v.model.provider_facts import price_usd
from s2v_local import samples
from s2v_local.emulator import Emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key="flow-test-key", render_seconds=0.2) as em:
        yield em


@pytest.fixture(autouse=True)
def empty_account(emulator: Emulator) -> Iterator[None]:
    # No money at the provider: a validated job waits QUEUED (as behind other jobs or the budget)
    emulator.balance = 0.0
    forget_balance()
    yield
    emulator.balance = 100.0
    forget_balance()


def queued_flow(moto_endpoint: str, unique: str, emulator: Emulator, *, versioned: bool, media_mode: str) -> Flow:
    flow = make_flow(moto_endpoint, unique, emulator.base_url, S2V_MEDIA_MODE=media_mode)
    if versioned:
        client("s3", moto_endpoint).put_bucket_versioning(Bucket=flow.bucket,
                                                          VersioningConfiguration={"Status": "Enabled"})
    return flow


def validated_then_overwritten(flow: Flow, emulator: Emulator, stem: str) -> str:
    flow.put(f"inputs/p/{stem}.png", samples.portrait_png(96, 96))
    flow.put(f"inputs/p/{stem}.wav", samples.speech_wav(1.0))
    job = flow.job(flow.ingest(f"inputs/p/{stem}.wav").job_id)
    assert job.status is Status.QUEUED and job.audio_seconds == pytest.approx(1.0, abs=0.05)
    # The same key, now a minute long: 20x the price if it were rendered
    flow.put(f"inputs/p/{stem}.wav", samples.silent_wav(60.0))
    emulator.balance = 100.0  # the account is topped up: the job may go
    forget_balance()
    return job.job_id


@pytest.mark.parametrize("media_mode", ["presign", "upload"])
def test_a_versioned_input_overwritten_after_validation_is_rendered_and_billed_as_validated(
        moto_endpoint: str, unique: str, emulator: Emulator, media_mode: str) -> None:
    flow = queued_flow(moto_endpoint, unique, emulator, versioned=True, media_mode=media_mode)
    job_id = validated_then_overwritten(flow, emulator, "swap")
    validated = flow.job(job_id)
    assert set(validated.input_versions) == {"image", "audio"}

    sent = submit_validated(validated, flow.deps)

    assert sent.status is Status.SUBMITTED, sent.failure
    task = emulator.wait_for_task(sent.provider_id)
    assert task["status"] == "completed", task.get("error")
    # Billed for the validated second (the 3 s minimum), not the minute put there afterwards
    assert emulator.charges[sent.provider_id] == pytest.approx(price_usd(1.0, "480p"))
    assert emulator.charges[sent.provider_id] < price_usd(60.0, "480p")


def test_without_versioning_an_input_overwritten_after_validation_fails_the_job_naming_it(
        moto_endpoint: str, unique: str, emulator: Emulator) -> None:
    flow = queued_flow(moto_endpoint, unique, emulator, versioned=False, media_mode="presign")
    tasks_before = set(emulator.tasks)
    job_id = validated_then_overwritten(flow, emulator, "swap")

    ended = submit_validated(flow.job(job_id), flow.deps)

    assert ended.status is Status.FAILED and ended.failure is not None
    assert (ended.failure.stage, ended.failure.code) == ("submit", "input_changed")
    assert "inputs/p/swap.wav" in ended.failure.reason
    assert set(emulator.tasks) == tasks_before  # nothing was sent, nothing billed
    assert ended.reserved_cost_usd == 0 or ended.final_cost_usd == 0


@pytest.mark.parametrize("versioned", [True, False])
def test_an_input_overwritten_between_its_event_and_validation_is_not_validated_in_its_place(
        moto_endpoint: str, unique: str, emulator: Emulator, versioned: bool) -> None:
    # Given a pair listed (the job is made for these ETags) whose audio is replaced before it is read
    flow = queued_flow(moto_endpoint, unique, emulator, versioned=versioned, media_mode="presign")
    flow.put("inputs/p/early.png", samples.portrait_png(96, 96))
    flow.put("inputs/p/early.wav", samples.speech_wav(1.0))
    listed = flow.deps.objects.list_prefix

    def replaced_after_listing(prefix: str):  # type: ignore[no-untyped-def]
        found = listed(prefix)
        flow.put("inputs/p/early.wav", samples.silent_wav(60.0))
        return found

    flow.deps.objects.list_prefix = replaced_after_listing  # type: ignore[method-assign]
    # When it is ingested, Then the job for the old ETag fails naming the change (the new file has its own event)
    job = flow.job(flow.ingest("inputs/p/early.wav").job_id)
    assert job.status is Status.FAILED and job.failure is not None
    assert job.failure.code == "input_changed"


def mask_png(size: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (size, size), 255).save(out, "PNG")
    return out.getvalue()


SETS = {
    "portrait": {"png": samples.portrait_png(96, 96), "wav": samples.speech_wav(1.0)},
    "mask": {"png": samples.portrait_png(96, 96), "mask.png": mask_png(96), "wav": samples.speech_wav(1.0)},
    "two speakers": {"png": samples.portrait_png(96, 96), "left.wav": samples.speech_wav(1.0),
                     "right.wav": samples.speech_wav(1.2)},
}
# Each file of each kind of set, replaced by another valid file of its type
REPLACED = [(kind, name) for kind, files in SETS.items() for name in files]


@pytest.mark.parametrize(("kind", "name"), REPLACED, ids=[f"{k}:{n}" for k, n in REPLACED])
def test_whichever_file_of_a_set_is_overwritten_the_provider_fetches_the_validated_bytes(
        moto_endpoint: str, unique: str, emulator: Emulator, kind: str, name: str) -> None:
    # Given a set validated and waiting in the queue (versioned bucket)
    flow = queued_flow(moto_endpoint, unique, emulator, versioned=True, media_mode="presign")
    files = SETS[kind]
    for suffix, body in files.items():
        flow.put(f"inputs/s/set.{suffix}", body)
    job = flow.job(flow.ingest(f"inputs/s/set.{name}").job_id)
    assert job.status is Status.QUEUED, job.failure
    # When one of its files is replaced before the provider fetches anything
    replacement = samples.portrait_png(96, 96 + 8) if name.endswith("png") else samples.speech_wav(3.0)
    flow.put(f"inputs/s/set.{name}", replacement)
    emulator.balance = 100.0
    forget_balance()
    sent = submit_validated(job, flow.deps)
    # Then every URL the provider was handed serves the bytes that were validated (fetched over HTTP)
    assert sent.status is Status.SUBMITTED, sent.failure
    handed = emulator.wait_for_task(sent.provider_id)["input"]
    urls = [url for url in handed.values() if isinstance(url, str) and url.startswith("http")]
    fetched = [requests.get(url, timeout=10).content for url in urls]
    assert len(fetched) == len(files) and sorted(fetched) == sorted(files.values())
