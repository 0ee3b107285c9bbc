"""Per-folder ``_defaults.json`` (issue 18): inherited three folders deep, each level overriding the
one above, a sidecar over all of them, object metadata and stack defaults last; validated like a
sidecar; never an input itself; and a defaults file that arrives after a job never makes a second.

Real files through the real ingest path (moto's S3 and DynamoDB, the emulator over HTTP).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from helpers import media_files
from helpers.flow import Flow
from s2v.flows.deliver import on_job_change
from s2v.model.jobs import Job, Status
from s2v_local.emulator import Faults

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@cache
def image() -> bytes:
    return media_files.portrait("png", 160, 200)


@cache
def speech() -> bytes:
    return media_files.speech(1.5)


@pytest.fixture(scope="module")
def emulator_options() -> dict[str, Any]:
    # Renders never finish while the module runs: only what was submitted, and with what, matters.
    return {"render_seconds": 3600, "faults": Faults(fail_renders=True)}


@pytest.fixture
def flow_env() -> dict[str, str]:
    return {"S2V_MAX_IN_FLIGHT_JOBS": "20", "S2V_DEFAULT_PROMPT": "stack prompt"}


def put_json(flow: Flow, key: str, document: object) -> None:
    flow.put(key, json.dumps(document).encode())


def drop_pair(flow: Flow, folder: str, stem: str, *, metadata: dict[str, str] | None = None) -> Job:
    base = f"inputs/{folder}/{stem}" if folder else f"inputs/{stem}"
    flow.put(base + ".png", image(), Metadata=metadata or {})
    flow.put(base + ".wav", speech())
    result = flow.ingest(base + ".wav")
    assert result.job_id, result
    return flow.job(result.job_id)


@pytest.fixture
def three_levels(flow: Flow) -> Flow:
    """Defaults at the top, one, two and three folders down; each sets something the one above set."""
    put_json(flow, "inputs/_defaults.json", {"prompt": "top", "resolution": "720p", "seed": 1,
                                             "output_name": "{stem}-{resolution}"})
    put_json(flow, "inputs/a/_defaults.json", {"prompt": "level a", "seed": 2})
    put_json(flow, "inputs/a/b/_defaults.json", {"prompt": "level b", "output_name": "{folder}/{stem}"})
    put_json(flow, "inputs/a/b/c/_defaults.json", {"seed": 4, "resolution": "480p"})
    return flow


def test_defaults_inherit_three_folders_deep_and_each_level_overrides_the_one_above(three_levels: Flow) -> None:
    flow = three_levels
    top = drop_pair(flow, "", "t0")
    one = drop_pair(flow, "a", "t1")
    two = drop_pair(flow, "a/b", "t2")
    three = drop_pair(flow, "a/b/c", "t3")

    assert top.params == {"prompt": "top", "resolution": "720p", "seed": 1, "model": "wan-2.2-s2v"}
    assert one.params == {"prompt": "level a", "resolution": "720p", "seed": 2, "model": "wan-2.2-s2v"}
    assert two.params == {"prompt": "level b", "resolution": "720p", "seed": 2, "model": "wan-2.2-s2v"}
    assert three.params == {"prompt": "level b", "resolution": "480p", "seed": 4, "model": "wan-2.2-s2v"}
    assert three.param_sources == {
        "prompt": "inputs/a/b/_defaults.json", "resolution": "inputs/a/b/c/_defaults.json",
        "seed": "inputs/a/b/c/_defaults.json", "output_name": "inputs/a/b/_defaults.json",
        "model": "stack default", "segment_seconds": "stack default",
    }
    assert one.param_sources["prompt"] == "inputs/a/_defaults.json"
    assert one.param_sources["resolution"] == "inputs/_defaults.json"
    # The name template is inherited too: the top one below a/, a/b's from a/b down.
    assert (top.output_name, one.output_name) == ("t0-720p", "t1-720p")
    assert (two.output_name, three.output_name) == ("b/t2", "c/t3")
    assert all(j.status is Status.SUBMITTED for j in (top, one, two, three))


def test_a_sidecar_beats_every_folder_and_every_folder_beats_metadata(three_levels: Flow) -> None:
    flow = three_levels
    put_json(flow, "inputs/a/b/c/t4.json", {"prompt": "from the sidecar"})
    job = drop_pair(flow, "a/b/c", "t4", metadata={"prompt": "from metadata", "seed": "9"})
    assert job.params == {"prompt": "from the sidecar", "resolution": "480p", "seed": 4, "model": "wan-2.2-s2v"}
    assert job.param_sources["prompt"] == "inputs/a/b/c/t4.json"


def test_object_metadata_only_fills_what_no_params_file_sets(flow: Flow) -> None:
    put_json(flow, "inputs/plain/_defaults.json", {"resolution": "720p"})
    plain = drop_pair(flow, "plain", "p", metadata={"prompt": "from metadata", "resolution": "480p"})
    assert plain.params == {"prompt": "from metadata", "resolution": "720p", "seed": -1, "model": "wan-2.2-s2v"}
    assert plain.param_sources == {"prompt": "S3 object metadata x-amz-meta-prompt",
                                   "resolution": "inputs/plain/_defaults.json", "seed": "stack default",
                                   "model": "stack default", "segment_seconds": "stack default"}


def test_without_any_defaults_file_the_stack_defaults_apply_and_are_named(flow: Flow) -> None:
    job = drop_pair(flow, "x/y", "alice")
    assert job.params == {"prompt": "stack prompt", "resolution": "480p", "seed": -1, "model": "wan-2.2-s2v"}
    assert set(job.param_sources.values()) == {"stack default"}
    assert job.output_name == ""


def test_a_bad_defaults_file_fails_the_job_with_the_same_precise_reason_as_a_sidecar(flow: Flow) -> None:
    put_json(flow, "inputs/team/_defaults.json", {"resoluton": "720p"})
    job = drop_pair(flow, "team/week1", "bob")
    assert job.status is Status.FAILED and job.failure is not None
    assert job.failure.code == "unknown_params"
    assert "inputs/team/_defaults.json has unknown keys: 'resoluton' (did you mean 'resolution'?)" in job.failure.reason

    flow.put("inputs/broken/_defaults.json", b'{"seed": 1,}')
    broken = drop_pair(flow, "broken", "carol")
    assert broken.failure is not None and broken.failure.code == "invalid_json"
    assert broken.failure.reason.startswith("inputs/broken/_defaults.json is not valid JSON")

    put_json(flow, "inputs/names/_defaults.json", {"output_name": "{stem}-{colour}"})
    named = drop_pair(flow, "names", "dave")
    assert named.failure is not None and named.failure.code == "invalid_output_name"
    assert "{colour}" in named.failure.reason and "{resolution}" in named.failure.reason
    assert on_job_change(named.job_id, flow.deps) == "reported"
    report = json.loads(flow.s3.get_object(Bucket=flow.bucket, Key="outputs/names/dave.error.json")["Body"].read())
    assert report["code"] == "invalid_output_name"


def test_a_defaults_upload_is_not_an_input_and_a_late_one_never_makes_a_second_job(flow: Flow) -> None:
    job = drop_pair(flow, "late", "erin")
    assert job.status is Status.SUBMITTED and job.params["resolution"] == "480p"

    put_json(flow, "inputs/late/_defaults.json", {"resolution": "720p"})
    assert flow.ingest("inputs/late/_defaults.json").outcome == "ignored"
    again = flow.ingest("inputs/late/erin.png")
    assert (again.outcome, again.job_id) == ("duplicate", job.job_id)
    assert [j.job_id for j in flow.jobs()] == [job.job_id]
    assert flow.job(job.job_id).params["resolution"] == "480p"


def test_a_pair_named_like_the_defaults_file_is_still_a_pair(flow: Flow) -> None:
    job = drop_pair(flow, "odd", "_defaults")
    assert job.status is Status.SUBMITTED and job.stem == "_defaults"


def test_an_invocation_reads_each_folders_defaults_once_and_a_folder_without_one_is_not_asked_again_soon(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    from s2v.flows import invocation_memo as folder_defaults

    reads: list[str] = []
    real = flow.deps.objects.read_small_if_exists
    monkeypatch.setattr(flow.deps.objects, "read_small_if_exists",
                        lambda key, limit: reads.append(key) or real(key, limit))
    now = [1000.0]
    monkeypatch.setattr(folder_defaults, "_clock", lambda: now[0])
    # Given a folder with a defaults file under a top level without one
    put_json(flow, "inputs/kept/_defaults.json", {"resolution": "720p"})
    # When one invocation ingests three pairs of that folder
    with folder_defaults.one_invocation():
        jobs = [drop_pair(flow, "kept", stem) for stem in ("a", "b", "c")]
    # Then each level was read once, and every job has the folder's defaults
    assert sorted(reads) == ["inputs/_defaults.json", "inputs/kept/_defaults.json"]
    assert {j.params.get("resolution") for j in jobs} == {"720p"}
    # When the next invocation comes within ABSENT_SECONDS: only the folder that has a file is read again
    reads.clear()
    now[0] += folder_defaults.ABSENT_SECONDS - 1
    with folder_defaults.one_invocation():
        drop_pair(flow, "kept", "d")
    assert reads == ["inputs/kept/_defaults.json"]
    # And a defaults file added at the top is seen once ABSENT_SECONDS have passed since the miss
    put_json(flow, "inputs/_defaults.json", {"prompt": "new at the top"})
    now[0] += 2
    with folder_defaults.one_invocation():
        late = drop_pair(flow, "kept", "e")
    assert late.params.get("prompt") == "new at the top"


def test_the_events_of_one_pair_in_one_invocation_list_and_create_once(flow: Flow,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from s2v.flows import invocation_memo

    listed: list[str] = []
    created: list[str] = []
    real_list, real_create = flow.deps.objects.list_prefix, flow.deps.store.create_once
    monkeypatch.setattr(flow.deps.objects, "list_prefix", lambda prefix: listed.append(prefix) or real_list(prefix))
    monkeypatch.setattr(flow.deps.store, "create_once", lambda job: created.append(job.job_id) or real_create(job))
    # Given a pair and its sidecar, uploaded before their events are handled (the queue's settle delay)
    flow.put("inputs/once/amy.png", image())
    flow.put("inputs/once/amy.wav", speech())
    put_json(flow, "inputs/once/amy.json", {"seed": 7})
    # When one invocation handles the three events
    with invocation_memo.one_invocation():
        results = [flow.ingest(f"inputs/once/amy.{ext}") for ext in ("png", "wav", "json")]
    # Then the set was listed and its job created once, and every event names that job
    assert len(created) == 1 and len(listed) == len(set(listed))
    assert {r.job_id for r in results} == {created[0]}
    assert flow.job(created[0]).params["seed"] == 7
    # and outside an invocation's memo (or in the next invocation) an event is handled in full again
    assert flow.ingest("inputs/once/amy.png").outcome == "duplicate" and len(created) == 2
