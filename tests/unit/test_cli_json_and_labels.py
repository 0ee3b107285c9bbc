"""What scripts read (`--json`), what tells jobs of one batch apart, and where retry is offered."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2v.adapters.store import GuardState
from s2v.model.jobs import Failure, InputObject, Job, Status
from s2v_cli import scripted, views
from s2v_cli.safe import json_text

NOW = 1_790_000_000.0


def job(stem: str = "face", *, folder: str = "show", status: Status = Status.DELIVERED, audio: str = "",
        **changes: object) -> Job:
    base = Job(job_id=f"{stem:x<32}"[:32], status=status, version=1, folder=folder, stem=stem,
               image=InputObject(f"inputs/{folder}/{stem}.png", "e1", 10),
               audio=InputObject(f"inputs/{folder}/{audio or stem}.wav", "e2", 20),
               created_at=NOW, updated_at=NOW + 5, estimated_cost_usd=0.09, provider_id="p1",
               submitted_at=NOW + 1, admitted_day="2026-09-21")
    return base.with_changes(**changes)


def row(n: int, audio: str, output_name: str = "") -> Job:
    return job(audio=audio, status=Status.QUEUED, batch_id="b1", batch_key="inputs/show/ep1.batch.csv",
               batch_row=n, output_name=output_name, job_id=f"row{n}".ljust(32, "0"))


# --- --json -----------------------------------------------------------------------------------------

def test_jobs_json_has_what_a_script_needs_and_round_trips() -> None:
    failed = job("bad", status=Status.FAILED, failure=Failure("validate", "bad_image", "not an image"),
                 output_key="")
    delivered = job(output_key="outputs/show/face.mp4")
    doc = json.loads(json_text({"jobs": [scripted.job(j, "bkt") for j in (delivered, failed)], "more": False}))
    first, second = doc["jobs"]
    assert first["job_id"] == delivered.job_id and first["status"] == "DELIVERED"
    assert first["output"] == "s3://bkt/outputs/show/face.mp4" and first["inputs"]["image"] == "inputs/show/face.png"
    assert first["name"] == "show/face (png + wav)" and first["failure"] is None and first["charged"] is True
    assert second["failure"] == {"stage": "validate", "code": "bad_image", "reason": "not an image"}
    assert second["retry_possible"] is False and second["output"] is None


def test_status_json_counts_every_state_and_says_the_guard_and_the_balance() -> None:
    counts = {s: 0 for s in Status} | {Status.DELIVERED: 3, Status.QUEUED: 1}
    doc = json.loads(json_text(scripted.status(
        "local stack", "bkt", "tbl", counts, [job(status=Status.QUEUED, queue_reason="budget")],
        GuardState(in_flight=1, spent_today_usd=0.27, day="2026-09-21"), views.StackLimits(20.0, 2),
        views.Balance(None, "unreachable"))))
    assert doc["jobs_by_state"]["DELIVERED"] == 3 and set(doc["jobs_by_state"]) == {str(s) for s in Status}
    assert doc["jobs"] == 4 and doc["in_flight"] == 1 and doc["max_in_flight"] == 2
    assert doc["spent_today_usd"] == 0.27 and doc["daily_budget_usd"] == 20.0
    assert doc["balance_usd"] is None and doc["balance_problem"] == "unreachable"
    assert doc["queued_because"] == {"budget": 1} and doc["bucket"] == "bkt"


def test_cost_json_has_rows_and_totals() -> None:
    rows = views.cost_rows([job(), job("other", folder="news")])
    doc = json.loads(json_text(scripted.cost(rows, budget_usd=20.0)))
    assert {(r["day"], r["folder"], r["jobs"]) for r in doc["rows"]} == {("2026-09-21", "show", 1),
                                                                          ("2026-09-21", "news", 1)}
    assert doc["total_usd"] == pytest.approx(0.18) and doc["jobs"] == 2 and doc["daily_budget_usd"] == 20.0


def test_batch_json_has_progress_and_row_jobs() -> None:
    rows = [row(1, "intro"), row(2, "outro")]
    found = {"manifest_key": "inputs/show/ep1.batch.csv", "batch_id": "b1", "state": "running",
             "report_key": "outputs/show/ep1.batch.report.json"}
    doc = json.loads(json_text(scripted.batch(found, "bkt", rows, views.batch_progress(3, rows))))
    assert doc["progress"] == {"rows": 3, "done": 0, "delivered": 0, "failed": 0, "cancelled": 0, "pending": 3}
    assert [j["batch"]["row"] for j in doc["jobs"]] == [1, 2] and doc["rejected"] is None
    assert doc["report"] == "s3://bkt/outputs/show/ep1.batch.report.json"


# --- batch rows told apart ----------------------------------------------------------------------------

def test_rows_of_one_manifest_with_one_portrait_have_different_names() -> None:
    labels = [views.inputs_label(r) for r in (row(1, "intro", "{stem}-intro"), row(2, "outro"), row(3, "outro"))]
    assert labels[0] == "show/face (png + intro.wav) → {stem}-intro, ep1.batch.csv row 1"
    assert len(set(labels)) == 3


@given(st.lists(st.tuples(st.text(min_size=1, max_size=6), st.text(max_size=6)), min_size=2, max_size=6))
def test_every_row_of_a_batch_has_a_name_of_its_own(specs: list[tuple[str, str]]) -> None:
    rows = [row(n, audio, out) for n, (audio, out) in enumerate(specs, start=1)]
    assert len({views.inputs_label(r) for r in rows}) == len(rows)


def test_a_pair_named_alike_keeps_its_short_label() -> None:
    assert views.inputs_label(job()) == "show/face (png + wav)"


# --- retry where it can succeed -----------------------------------------------------------------------

@pytest.mark.parametrize(("stage", "code", "possible"), [
    ("validate", "bad_image", False), ("validate", "audio_too_long", False), ("validate", "ambiguous_pair", False),
    ("validate", "missing_input", True), ("validate", "row_lost", True),
    ("render", "provider_failed", True), ("submit", "provider_rejected", True), ("deliver", "delivery_refused", True),
    ("admit", "budget", True),
])
def test_retry_is_offered_where_it_can_succeed(stage: str, code: str, possible: bool) -> None:
    assert views.retry_possible(job(status=Status.FAILED, failure=Failure(stage, code, "why"))) is possible


def test_retry_is_offered_for_a_cancelled_job_but_not_a_running_one_or_a_segment() -> None:
    assert views.retry_possible(job(status=Status.CANCELLED))
    assert not views.retry_possible(job(status=Status.PROCESSING))
    assert not views.retry_possible(job(status=Status.FAILED, parent_id="p" * 32,
                                        failure=Failure("render", "provider_failed", "x")))


# --- the local stack's console --------------------------------------------------------------------------

def test_the_console_says_each_move_once_with_where_the_video_went_or_why_it_failed() -> None:
    seen: dict[str, Status] = {}
    old = job("old", status=Status.DELIVERED, output_key="outputs/show/old.mp4")
    assert len(views.activity_lines(seen, [old], "bkt")) == 1  # known from now on
    fresh = job("new", status=Status.RECEIVED)
    assert views.activity_lines(seen, [old, fresh], "bkt") == [f"{fresh.job_id[:12]}  show/new (png + wav): RECEIVED"]
    assert views.activity_lines(seen, [old, fresh], "bkt") == []
    done = fresh.with_changes(status=Status.DELIVERED, output_key="outputs/show/new.mp4")
    assert views.activity_lines(seen, [done], "bkt")[0].endswith("DELIVERED → s3://bkt/outputs/show/new.mp4")
    bad = job("bad", status=Status.FAILED, failure=Failure("validate", "bad_image", "not an image"))
    assert views.activity_lines(seen, [bad], "bkt")[0].endswith("FAILED: not an image")


# --- a search compares what the list shows ------------------------------------------------------------

NAMES = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/"), min_size=1, max_size=8)


@settings(deadline=None)
@given(folder=st.lists(NAMES, max_size=3).map("/".join), stem=NAMES, audio=NAMES, output_name=st.text(max_size=8),
       batch_row=st.integers(0, 99), mask=st.booleans(), segment=st.one_of(st.none(), st.integers(0, 20)))
def test_a_search_compares_exactly_the_name_the_list_shows(folder: str, stem: str, audio: str, output_name: str,
                                                           batch_row: int, mask: bool,
                                                           segment: int | None) -> None:
    from s2v.adapters.store import deserialize_item, serialize
    from s2v_cli.queries import SEARCH_ATTRIBUTES, _shown_name, list_job

    base = f"inputs/{folder}/" if folder else "inputs/"
    shown = job(stem, folder=folder, output_name=output_name,
                batch_id="b" if batch_row else "", batch_key=f"{base}ep.batch.csv" if batch_row else "",
                batch_row=batch_row, image=InputObject(f"{base}{stem}.png", "e", 1),
                extra_inputs={"mask": InputObject(f"{base}{stem}.mask.png", "e", 1)} if mask else {},
                parent_id="p" * 32 if segment is not None else "", segment_index=segment or 0,
                ).with_changes(audio=InputObject(f"{base}{audio}.wav", "e", 1))
    record = shown.to_dict()
    item = deserialize_item({k: serialize(record[k]) for k in SEARCH_ATTRIBUTES if record.get(k) is not None})
    assert _shown_name(item) == views.inputs_label(list_job(item)).casefold() == views.inputs_label(shown).casefold()
