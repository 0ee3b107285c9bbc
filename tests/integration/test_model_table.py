"""Adding a model is one table entry: a fake third model, added only to ``CATALOG``, goes through
pairing, validation, the cost estimate, the provider client's request and the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpers import media_files
from helpers.flow import make_flow
from s2v.model import models
from s2v.model.jobs import Status
from s2v.model.models import CATALOG, Model
from s2v_local.emulator import Emulator

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
API_KEY = "flow-test-key"  # what helpers.flow.Flow sends
# Its own path, field names, optional mask, prices, minimum and limit: nothing like the real ones.
FAKE = Model(name="fake-duet", path="acme-ai/fake-duet/v1", title="Fake Duet",
             fields={"portrait": "image", "voice": "audio", "focus_mask": "mask"}, optional_roles=frozenset({"mask"}),
             price_per_second={"480p": 0.05, "720p": 0.11}, billed_min_seconds=2, max_seconds=4.0)


@pytest.fixture
def with_fake_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(CATALOG, "models", (*models.MODELS, FAKE))
    yield


@pytest.fixture
def emulator(with_fake_model: None) -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0.1) as running:
        yield running


def test_a_fake_third_model_added_to_the_table_renders_end_to_end(moto_endpoint: str, unique: str,
                                                                   emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    flow.put("inputs/fake/zed.png", media_files.portrait("png", 160, 200))
    flow.put("inputs/fake/zed.mask.png", media_files.portrait("png", 160, 200))
    flow.put("inputs/fake/zed.wav", media_files.speech(2.4))
    flow.put("inputs/fake/zed.json", json.dumps({"model": "fake-duet", "resolution": "720p"}).encode())
    results = [flow.ingest(f"inputs/fake/zed.{ext}") for ext in ("png", "mask.png", "wav", "json")]
    [job] = flow.jobs()
    assert job.status is Status.SUBMITTED, (job.failure, results)
    # Validation and cost read the entry: 2.4 s → 3 billed seconds at its 720p price.
    assert job.params["model"] == "fake-duet" and job.estimated_cost_usd == pytest.approx(3 * 0.11)
    # The request went to its path with its field names, and the emulator served it from the entry.
    task = emulator.tasks[job.provider_id]
    assert task["model"] == "acme-ai/fake-duet/v1"
    assert {"portrait", "voice", "focus_mask"} <= set(task["input"]) and "image" not in task["input"]
    done = emulator.wait_for_task(job.provider_id, timeout=60)
    assert done["status"] == "completed", done["error"]
    assert emulator.charges[job.provider_id] == pytest.approx(job.estimated_cost_usd)


def test_the_fake_models_own_limit_refuses_a_longer_clip_before_submitting(moto_endpoint: str, unique: str,
                                                                          emulator: Emulator) -> None:
    flow = make_flow(moto_endpoint, unique, emulator.base_url)
    before = emulator.submission_count
    flow.put("inputs/fake/long.png", media_files.portrait("png", 160, 200))
    flow.put("inputs/fake/long.wav", media_files.speech(5.0))
    flow.put("inputs/fake/long.json", b'{"model": "fake-duet"}')
    for ext in ("png", "wav", "json"):
        flow.ingest(f"inputs/fake/long.{ext}")
    [job] = flow.jobs()
    assert job.status is Status.FAILED and job.failure and job.failure.code == "audio_too_long"
    assert "model fake-duet renders at most 4 s per call" in job.failure.reason
    assert emulator.submission_count == before
