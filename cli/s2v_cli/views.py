"""What the operator sees, built from Job objects. Pure: no I/O, no AWS.

Cost rule (``s2v cost``, the jobs table, ``s2v status``): a job counts its ``estimated_cost_usd``
once the provider may have taken it: it is SUBMITTING (reserved, the POST may be in flight) or
later, or it FAILED after being accepted (it has a provider id or a submit time) or with an
unknown submit outcome, or it was CANCELLED after it may have reached the provider (its recorded
final cost is not 0). Jobs that are waiting (RECEIVED, QUEUED), failed before submission (invalid
input, provider refused the POST), or that the provider's list proved it never took
(``not_charged``) cost 0. A job's spend belongs to the UTC day whose budget reserved it
(``admitted_day``), the same day the spend guard charges.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from s2v.adapters.store import GuardState, utc_day
from s2v.model.jobs import IN_FLIGHT, Job, Status
from s2v.model.longform import progress, span

SHORT_ID = 12  # characters of a job id shown in tables; commands accept any unique prefix
UNKNOWN_SUBMIT = "submit_outcome_unknown"
STATUS_STYLE = {
    Status.DELIVERED: "green", Status.FAILED: "red", Status.QUEUED: "yellow",
    Status.COMPLETED: "cyan", Status.PROCESSING: "cyan", Status.SUBMITTED: "cyan", Status.SUBMITTING: "cyan",
    Status.CANCELLED: "magenta",
    Status.SPLITTING: "cyan", Status.RENDERING: "cyan", Status.STITCHING: "cyan",
}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# --- parsing -----------------------------------------------------------------------------------

def parse_since(text: str, now: float) -> float:
    """``2h``, ``30m``, ``1d``, ``1w`` before ``now``, or an ISO date/time (UTC unless it says
    otherwise), as a Unix time. Raises ValueError with what would be accepted."""
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2).lower()]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use a duration like 30m, 2h, 1d, 1w or an ISO date "
                         "like 2025-11-20 or 2025-11-20T14:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class UnknownJob(LookupError):
    """No job, or more than one, matches what the operator typed."""


def match_job_id(prefix: str, job_ids: Iterable[str]) -> str:
    """The one job id starting with ``prefix``. Raises UnknownJob saying why not."""
    prefix = prefix.strip().lower()
    found = sorted(j for j in job_ids if j.startswith(prefix)) if prefix else []
    if not found:
        raise UnknownJob(f"no job {prefix or '(empty id)'}: see `s2v jobs` for the jobs this stack knows")
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        raise UnknownJob(f"{prefix} matches {len(found)} jobs ({shown}); give more characters of the id")
    return found[0]


# --- facts about one job -----------------------------------------------------------------------

def is_charged(job: Job) -> bool:
    """Whether the provider may have taken (and may bill) this job; see the module docstring. A long
    talk's parent never goes to the provider: its segments are the jobs that cost."""
    if job.is_parent or job.status in (Status.RECEIVED, Status.QUEUED):
        return False
    if job.status is Status.FAILED:
        unknown = job.failure is not None and job.failure.code == UNKNOWN_SUBMIT
        return bool(job.provider_id or job.submitted_at or unknown)
    if job.status is Status.CANCELLED:
        if job.final_cost_usd is not None:
            return job.final_cost_usd > 0
        return bool(job.provider_id or job.sent_at)
    return True


def job_cost(job: Job) -> float:
    return job.estimated_cost_usd if is_charged(job) else 0.0


def spend_day(job: Job) -> str:
    """The UTC day whose budget holds this job's cost."""
    return job.admitted_day or utc_day(job.submitted_at or job.created_at)


EXTRA_ROLES = ("left", "right", "mask")  # named by role in a list: their extensions say nothing


def inputs_label(job: Job) -> str:
    """``talks/alice (png + wav)``: where the pair is, and what it is made of; a long talk's segment
    says which one it is (``talks/alice segment 3``). Jobs that share a name stay apart: a file not
    named after the pair shows its name, a templated output name follows an arrow, and a manifest's
    row says which (``show/face (png + intro.wav) → face-intro, ep1.batch.csv row 2``)."""
    return name_label(job.folder, job.stem, {role: obj.key for role, obj in job.inputs.items()},
                      segment=job.segment_index if job.is_segment else None, output_name=job.output_name,
                      batch_key=job.batch_key, batch_row=job.batch_row)


def name_label(folder: str, stem: str, inputs: dict[str, str], *, segment: int | None = None,
               output_name: str = "", batch_key: str = "", batch_row: int = 0) -> str:
    """``inputs_label`` from the fields alone (a search compares it over raw items, thousands a page)."""
    name = f"{folder}/{stem}" if folder else stem
    if segment is not None:
        return f"{name} segment {segment + 1}"
    # every input of the set (a two-speaker set: image, left and right tracks, mask), by role
    kinds = [_input_kind(stem, role, key) for role, key in inputs.items()]
    label = f"{name} ({' + '.join(kinds)})" if kinds else name
    if output_name and output_name != stem:
        label += f" → {output_name}"
    if batch_key:
        label += f", {posixpath.basename(batch_key)} row {batch_row}"
    return label


def _input_kind(stem: str, role: str, key: str) -> str:
    if role in EXTRA_ROLES:
        return role
    base = posixpath.basename(key)
    name, _, ext = base.rpartition(".")
    return ext if name == stem else base


def retry_possible(job: Job) -> bool:
    """Whether `s2v retry` can succeed: render, provider, delivery and budget failures and
    cancellations, and a manifest row whose file was missing; not an input the stack refused (the
    same files would fail the same way; a fixed upload starts a new job by itself)."""
    if job.status not in (Status.FAILED, Status.CANCELLED) or job.is_segment:
        return False
    failure = job.failure
    return failure is None or failure.stage != "validate" or failure.code in RETRYABLE_INPUT_CODES


RETRYABLE_INPUT_CODES = frozenset({"missing_input", "row_lost"})  # the file may be there now


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def usd(amount: float) -> str:
    return f"${amount:,.2f}"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}" if key else "-"


def _styled_status(status: Status) -> Text:
    return Text(str(status), style=STATUS_STYLE.get(status, ""))


def state_label(job: Job) -> Text:
    """The state, and for a long talk its segments' progress: ``RENDERING (7 of 12 rendered)``."""
    text = _styled_status(job.status)
    if job.is_parent and job.segment_count:
        text.append(f" ({progress(job)})")
    return text


# --- lists -------------------------------------------------------------------------------------

def in_folder(job: Job, folder: str) -> bool:
    """``--folder talks`` means talks and everything below it."""
    folder = folder.strip("/")
    return not folder or job.folder == folder or job.folder.startswith(folder + "/")


def select_jobs(jobs: Iterable[Job], *, status: Status | None = None, folder: str = "",
                since: float | None = None) -> list[Job]:
    """The jobs that match every given filter, newest first."""
    chosen = [j for j in jobs if (status is None or j.status is status) and in_folder(j, folder)
              and (since is None or j.created_at >= since)]
    return sorted(chosen, key=lambda j: (j.created_at, j.job_id), reverse=True)


def jobs_table(jobs: list[Job], *, now: float, title: str = "") -> Table:
    table = Table(title=title or f"{len(jobs)} job(s), newest first", title_justify="left")
    table.add_column("job", no_wrap=True)
    table.add_column("inputs", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    table.add_column("provider id", overflow="fold")
    table.add_column("cost", justify="right", no_wrap=True)
    for job in jobs:
        # A waiting or refused job shows its estimate dimmed: it has not been (and may never be) spent.
        cost = Text(usd(job.estimated_cost_usd)) if is_charged(job) else Text(
            usd(job.estimated_cost_usd) if job.estimated_cost_usd else "-", style="dim")
        table.add_row(job.job_id[:SHORT_ID], Text(inputs_label(job)), state_label(job),
                      format_age(now - job.created_at), Text(job.provider_id or "-"), cost)
    return table


# --- one batch ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchProgress:
    rows: int
    delivered: int
    failed: int
    cancelled: int

    @property
    def done(self) -> int:
        return self.delivered + self.failed + self.cancelled

    @property
    def pending(self) -> int:
        return self.rows - self.done

    @property
    def line(self) -> str:
        cancelled = f", {self.cancelled} cancelled" if self.cancelled else ""
        return (f"{self.done} of {self.rows} done: {self.delivered} delivered, {self.failed} failed{cancelled}, "
                f"{self.pending} pending")


def batch_progress(rows: int, jobs: Iterable[Job]) -> BatchProgress:
    """A manifest's rows by outcome; a row with no job yet (its files are awaited) is pending."""
    states = Counter(job.status for job in jobs)
    return BatchProgress(rows, states[Status.DELIVERED], states[Status.FAILED], states[Status.CANCELLED])


# --- one job -----------------------------------------------------------------------------------

def record_rows(job: Job, bucket: str) -> list[tuple[str, str]]:
    """The record as (field, value) lines a person reads top to bottom; empty fields are left out."""
    failure = job.failure
    rows = [
        ("job id", job.job_id),
        ("status", str(job.status)),
        ("segments", progress(job) if job.is_parent else ""),
        ("talk", f"segment {job.segment_index + 1} of {job.parent_id}: {span(job.segment_start, job.segment_end)}"
         f" (cut at {job.segment_cut})" if job.is_segment else ""),
        ("failure", f"[{failure.stage}/{failure.code}] {failure.reason}" if failure else ""),
        ("waiting because", job.queue_reason if job.status is Status.QUEUED else ""),
        ("submit note", job.submit_note),
        ("cancelled", f"by {job.cancelled_by or '?'} at {format_time(job.cancelled_at)}" if job.cancelled_at else ""),
        ("provider task", job.provider_delete),
        ("reconciled by", f"{job.reconciled_by} (an ambiguous submit found in WaveSpeed's list)"
         if job.reconciled_by else ""),
        ("folder / stem", f"{job.folder or '(top level)'} / {job.stem}"),
        ("image", _object_line(job.image, bucket)),
        ("audio", _object_line(job.audio, bucket)),
        *((role, _object_line(obj, bucket)) for role, obj in sorted(job.extra_inputs.items())),
        ("batch", f"row {job.batch_row} of {job.batch_key}" if job.batch_id else ""),
        ("params file", s3_uri(bucket, job.sidecar_key) if job.sidecar_key else ""),
        ("params", json.dumps(job.params, ensure_ascii=False) if job.params else ""),
        ("audio seconds", f"{job.audio_seconds:.2f}" if job.audio_seconds else ""),
        ("estimated cost", _cost_line(job)),
        ("provider id", job.provider_id),
        ("provider model", job.provider_model),
        ("render seconds", f"{job.render_seconds:.1f}" if job.render_seconds else ""),
        ("video", s3_uri(bucket, job.output_key) if job.output_key else ""),
        ("video bytes", f"{job.video_bytes:,}" if job.video_bytes else ""),
        ("report", s3_uri(bucket, job.report_key) if job.report_key else ""),
        ("error report", s3_uri(bucket, job.error_key) if job.error_key else ""),
        ("retry of", job.retry_of),
        ("attempt", str(job.attempt) if job.attempt else ""),
        ("created", format_time(job.created_at)),
        ("submitted", format_time(job.submitted_at) if job.submitted_at else ""),
        ("completed", format_time(job.completed_at) if job.completed_at else ""),
        ("delivered", format_time(job.delivered_at) if job.delivered_at else ""),
        ("updated", format_time(job.updated_at)),
        ("version", str(job.version)),
        ("warnings", "; ".join(job.warnings)),
    ]
    return [(name, value) for name, value in rows if value]


def _object_line(obj: Any, bucket: str) -> str:
    return f"{s3_uri(bucket, obj.key)} ({obj.size:,} bytes, etag {obj.etag})" if obj else ""


def _cost_line(job: Job) -> str:
    if not job.estimated_cost_usd:
        return ""
    charged = "counted as spent" if is_charged(job) else "not spent (never taken by the provider)"
    return f"{usd(job.estimated_cost_usd)} ({charged}; day {spend_day(job)})"


def history_rows(job: Job) -> list[tuple[str, str, str, str]]:
    """(time, seconds since created, status, note) for each recorded step, oldest first."""
    rows = []
    for entry in job.history:
        at = float(entry.get("at") or 0)
        rows.append((format_time(at), f"+{at - job.created_at:.1f}s", str(entry.get("status", "")),
                     str(entry.get("note", ""))))
    return rows


def segment_rows(parent: Job, segments: Iterable[Job]) -> list[tuple[str, str, str, str, str, str, str]]:
    """(segment, time range, cut, state, attempt, provider id, render seconds) per segment job of a
    talk, in talk order (a re-rendered segment shows each attempt)."""
    rows = []
    for job in sorted(segments, key=lambda j: (j.segment_index, j.attempt)):
        rows.append((f"{job.segment_index + 1}/{parent.segment_count}", span(job.segment_start, job.segment_end),
                     job.segment_cut, str(job.status), str(job.attempt), job.provider_id or "-",
                     f"{job.render_seconds:.1f}" if job.render_seconds else "-"))
    return rows


def job_detail(job: Job, bucket: str, segments: Iterable[Job] = ()) -> RenderableType:
    record = Table.grid(padding=(0, 2))
    record.add_column(style="bold", no_wrap=True)
    record.add_column(overflow="fold")
    for name, value in record_rows(job, bucket):
        record.add_row(name, state_label(job) if name == "status" else Text(value))
    history = Table(title="status history", title_justify="left")
    for column in ("at (UTC)", "elapsed", "status", "note"):
        history.add_column(column, overflow="fold", justify="right" if column == "elapsed" else "left")
    for at, elapsed, status, note in history_rows(job):
        history.add_row(at, elapsed, status, Text(note))
    rows = segment_rows(job, segments) if job.is_parent else []
    if not rows:
        return Group(record, Text(), history)
    table = Table(title="segments", title_justify="left")
    for column in ("segment", "time range", "cut", "state", "attempt", "provider id", "render s"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return Group(record, Text(), table, Text(), history)


# --- summaries ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StackLimits:
    """The spend guard's settings as the target reports them (None when it cannot tell)."""

    daily_budget_usd: float | None
    max_in_flight: int | None


def count_by_status(jobs: Iterable[Job]) -> dict[Status, int]:
    counts = Counter(j.status for j in jobs)
    return {status: counts.get(status, 0) for status in Status}


@dataclass(frozen=True)
class Balance:
    """The provider account's balance as the CLI could read it."""

    usd: float | None
    problem: str = ""  # why it is unavailable


def balance_line(balance: Balance) -> str:
    if balance.usd is None:
        return f"provider balance: unavailable ({balance.problem or 'no answer'})"
    return f"provider balance: {usd(balance.usd)} (WaveSpeed; jobs estimated above it wait)"


def status_summary(counts: dict[Status, int], queued: list[Job], guard: GuardState, limits: StackLimits,
                   balance: Balance | None = None) -> RenderableType:
    """``counts``: jobs per state; ``queued``: the QUEUED jobs (for why they wait)."""
    states = Table(title=f"{sum(counts.values())} job(s) by state", title_justify="left")
    states.add_column("state")
    states.add_column("jobs", justify="right")
    for status, count in counts.items():
        states.add_row(_styled_status(status), str(count))
    lines = [_in_flight_line(counts, guard, limits), _spend_line(guard, limits)]
    if balance is not None:
        lines.append(balance_line(balance))
    if queued:
        reasons = Counter(j.queue_reason or "waiting" for j in queued)
        lines += [f"queued: {n} waiting because {reason}" for reason, n in reasons.most_common()]
    return Group(states, Text(), *(Text(line) for line in lines))


def _in_flight_line(counts: dict[Status, int], guard: GuardState, limits: StackLimits) -> str:
    limit = f" of at most {limits.max_in_flight}" if limits.max_in_flight is not None else ""
    line = f"in flight: {guard.in_flight}{limit} (MaxInFlightJobs)"
    by_status = sum(counts[s] for s in IN_FLIGHT)
    if by_status != guard.in_flight:
        # The guard counter is what admission checks; a difference means a slot leaked or a job is mid-write.
        line += f"; note: {by_status} job record(s) are in {'/'.join(sorted(IN_FLIGHT))}"
    return line


def _spend_line(guard: GuardState, limits: StackLimits) -> str:
    spent = f"today's estimated spend ({guard.day} UTC): {usd(guard.spent_today_usd)}"
    if limits.daily_budget_usd is None:
        return spent + " (budget unknown)"
    budget = limits.daily_budget_usd
    share = f", {guard.spent_today_usd / budget:.0%}" if budget else ""
    return f"{spent} of {usd(budget)} (DailyBudgetUSD{share})"


@dataclass(frozen=True)
class CostRow:
    day: str
    folder: str
    jobs: int
    usd: float


def cost_rows(jobs: Iterable[Job], *, since: float | None = None) -> list[CostRow]:
    """Spend per (UTC day, folder) of charged jobs submitted since ``since``; newest day first."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    for job in jobs:
        if is_charged(job) and (since is None or (job.submitted_at or job.created_at) >= since):
            totals[(spend_day(job), job.folder)].append(job.estimated_cost_usd)
    rows = [CostRow(day, folder, len(costs), round(sum(costs), 4)) for (day, folder), costs in totals.items()]
    rows.sort(key=lambda r: r.folder)
    return sorted(rows, key=lambda r: r.day, reverse=True)


def cost_table(rows: list[CostRow], *, budget_usd: float | None) -> Table:
    total = sum(r.usd for r in rows)
    table = Table(title="estimated spend by UTC day and folder", title_justify="left", show_footer=True)
    table.add_column("day (UTC)", footer="total", no_wrap=True)
    table.add_column("folder", overflow="fold")
    table.add_column("jobs", justify="right", footer=str(sum(r.jobs for r in rows)))
    table.add_column("estimated", justify="right", footer=usd(total), no_wrap=True)
    day_totals: dict[str, float] = defaultdict(float)
    for row in rows:
        day_totals[row.day] += row.usd
    for row in rows:
        table.add_row(row.day, Text(row.folder or "(top level)"), str(row.jobs), usd(row.usd))
    if budget_usd is not None:
        over = [d for d, spent in day_totals.items() if spent > budget_usd + 1e-9]
        table.caption = (f"daily budget {usd(budget_usd)}"
                         + (f"; over it on {', '.join(sorted(over))}" if over else ""))
    return table


# --- the local stack's console ------------------------------------------------------------------

def activity_lines(seen: dict[str, Status], jobs: Iterable[Job], bucket: str) -> list[str]:
    """What a user acts on, for each job whose state changed since ``seen`` (updated in place):
    an upload picked up, a job moving, a video delivered (where), a failure (why)."""
    lines: list[str] = []
    for job in sorted(jobs, key=lambda j: j.created_at):
        if seen.get(job.job_id) is job.status:
            continue
        seen[job.job_id] = job.status
        line = f"{job.job_id[:SHORT_ID]}  {inputs_label(job)}: {job.status}"
        if job.status is Status.DELIVERED and job.output_key:
            line += f" → {s3_uri(bucket, job.output_key)}"
        elif job.failure is not None and job.is_terminal:
            line += f": {job.failure.reason}"
        lines.append(line)
    return lines


# --- cancel --------------------------------------------------------------------------------------

def cancel_lines(job: Job, *, was: Status, bucket: str) -> list[str]:
    """What `s2v cancel` says: what was cancelled, what happened at the provider, what it cost."""
    if was is Status.CANCELLED:
        lines = [f"job {job.job_id} was already cancelled by {job.cancelled_by or '?'} at "
                 f"{format_time(job.cancelled_at)}"]
    else:
        lines = [f"cancelled job {job.job_id} (was {was}) as {job.cancelled_by}"]
    task = job.provider_delete
    pid = job.provider_id
    if task == "not sent":
        lines.append("it never reached WaveSpeed: nothing was charged")
    elif task == "deleted":
        lines.append(f"its task {pid} was deleted at WaveSpeed; a render that had started may still be charged")
    elif task == "not found":
        lines.append(f"WaveSpeed no longer knows its task {pid}")
    elif task == "in flight":
        lines.append("its submission was on its way to WaveSpeed: if WaveSpeed takes it, s2v deletes the task "
                     "as soon as the answer comes")
    elif task.startswith("delete failed"):
        lines.append(f"WaveSpeed could not be told to stop task {pid} ({task}); run `s2v cancel "
                     f"{job.job_id[:SHORT_ID]}` again, or delete it in the WaveSpeed dashboard")
    elif task:
        lines.append(f"at WaveSpeed: {task}")
    cost = usd(job.final_cost_usd or 0.0)
    lines.append(f"counted cost: {cost}" + (" (it may have been charged)" if is_charged(job) else ""))
    if job.report_key:
        lines.append(f"report: {s3_uri(bucket, job.report_key)}")
    return lines
