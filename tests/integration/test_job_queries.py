"""The operator's index reads (s2v_cli.queries) against moto's server and the template's table."""

from __future__ import annotations

import pytest

from helpers.aws import create_jobs_table, template_resource
from s2v.adapters.store import GUARD_KEY, SPEND_PREFIX, JobStore
from s2v.model.jobs import InputObject, Job, Status
from s2v_cli.queries import CREATED_INDEX, STATUS_INDEX, JobQueries

NOW = 1_790_000_000.0
STATES = [Status.DELIVERED, Status.FAILED, Status.QUEUED, Status.DELIVERED, Status.PROCESSING]


@pytest.fixture
def table(moto_endpoint: str, unique: str) -> tuple[JobStore, JobQueries]:
    """17 jobs one minute apart (job-0000 oldest) in two folders, plus the spend guard's items."""
    name = f"jobs-{unique}"
    ddb = create_jobs_table(moto_endpoint, name)
    store = JobStore(ddb, name, clock=lambda: NOW)
    for n in range(17):
        folder = "talks/2025" if n % 3 == 0 else "news"
        stem = f"Alice-{n}" if n % 4 == 0 else f"bob-{n}"
        store.create(Job(job_id=f"job-{n:04d}", status=STATES[n % len(STATES)], version=0, folder=folder, stem=stem,
                         image=InputObject(f"inputs/{folder}/{stem}.png", "e1", 10),
                         audio=InputObject(f"inputs/{folder}/{stem}.wav", "e2", 20),
                         created_at=NOW + 60 * n, updated_at=NOW + 60 * n))
    ddb.put_item(TableName=name, Item={"job_id": {"S": GUARD_KEY}, "in_flight": {"N": "1"}})
    ddb.put_item(TableName=name, Item={"job_id": {"S": SPEND_PREFIX + "2026-01-02"}, "spent": {"N": "1.25"}})
    return store, JobQueries(ddb, name)


def flat(pages: list[list[str]]) -> list[str]:
    return [job_id for page in pages for job_id in page]


def all_pages(queries: JobQueries, **kwargs: object) -> list[list[str]]:
    pages, cursor = [], ""
    for _ in range(50):
        page = queries.page(cursor=cursor, **kwargs)  # type: ignore[arg-type]
        pages.append([j.job_id for j in page.jobs])
        cursor = page.cursor
        if not cursor:
            return pages
    raise AssertionError("the cursor never ended")


def test_the_indexes_read_are_the_ones_the_template_declares() -> None:
    indexes = {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]]
               for i in template_resource("JobsTable")["Properties"]["GlobalSecondaryIndexes"]}
    assert indexes[STATUS_INDEX] == ["status", "created_at"]
    assert indexes[CREATED_INDEX] == ["record_type", "created_at"]


def test_pages_run_newest_first_across_states_without_gaps_repeats_or_bookkeeping_items(table: tuple) -> None:
    _, queries = table
    pages = all_pages(queries, size=5)
    assert [len(p) for p in pages] == [5, 5, 5, 2]
    assert flat(pages) == [f"job-{n:04d}" for n in range(16, -1, -1)]
    # A page that ends exactly with the last job says there is nothing after it.
    assert [len(p) for p in all_pages(queries, size=17)] == [17]


def test_one_state_comes_from_the_status_index_newest_first(table: tuple) -> None:
    _, queries = table
    delivered = [f"job-{n:04d}" for n in range(16, -1, -1) if STATES[n % len(STATES)] is Status.DELIVERED]
    assert flat(all_pages(queries, status=Status.DELIVERED, size=2)) == delivered
    assert queries.count(Status.DELIVERED) == len(delivered)
    assert queries.counts() == {s: sum(1 for n in range(17) if STATES[n % len(STATES)] is s) for s in Status}
    assert queries.count(Status.CANCELLED) == 0


def test_dates_bound_the_key_condition(table: tuple) -> None:
    _, queries = table
    page = queries.page(since=NOW + 60 * 3, until=NOW + 60 * 6)
    assert [j.job_id for j in page.jobs] == ["job-0006", "job-0005", "job-0004", "job-0003"] and not page.cursor
    assert queries.count(Status.DELIVERED, since=NOW + 60 * 10) == 3  # job-0010, job-0013, job-0015
    assert [j.job_id for j in queries.jobs(status=Status.FAILED, until=NOW + 60 * 6)] == ["job-0006", "job-0001"]


def test_folder_and_name_filters_read_a_bounded_number_of_jobs_and_keep_searching_from_there(table: tuple) -> None:
    _, queries = table
    wanted = [f"job-{n:04d}" for n in range(16, -1, -1) if n % 3 == 0 and n % 4 == 0]  # talks/2025 + Alice
    assert wanted == ["job-0012", "job-0000"]
    first = queries.page(folder="talks", name="alice", size=10, read_limit=6)  # reads job-0016 .. job-0011
    assert [j.job_id for j in first.jobs] == ["job-0012"] and first.partial and first.searched == 6
    second = queries.page(folder="talks", name="alice", size=10, read_limit=6, cursor=first.cursor)
    assert [j.job_id for j in second.jobs] == [] and second.partial  # job-0010 .. job-0005
    third = queries.page(folder="talks", name="alice", size=10, read_limit=6, cursor=second.cursor)
    assert [j.job_id for j in third.jobs] == ["job-0000"] and not third.partial and not third.cursor
    # "talks" means talks and below, not "talkshow"; names match case-insensitively anywhere in the stem.
    assert flat(all_pages(queries, folder="talks/", name="ALICE", size=1)) == wanted
    assert flat(all_pages(queries, folder="tal", size=50)) == []
    # A full page stops at its last match, and the next page starts right after it.
    news = [f"job-{n:04d}" for n in range(16, -1, -1) if n % 3]
    assert flat(all_pages(queries, folder="news", size=4)) == news


def test_a_cursor_from_another_query_or_a_forged_one_starts_from_the_top(table: tuple) -> None:
    _, queries = table
    other = queries.page(status=Status.DELIVERED, size=1).cursor
    assert [j.job_id for j in queries.page(size=1, cursor=other).jobs] == ["job-0016"]
    for forged in ("garbage", "eyJpIjoiY3JlYXRlZC1pbmRleCJ9", "e30"):
        assert [j.job_id for j in queries.page(size=1, cursor=forged).jobs] == ["job-0016"]


def test_spend_per_day_comes_from_the_guards_day_items(table: tuple) -> None:
    _, queries = table
    assert queries.spend_by_day(["2026-01-01", "2026-01-02"]) == {"2026-01-01": 0.0, "2026-01-02": 1.25}


def test_values_returns_only_the_attributes_asked_for(table: tuple) -> None:
    _, queries = table
    items = queries.values(Status.DELIVERED, since=NOW, attributes=("created_at", "stem"), limit=2)
    assert items == [{"created_at": NOW + 60 * 15, "stem": "bob-15"}, {"created_at": NOW + 60 * 13, "stem": "bob-13"}]
