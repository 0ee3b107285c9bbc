"""What `s2v` shows, from Job objects alone: filters, cost rules, tables and summaries."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console, RenderableType

from s2v.adapters.store import GuardState
from s2v.model.jobs import Failure, InputObject, Job, Status
from s2v_cli import views

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400


def job(n: int = 1, *, status: Status = Status.DELIVERED, folder: str = "talks", created: float = NOW - 600,
        **changes: Any) -> Job:
    base = Job(job_id=f"{n:02d}" + "ab" * 15, status=status, version=3, folder=folder, stem=f"clip{n}",
               image=InputObject(f"inputs/{folder}/clip{n}.png", "etag-i", 2048),
               audio=InputObject(f"inputs/{folder}/clip{n}.wav", "etag-a", 64044),
               created_at=created, updated_at=created + 30, estimated_cost_usd=0.15)
    if status not in (Status.RECEIVED, Status.QUEUED) and "admitted_day" not in changes:
        changes["admitted_day"] = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d")
    return base.with_changes(**changes)


def render(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


# --- --since and job ids ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds_before"), [("30m", 1800), ("2h", 7200), ("1d", DAY), ("1w", 7 * DAY),
                                                      ("90s", 90), ("1.5h", 5400), (" 2H ", 7200)])
def test_relative_since_counts_back_from_now(text: str, seconds_before: float) -> None:
    assert views.parse_since(text, NOW) == NOW - seconds_before


def test_an_iso_date_since_is_midnight_utc_and_an_offset_is_respected() -> None:
    assert views.parse_since("2026-03-09", NOW) == datetime(2026, 3, 9, tzinfo=UTC).timestamp()
    assert views.parse_since("2026-03-09T14:00Z", NOW) == datetime(2026, 3, 9, 14, tzinfo=UTC).timestamp()
    assert views.parse_since("2026-03-09T14:00+02:00", NOW) == datetime(2026, 3, 9, 12, tzinfo=UTC).timestamp()


def test_an_unreadable_since_says_what_would_be_accepted() -> None:
    with pytest.raises(ValueError, match=r"30m, 2h, 1d.*ISO date"):
        views.parse_since("yesterday", NOW)


def test_a_unique_prefix_names_one_job_and_an_ambiguous_or_unknown_one_says_why() -> None:
    ids = ["3f2a0000", "3f2b1111", "9c000000"]
    assert views.match_job_id("3F2A", ids) == "3f2a0000"
    assert views.match_job_id("9c000000", ids) == "9c000000"
    with pytest.raises(views.UnknownJob, match="3f2 matches 2 jobs"):
        views.match_job_id("3f2", ids)
    with pytest.raises(views.UnknownJob, match="no job 77"):
        views.match_job_id("77", ids)
    with pytest.raises(views.UnknownJob, match="no job"):
        views.match_job_id("", ids)


# --- the cost rule ---------------------------------------------------------------------------------

SUBMIT_REFUSED = Failure("submit", "provider_rejected", "WaveSpeed rejected the job")


@pytest.mark.parametrize(("status", "changes", "charged"), [
    (Status.RECEIVED, {}, False),
    (Status.QUEUED, {"queue_reason": "budget"}, False),
    (Status.SUBMITTING, {}, True),  # the POST may be in flight: the reservation counts
    (Status.SUBMITTED, {"provider_id": "p1", "submitted_at": NOW}, True),
    (Status.PROCESSING, {"provider_id": "p1", "submitted_at": NOW}, True),
    (Status.COMPLETED, {"provider_id": "p1", "submitted_at": NOW}, True),
    (Status.DELIVERED, {"provider_id": "p1", "submitted_at": NOW}, True),
    (Status.FAILED, {"failure": Failure("validate", "not_an_image", "bad")}, False),
    (Status.FAILED, {"failure": SUBMIT_REFUSED}, False),
    (Status.FAILED, {"failure": Failure("render", "provider_failed", "x"), "provider_id": "p1",
                     "submitted_at": NOW}, True),
    (Status.FAILED, {"failure": Failure("submit", "submit_outcome_unknown", "x")}, True),
    # an ambiguous submit that the provider's list proved it never took
    (Status.FAILED, {"failure": Failure("submit", "not_charged", "x"), "sent_at": NOW}, False),
])
def test_a_job_costs_its_estimate_once_the_provider_may_have_taken_it(
    status: Status, changes: dict[str, Any], charged: bool,
) -> None:
    item = job(status=status, **changes)
    assert views.is_charged(item) is charged
    assert views.job_cost(item) == (0.15 if charged else 0.0)


def test_spend_belongs_to_the_day_whose_budget_reserved_it() -> None:
    late = job(created=NOW - DAY, admitted_day="2026-03-09", submitted_at=NOW)
    assert views.spend_day(late) == "2026-03-09"
    assert views.spend_day(job(status=Status.SUBMITTED, admitted_day="")) == "2026-03-10"


def test_cost_rows_group_charged_jobs_by_day_and_folder_newest_day_first() -> None:
    jobs = [
        job(1, folder="talks"), job(2, folder="talks", estimated_cost_usd=0.3),
        job(3, folder="ads"), job(4, folder="talks", created=NOW - DAY),
        job(5, status=Status.QUEUED), job(6, status=Status.FAILED, failure=SUBMIT_REFUSED),
    ]
    rows = views.cost_rows(jobs)
    assert [(r.day, r.folder, r.jobs, r.usd) for r in rows] == [
        ("2026-03-10", "ads", 1, 0.15), ("2026-03-10", "talks", 2, 0.45), ("2026-03-09", "talks", 1, 0.15)]
    assert [r.day for r in views.cost_rows(jobs, since=NOW - 3600)] == ["2026-03-10", "2026-03-10"]


def test_the_cost_table_totals_and_flags_a_day_over_the_budget() -> None:
    rows = views.cost_rows([job(1), job(2, estimated_cost_usd=0.3), job(3, folder="", created=NOW - DAY)])
    text = render(views.cost_table(rows, budget_usd=0.4))
    assert "total" in text and "$0.60" in text
    assert "(top level)" in text
    assert "daily budget $0.40; over it on 2026-03-10" in text
    assert "budget" not in render(views.cost_table(rows, budget_usd=None))


# --- lists -----------------------------------------------------------------------------------------

def test_select_jobs_filters_by_state_folder_and_age_newest_first() -> None:
    jobs = [job(1, created=NOW - 300), job(2, created=NOW - 100, folder="talks/2026"),
            job(3, created=NOW - 200, folder="talkshow"), job(4, created=NOW - 50, status=Status.FAILED),
            job(5, created=NOW - 5 * DAY)]
    assert [j.job_id[:2] for j in views.select_jobs(jobs)] == ["04", "02", "03", "01", "05"]
    assert [j.job_id[:2] for j in views.select_jobs(jobs, folder="talks")] == ["04", "02", "01", "05"]
    assert [j.job_id[:2] for j in views.select_jobs(jobs, folder="/talks/2026/")] == ["02"]
    assert [j.job_id[:2] for j in views.select_jobs(jobs, status=Status.FAILED)] == ["04"]
    assert [j.job_id[:2] for j in views.select_jobs(jobs, since=NOW - DAY, status=Status.DELIVERED)] == [
        "02", "03", "01"]


def test_the_jobs_table_shows_id_inputs_state_age_provider_and_cost() -> None:
    delivered = job(1, provider_id="prov-123", created=NOW - 7200)
    waiting = job(2, status=Status.QUEUED, created=NOW - 45)
    text = render(views.jobs_table([waiting, delivered], now=NOW))
    assert "2 job(s), newest first" in text
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("│")}
    assert delivered.job_id[:12] in lines and delivered.job_id[:13] not in text
    assert all(word in lines[delivered.job_id[:12]] for word in ("talks/clip1 (png + wav)", "DELIVERED", "2h",
                                                                 "prov-123", "$0.15"))
    assert all(word in lines[waiting.job_id[:12]] for word in ("QUEUED", "45s", "$0.15"))


def test_names_and_notes_with_brackets_are_shown_as_typed_not_as_markup() -> None:
    odd = job(1, folder="[red]x[/red]", stem="[bold]clip", history=({"status": "RECEIVED", "at": NOW, "note": "[b]"},))
    assert "[red]x[/red]/[bold]clip" in render(views.jobs_table([odd], now=NOW))
    detail = render(views.job_detail(odd, "media"))
    assert "[red]x[/red] / [bold]clip" in detail and "[b]" in detail


@pytest.mark.parametrize(("seconds", "shown"), [(-3, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"),
                                                (2 * DAY + 5, "2d")])
def test_ages_are_short(seconds: float, shown: str) -> None:
    assert views.format_age(seconds) == shown


# --- one job ---------------------------------------------------------------------------------------

def test_the_record_shows_what_happened_with_s3_uris_and_leaves_out_empty_fields() -> None:
    failed = job(7, status=Status.FAILED, failure=Failure("validate", "not_an_image", "it is plain text"),
                 error_key="outputs/talks/clip7.error.json", retry_of="old-job", attempt=1,
                 params={"prompt": "hi", "resolution": "720p", "seed": 4})
    rows = dict(views.record_rows(failed, "media"))
    assert rows["failure"] == "[validate/not_an_image] it is plain text"
    assert rows["error report"] == "s3://media/outputs/talks/clip7.error.json"
    assert rows["image"] == "s3://media/inputs/talks/clip7.png (2,048 bytes, etag etag-i)"
    assert rows["params"] == '{"prompt": "hi", "resolution": "720p", "seed": 4}'
    assert rows["estimated cost"].startswith("$0.15 (not spent")
    assert rows["retry of"] == "old-job" and rows["attempt"] == "1"
    assert "video" not in rows and "provider id" not in rows and "submitted" not in rows


def test_the_history_lists_each_step_with_its_time_since_creation() -> None:
    created = NOW - 100
    item = job(created=created, history=(
        {"status": "RECEIVED", "at": created, "note": "created"},
        {"status": "SUBMITTING", "at": created + 1.25, "note": "admitted"},
        {"status": "DELIVERED", "at": created + 42, "note": ""},
    ))
    assert views.history_rows(item) == [
        ("2026-03-10 11:58:20Z", "+0.0s", "RECEIVED", "created"),
        ("2026-03-10 11:58:21Z", "+1.2s", "SUBMITTING", "admitted"),
        ("2026-03-10 11:59:02Z", "+42.0s", "DELIVERED", ""),
    ]
    text = render(views.job_detail(item, "media"))
    assert "status history" in text and "+42.0s" in text and item.job_id in text


# --- status ------------------------------------------------------------------------------------------

def test_status_counts_every_state_and_compares_spend_with_the_budget() -> None:
    jobs = [job(1), job(2, status=Status.SUBMITTED), job(3, status=Status.QUEUED, queue_reason="2 job(s) already "
            "in flight (MaxInFlightJobs)"), job(4, status=Status.QUEUED, queue_reason="2 job(s) already in flight "
            "(MaxInFlightJobs)")]
    counts = views.count_by_status(jobs)
    assert counts[Status.QUEUED] == 2 and counts[Status.PROCESSING] == 0 and len(counts) == len(Status)
    guard = GuardState(in_flight=1, spent_today_usd=5.0, day="2026-03-10")
    queued = [j for j in jobs if j.status is Status.QUEUED]
    text = render(views.status_summary(counts, queued, guard, views.StackLimits(daily_budget_usd=20.0,
                                                                                max_in_flight=2)))
    assert "4 job(s) by state" in text
    assert "in flight: 1 of at most 2 (MaxInFlightJobs)" in text
    assert "today's estimated spend (2026-03-10 UTC): $5.00 of $20.00 (DailyBudgetUSD, 25%)" in text
    assert "queued: 2 waiting because 2 job(s) already in flight (MaxInFlightJobs)" in text
    assert "note:" not in text


def test_status_points_out_a_guard_counter_that_disagrees_with_the_records_and_an_unknown_budget() -> None:
    guard = GuardState(in_flight=2, spent_today_usd=0.3, day="2026-03-10")
    counts = views.count_by_status([job(1, status=Status.PROCESSING)])
    text = render(views.status_summary(counts, [], guard, views.StackLimits(None, None)))
    assert "in flight: 2 (MaxInFlightJobs); note: 1 job record(s) are in" in text
    assert "$0.30 (budget unknown)" in text


def test_status_shows_the_provider_balance_or_why_it_is_unavailable() -> None:
    guard = GuardState(in_flight=0, spent_today_usd=0.0, day="2026-03-10")
    limits = views.StackLimits(daily_budget_usd=20.0, max_in_flight=2)
    none = views.count_by_status([])
    shown = render(views.status_summary(none, [], guard, limits, views.Balance(12.5)))
    assert "provider balance: $12.50 (WaveSpeed" in shown
    down = render(views.status_summary(none, [], guard, limits, views.Balance(None, "WaveSpeed did not answer")))
    assert "provider balance: unavailable (WaveSpeed did not answer)" in down


# --- cancel ------------------------------------------------------------------------------------------

CANCELLED_AT = NOW - 60


def cancelled(**changes: Any) -> Job:
    return job(status=Status.CANCELLED, cancelled_by="alice", cancelled_at=CANCELLED_AT,
               report_key="outputs/talks/clip1.cancelled.json", **changes)


@pytest.mark.parametrize(("changes", "charged"), [
    ({"provider_delete": "not sent", "final_cost_usd": 0.0}, False),
    ({"provider_delete": "deleted", "provider_id": "p1", "final_cost_usd": 0.15}, True),
    ({"provider_delete": "in flight", "sent_at": NOW}, True),  # no recorded final cost: it may have been sent
    ({"provider_delete": "not sent"}, False),
])
def test_a_cancelled_job_counts_its_estimate_only_if_it_may_have_reached_the_provider(
        changes: dict[str, Any], charged: bool) -> None:
    assert views.is_charged(cancelled(**changes)) is charged


def test_cancel_says_what_happened_at_the_provider_and_what_it_cost() -> None:
    deleted = views.cancel_lines(cancelled(provider_delete="deleted", provider_id="p1", final_cost_usd=0.15),
                                 was=Status.PROCESSING, bucket="media")
    assert deleted[0] == f"cancelled job {'01' + 'ab' * 15} (was PROCESSING) as alice"
    assert "its task p1 was deleted at WaveSpeed" in deleted[1]
    assert "counted cost: $0.15 (it may have been charged)" in deleted
    assert "report: s3://media/outputs/talks/clip1.cancelled.json" in deleted
    local = views.cancel_lines(cancelled(provider_delete="not sent", final_cost_usd=0.0), was=Status.QUEUED,
                               bucket="media")
    assert "it never reached WaveSpeed: nothing was charged" in local and "counted cost: $0.00" in local
    failed = views.cancel_lines(cancelled(provider_delete="delete failed: 500", provider_id="p1"),
                                was=Status.SUBMITTED, bucket="media")
    assert any("could not be told to stop task p1" in line and "s2v cancel" in line for line in failed)
    again = views.cancel_lines(cancelled(provider_delete="deleted"), was=Status.CANCELLED, bucket="media")
    assert again[0].startswith(f"job {'01' + 'ab' * 15} was already cancelled by alice at 2026-03-10 11:59")


def test_the_record_shows_who_cancelled_and_how_an_ambiguous_submit_was_settled() -> None:
    rows = dict(views.record_rows(cancelled(provider_delete="deleted", reconciled_by="input urls"), "media"))
    assert rows["cancelled"] == "by alice at 2026-03-10 11:59:00Z"
    assert rows["provider task"] == "deleted"
    assert rows["reconciled by"].startswith("input urls")


# --- every input of a set, and batches ----------------------------------------------------------------

def two_speakers() -> Job:
    return job(7, audio=None, extra_inputs={
        "left": InputObject("inputs/talks/clip7.left.wav", "e-l", 100),
        "right": InputObject("inputs/talks/clip7.right.wav", "e-r", 200),
        "mask": InputObject("inputs/talks/clip7.mask.png", "e-m", 300)})


def test_a_two_speaker_set_lists_its_image_tracks_and_mask_in_the_jobs_table_and_the_record() -> None:
    assert views.inputs_label(two_speakers()) == "talks/clip7 (png + left + right + mask)"
    assert views.inputs_label(job(1)) == "talks/clip1 (png + wav)"
    table = render(views.jobs_table([two_speakers()], now=NOW))
    assert "png + left + right + mask" in table
    rows = dict(views.record_rows(two_speakers(), "media"))
    assert rows["left"] == "s3://media/inputs/talks/clip7.left.wav (100 bytes, etag e-l)"
    assert rows["right"].startswith("s3://media/inputs/talks/clip7.right.wav") and "audio" not in rows
    assert rows["mask"].startswith("s3://media/inputs/talks/clip7.mask.png (300 bytes")


def test_a_batch_row_names_its_manifest_in_the_record() -> None:
    row = job(2, batch_id="b" * 32, batch_key="inputs/show/episode.batch.csv", batch_row=4)
    assert dict(views.record_rows(row, "media"))["batch"] == "row 4 of inputs/show/episode.batch.csv"
    assert "batch" not in dict(views.record_rows(job(3), "media"))


def test_batch_progress_counts_ended_rows_and_rows_without_a_job_as_pending() -> None:
    jobs = [job(1), job(2), job(3, status=Status.FAILED), job(4, status=Status.SUBMITTED),
            job(5, status=Status.CANCELLED)]
    progress = views.batch_progress(7, jobs)
    assert (progress.done, progress.delivered, progress.failed, progress.cancelled, progress.pending) == (4, 2, 1, 1, 3)
    assert progress.line == "4 of 7 done: 2 delivered, 1 failed, 1 cancelled, 3 pending"
    assert views.batch_progress(2, []).line == "0 of 2 done: 0 delivered, 0 failed, 2 pending"


def test_a_batch_is_named_by_its_manifest_key_or_file_name_and_an_ambiguous_name_says_which_keys() -> None:
    from s2v_cli.queries import find_batch

    newest_first = [{"batch_id": "b2", "manifest_key": "inputs/show/ep1.batch.csv"},
                    {"batch_id": "b1", "manifest_key": "inputs/show/ep1.batch.csv"},
                    {"batch_id": "c1", "manifest_key": "inputs/other/ep2.batch.csv"},
                    {"batch_id": "d1", "manifest_key": "inputs/news/ep2.batch.csv"}]
    for name in ("ep1.batch.csv", "show/ep1.batch.csv", "inputs/show/ep1.batch.csv", "/inputs/show/ep1.batch.csv"):
        assert find_batch(newest_first, name)["batch_id"] == "b2"  # the manifest's latest upload
    assert find_batch(newest_first, "other/ep2.batch.csv")["batch_id"] == "c1"
    with pytest.raises(LookupError, match=r"names 2 manifests: inputs/news/ep2.batch.csv, inputs/other/ep2"):
        find_batch(newest_first, "ep2.batch.csv")
    with pytest.raises(LookupError, match=r"no batch for a manifest named 'p1\.batch\.csv'"):
        find_batch(newest_first, "p1.batch.csv")  # a suffix of a name is not the name
