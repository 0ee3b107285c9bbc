"""What a jobs-table change wakes: the one place that routes a stream record to its flows.

DynamoDB Streams throttles more than two readers of one shard, so the table's stream has two
consumers (template.yaml): the long-form function (its own mapping: it needs ffmpeg and more
memory; see flows/longform.py) and the deliver function, whose mapping passes every job change whose
new status is COMPLETED, FAILED or CANCELLED, and the spend guard's changes while a job waits
(``queued_at`` set), and which routes each one here:

==========================================================  =========================================
change                                                      wakes
==========================================================  =========================================
the spend guard's in-flight count went down while a job     ``poll.release_freed_slots``: queued jobs
waits (``queued_at``: set when a job is queued, cleared     take the freed slot now, not at the next
by the release that finds none left)                        Tick
a job is now COMPLETED, FAILED or CANCELLED                 ``deliver.on_job``: the video copied, or
                                                            the failure or cancel reported under
                                                            outputs/ (``flows/outputs.py``)
... and it is a manifest's row, and delivery ended it       ``batch.row_ended``: the batch's report
(not "noop"; "failed" comes back as its FAILED record)      rebuilt from the table
==========================================================  =========================================

The freed slot is told by the guard item, which the job's leaving write changes in the same
transaction, so a job's end costs no query for queued jobs when none wait. The release is best
effort: a lost one only waits for the poller's next scheduled run, as it did with its own mapping.
Delivery's errors propagate: the mapping retries the record, bisects, then sends it to the deliver
DLQ, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from s2v.adapters.store import GUARD_KEY, QUEUED_HINT
from s2v.deps import Deps
from s2v.flows import batch, deliver, poll
from s2v.model.jobs import Job, Status, final_cost

logger = Logger(child=True)

ENDED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
DELIVER = "deliver"
ROW_ENDED = "row_ended"
RELEASE_FREED_SLOT = "release_freed_slot"


@dataclass(frozen=True)
class Change:
    job_id: str
    old_status: str  # "" for a new item
    new_status: str  # "" for a removed one


@dataclass(frozen=True)
class GuardChange:
    """A change of the spend guard's item (``#guard``)."""

    old_in_flight: int
    new_in_flight: int
    queued_at: float | None  # a job waits since this time (None: none waits)


@dataclass(frozen=True)
class Routed:
    """What one record woke: the job as delivery read it (None when delivery did not run or it was
    gone) and delivery's outcome ("" when not woken)."""

    change: Change
    job: Job | None = None
    outcome: str = ""


def guard_change_of(record: dict[str, Any]) -> GuardChange | None:
    """The spend guard's change a stream record carries, or None for any other item."""
    data = record.get("dynamodb", {})
    if data.get("Keys", {}).get("job_id", {}).get("S", "") != GUARD_KEY:
        return None

    def number(image: str, name: str) -> str | None:
        value = data.get(image, {}).get(name, {}).get("N")
        return None if value is None else str(value)

    queued_at = number("NewImage", QUEUED_HINT)
    return GuardChange(old_in_flight=int(float(number("OldImage", "in_flight") or 0)),
                       new_in_flight=int(float(number("NewImage", "in_flight") or 0)),
                       queued_at=None if queued_at is None else float(queued_at))


def change_of(record: dict[str, Any]) -> Change | None:
    """The job change a stream record carries; None for the table's bookkeeping items ("#…" keys).

    Read from the raw record: Powertools' data classes would add ~11 ms to every cold start
    (bench/, figure 4) to decode three strings.
    """
    data = record.get("dynamodb", {})
    job_id = data.get("Keys", {}).get("job_id", {}).get("S", "")
    if not job_id or job_id.startswith("#"):
        return None

    def status(image: str) -> str:
        return str(data.get(image, {}).get("status", {}).get("S", ""))

    return Change(job_id=job_id, old_status=status("OldImage"), new_status=status("NewImage"))


def wakes(change: Change | GuardChange) -> tuple[str, ...]:
    """The routing table: what ``change`` wakes, in the order it runs."""
    if isinstance(change, GuardChange):
        freed = change.new_in_flight < change.old_in_flight
        return (RELEASE_FREED_SLOT,) if freed and change.queued_at is not None else ()
    return (DELIVER, ROW_ENDED) if change.new_status in ENDED else ()


def on_record(record: dict[str, Any], deps: Deps, *, deadline: float | None = None) -> Routed | None:
    """Run what one stream record wakes. ``deadline``: see ``deliver.on_job_change``. None for a
    record that is not a job's change (the guard's: its release runs here too)."""
    guard = guard_change_of(record)
    if guard is not None:
        if RELEASE_FREED_SLOT in wakes(guard):
            assert guard.queued_at is not None
            _release_freed_slot(deps, guard.queued_at)
        return None
    change = change_of(record)
    if change is None:
        return None
    routed = Routed(change)
    if DELIVER in wakes(change):
        job = deps.store.get(change.job_id)
        outcome = "missing" if job is None else job_ended(job, deps, deadline=deadline)
        routed = Routed(change, job, outcome)
    return routed


def on_job_change(job_id: str, deps: Deps, *, deadline: float | None = None) -> str:
    """What a job's ended record wakes, for the job as it is now (tests and tools drive this)."""
    job = deps.store.get(job_id)
    return "missing" if job is None else job_ended(job, deps, deadline=deadline)


def job_ended(job: Job, deps: Deps, *, deadline: float | None = None) -> str:
    """Delivery (or its report), then a manifest row's end: its batch report rebuilt from the table."""
    outcome = deliver.on_job(job, deps, deadline=deadline)
    if job.batch_id and outcome not in ("noop", "failed"):  # "failed": its own FAILED record reports it
        batch.row_ended(job, deps)
    return outcome


def _release_freed_slot(deps: Deps, queued_at: float) -> None:
    try:
        poll.release_freed_slots(deps)
        if not deps.store.queued(limit=1):
            deps.store.clear_queued_hint(queued_at)  # kept if a job was queued meanwhile
    except Exception:  # the poller's next scheduled run releases them
        logger.exception("could not release queued jobs into a freed slot")


def ended_job(routed: Routed) -> Job | None:
    """The job as delivery ended it, for the once-per-job metrics, from the job it held (no
    re-read): DELIVERED after a copy, as read after a report; None when nothing ended here (a
    refused copy comes back as a FAILED record, reported then)."""
    if routed.job is None or routed.outcome not in ("delivered", "reported"):
        return None
    if routed.outcome == "delivered":
        # What the DELIVERED transition writes (store.transition: final_cost, not refunded).
        return routed.job.with_changes(status=Status.DELIVERED, final_cost_usd=final_cost(routed.job, refunded=False))
    return routed.job
