"""A manifest row's job report names its batch and how far the batch was when the report was written."""

from __future__ import annotations

from s2v.model.jobs import InputObject, Job, Status
from s2v.model.report import job_report


def row_job(**changes: object) -> Job:
    return Job(job_id="a" * 32, status=Status.DELIVERED, version=5, folder="show", stem="portrait-001",
               image=InputObject("inputs/show/p.png", "e1", 10), audio=InputObject("inputs/show/v.wav", "e2", 20),
               created_at=1.0, updated_at=2.0).with_changes(**changes)


def test_a_row_report_shows_the_batch_name_and_progress_at_writing() -> None:
    job = row_job(batch_id="b" * 32, batch_key="inputs/show/episode.batch.csv", batch_row=3)
    batch = job_report(job, (7, 40))["batch"]
    assert batch == {"batch_id": "b" * 32, "manifest": "inputs/show/episode.batch.csv", "name": "episode.batch.csv",
                     "row": 3, "progress": "7 of 40 done", "done": 7, "rows": 40}


def test_a_job_outside_a_batch_has_no_batch_section() -> None:
    assert job_report(row_job())["batch"] is None
