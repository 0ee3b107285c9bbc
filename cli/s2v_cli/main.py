"""`s2v`: see and operate an s2v stack, deployed (--stack NAME) or the embedded local one (--local).

Exit codes: 0 done; 1 the job failed (drop/retry --wait), AWS refused a call, or a cancelled job's
task could not be deleted at the provider; 2 the target or the job cannot be found, the job has
ended, or the input is wrong; 3 --wait timed out with the job still running.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import time
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from botocore.exceptions import ClientError
from rich.text import Text

from s2v.model.errors import InputError
from s2v.model.jobs import Job, Status, row_job_id
from s2v.model.pairing import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS
from s2v_cli import scripted, views
from s2v_cli.queries import COST_ATTRIBUTES, JobQueries, find_batch, segments_of
from s2v_cli.safe import SafeConsole, json_text
from s2v_cli.target import (
    LocalOptions,
    LocalState,
    Target,
    TargetError,
    aws_errors,
    drop_folder,
    drop_manifest,
    drop_pair,
    is_live,
    local_target,
    read_state,
    resolve,
    running_local_stack,
    start_detached,
    state_path,
    stop_local,
    wait_for_stop_signal,
)


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """A flag takes no value: show none in --help (typer prints "<bool>" beside each)."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(help="See and operate an s2v stack: deployed (--stack NAME) or the embedded local one (--local).",
                  epilog="Exit codes: 0 done; 1 the job failed or AWS refused a call; 2 no such target or job, or "
                         "bad input; 3 --wait timed out.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
local_app = typer.Typer(help="The embedded local stack (moto + WaveSpeed emulator), no AWS account needed.",
                        no_args_is_help=True)
app.add_typer(local_app, name="local")

# No markup: keys, reasons and notes are user data and may hold "[...]"; and no control
# sequence from them reaches the terminal (SafeConsole).
# Lines are not broken by the console (the terminal wraps them): URIs and commands stay whole, to copy.
out = SafeConsole(highlight=False, markup=False, soft_wrap=True)
err = SafeConsole(stderr=True, highlight=False, markup=False, soft_wrap=True)

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3
POLL_SECONDS = 1.0
ERROR_REPORT_GRACE_SECONDS = 15.0  # a FAILED job's error report is written by the deliver function just after

StackOption = Annotated[str | None, typer.Option(
    "--stack", metavar="NAME", help="A deployed stack, found by name with your usual AWS credentials/region.")]
LocalOption = Annotated[bool, typer.Option(
    "--local", help="The embedded stack started by `s2v local up` (the default when it is running).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code)


def operator_command(fn: F) -> F:
    """Expected failures become one clear line on stderr and an exit code, never a traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with aws_errors("the stack"):
                return fn(*args, **kwargs)
        except (TargetError, views.UnknownJob) as exc:
            raise _fail(str(exc.args[0] if exc.args else exc)) from None
        except InputError as exc:
            raise _fail(exc.reason) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise _fail(f"AWS refused {exc.operation_name}: {error.get('Code')}: {error.get('Message')}",
                        EXIT_FAILED) from None

    return run  # type: ignore[return-value]


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return views.parse_since(text, time.time())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None


def _queries(target: Target) -> JobQueries:
    return JobQueries(target.client("dynamodb"), target.table)


def _find_job(target: Target, job: str) -> Job:
    """A job by its id or a unique prefix of it."""
    found = target.store.get(job.strip().lower()) if len(job.strip()) == 32 else None
    if found is None:
        job_id = views.match_job_id(job, (j.job_id for j in target.store.scan_jobs()))
        found = target.store.get(job_id)
    if found is None:
        raise views.UnknownJob(f"no job {job}")
    return found


# --- reading ------------------------------------------------------------------------------------

@app.command()
@operator_command
def status(stack: StackOption = None, local: LocalOption = False, as_json: JsonOption = False) -> None:
    """Jobs per state, jobs in flight, today's estimated spend against the budget, and the provider balance."""
    target = resolve(stack=stack, local=local)
    found = _queries(target)
    counts = found.counts()  # one COUNT query per state (status-index), no scan
    queued = list(found.jobs(status=Status.QUEUED, attributes=("job_id", "created_at", "status", "queue_reason")))
    guard = target.store.guard_state(time.time())
    if as_json:
        _print_json(scripted.status(target.description, target.bucket, target.table, counts, queued, guard,
                                    target.limits, _balance(target)))
        return
    out.print(Text.assemble((target.description, "bold"), f": bucket {target.bucket}, table {target.table}"))
    out.print(views.status_summary(counts, queued, guard, target.limits, _balance(target)))


def _print_json(value: Any) -> None:
    typer.echo(json_text(value))  # plain (no console wrapping), for jq


def _balance(target: Target) -> views.Balance:
    try:
        return views.Balance(float(target.provider.balance()))
    except Exception as exc:  # the balance is information: any failure is shown, never fatal
        problem = getattr(exc, "message", None) or (exc.args[0] if exc.args else type(exc).__name__)
        return views.Balance(None, str(problem))


@app.command("jobs")
@operator_command
def list_jobs(
    state: Annotated[Status | None, typer.Option("--state", case_sensitive=False, help="Only jobs in this state.")]
    = None,
    folder: Annotated[str, typer.Option("--folder", help="Only jobs in this folder (and below it).")] = "",
    since: Annotated[str | None, typer.Option("--since", metavar="T", help="Created since T: 30m, 2h, 1d or an "
                                              "ISO date/time (UTC).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Show at most this many (0: all).")] = 50,
    batch: Annotated[str | None, typer.Option("--batch", metavar="NAME", help="Only the rows of one manifest "
                                              "(its key or file name), with an 'X of Y done' line.")] = None,
    stack: StackOption = None, local: LocalOption = False, as_json: JsonOption = False,
) -> None:
    """A table of jobs, newest first: id, inputs, state, age, provider id, cost."""
    after = _since(since)
    target = resolve(stack=stack, local=local)
    found = _queries(target)  # through the indexes, newest first: no scan
    if batch is not None:
        _batch_jobs(target, batch, as_json=as_json)
        return
    shown: list[Job] = []
    cursor = ""
    if limit:
        while len(shown) < limit:
            page = found.page(status=state, since=after, folder=folder, cursor=cursor, size=limit - len(shown))
            shown, cursor = shown + page.jobs, page.cursor
            if not cursor:
                break
    else:
        shown = [j for j in found.jobs(status=state, since=after) if views.in_folder(j, folder)]
    if as_json:
        _print_json({"jobs": [scripted.job(j, target.bucket) for j in shown], "more": bool(cursor)})
        return
    out.print(views.jobs_table(shown, now=time.time()))
    if cursor:
        out.print("older jobs not shown; use --limit 0 to see all")


def _batch_jobs(target: Target, name: str, *, as_json: bool = False) -> views.BatchProgress:
    """One manifest's row jobs, read by their ids (a row's id is made of its batch's and its number)."""
    try:
        batch = find_batch(target.store.batches(), name)
    except LookupError as exc:
        raise TargetError(str(exc)) from None
    rows = int(batch.get("rows", 0))
    jobs = target.store.get_many([row_job_id(str(batch["batch_id"]), n) for n in range(1, rows + 1)])
    shown = sorted(jobs.values(), key=lambda j: j.batch_row)
    if as_json:
        progress = views.batch_progress(rows, shown)
        _print_json(scripted.batch(batch, target.bucket, shown, progress))
        return progress
    out.print(Text.assemble((str(batch["manifest_key"]), "bold"), f" (batch {batch['batch_id']}, "
                            f"{batch.get('state', '?')}; report s3://{target.bucket}/{batch.get('report_key', '')})"))
    if batch.get("error"):
        out.print(f"rejected: {batch['error'].get('reason', '')}")
    out.print(views.jobs_table(shown, now=time.time(), title=f"{len(shown)} row job(s), in row order"))
    progress = views.batch_progress(rows, shown)
    out.print(progress.line)
    return progress


@app.command()
@operator_command
def show(
    job: Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw record as JSON.")] = False,
    stack: StackOption = None, local: LocalOption = False,
) -> None:
    """The full record of one job and its status history."""
    target = resolve(stack=stack, local=local)
    found = _find_job(target, job)
    if as_json:
        _print_json(found.to_dict())
    else:
        segments = list(segments_of(target.store, found)) if found.is_parent else []
        out.print(views.job_detail(found, target.bucket, segments))


@app.command()
@operator_command
def cost(
    since: Annotated[str | None, typer.Option("--since", metavar="T", help="Spend since T: 30m, 2h, 1d or an ISO "
                                              "date/time (UTC).")] = None,
    stack: StackOption = None, local: LocalOption = False, as_json: JsonOption = False,
) -> None:
    """Estimated spend by UTC day and folder, from the job records.

    A job counts once the provider may have taken it (submitted, or a submit whose outcome is
    unknown); waiting jobs and jobs that failed before submission cost nothing. Spend is booked
    on the day whose budget reserved it. Job records expire (TTL, 30 days by default) after a job ends.
    """
    after = _since(since)
    target = resolve(stack=stack, local=local)
    rows = views.cost_rows(_queries(target).jobs(attributes=COST_ATTRIBUTES), since=after)
    if as_json:
        _print_json(scripted.cost(rows, budget_usd=target.limits.daily_budget_usd))
        return
    out.print(views.cost_table(rows, budget_usd=target.limits.daily_budget_usd))


@app.command()
@operator_command
def dashboard(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free one).")] = 0,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open it in the browser.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every request.")] = False,
    stack: StackOption = None, local: LocalOption = False,
) -> None:
    """A web dashboard on 127.0.0.1: jobs by state, spend, failures, each job's timeline and video.

    With no stack running, it starts the local stack with the data the last one kept (`make demo`,
    `s2v local up`) and stops it on exit."""
    from s2v_cli.dashboard import serve

    say = functools.partial(out.print, soft_wrap=True)
    if stack or _local_stack_running():
        target = resolve(stack=stack, local=local)
        serve(target, port=port, open_browser=open_browser, verbose=verbose, say=say, wait=wait_for_stop_signal)
        return
    data_dir = _saved_local_data()
    _quiet_local_logs(verbose)
    err.print(f"no local stack is running: starting one with the jobs kept in {data_dir} ...")
    with running_local_stack(LocalOptions(data_dir=data_dir), state_path()):
        serve(local_target(), port=port, open_browser=open_browser, verbose=verbose, say=say,
              wait=wait_for_stop_signal)
        err.print("stopping the local stack (its jobs are kept) ...")


def _local_stack_running() -> bool:
    state = read_state(state_path())
    return state is not None and is_live(state)


def _saved_local_data() -> Path:
    """The local data folder when it holds a saved stack; else the usual "no stack" error."""
    from s2v_local.snapshot import SnapshotError, default_data_dir, manifest

    data_dir = default_data_dir()
    try:
        saved = manifest(data_dir)
    except SnapshotError as exc:
        raise TargetError(str(exc)) from None
    if saved is None:
        resolve(stack=None, local=False)  # raises: no stack to talk to, and how to start one
    return data_dir


# --- acting -------------------------------------------------------------------------------------

class Resolution(StrEnum):
    P480 = "480p"
    P720 = "720p"


def _extension_ok(path: Path, allowed: frozenset[str], what: str, hint: str) -> None:
    if path.suffix.lstrip(".").lower() not in allowed:
        raise typer.BadParameter(f"{path.name}: an {what} must end in {', '.join(sorted(allowed))} "
                                 "(the pipeline ignores other names)", param_hint=hint)


@app.command()
@operator_command
def drop(
    image: Annotated[Path, typer.Argument(exists=True, readable=True, metavar="IMAGE|FOLDER|MANIFEST",
                                          help="The portrait; or a folder of pairs (alice.png + alice.wav, ...); "
                                          "or a *.batch.csv/json manifest with the files it names next to it.")],
    audio: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False, readable=True,
                                                 help="The speech clip (with an IMAGE).")] = None,
    folder: Annotated[str, typer.Option("--folder", help="Folder under inputs/ (default: the top level).")] = "",
    name: Annotated[str | None, typer.Option("--name", metavar="STEM", help="Name of the pair and of the video "
                                             "(default: the image's file name).")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt for the render.")] = None,
    resolution: Annotated[Resolution | None, typer.Option("--resolution")] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=-1, max=2_147_483_647, help="-1: random.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --wait waits.")] = 600,
    stack: StackOption = None, local: LocalOption = False,
) -> None:
    """Upload an image and an audio clip as a pair, as a user would; with --wait, follow the job.

    A FOLDER (its pairs) or a MANIFEST (its rows' files, then itself) is uploaded whole and followed
    with a progress bar until every job ends; the exit code is 1 if any failed."""
    if audio is None:
        if name is not None or prompt is not None or resolution is not None or seed is not None:
            raise typer.BadParameter("--name, --prompt, --resolution and --seed are for one pair; a folder takes "
                                     "a _defaults.json, a manifest its own columns", param_hint="IMAGE|FOLDER|MANIFEST")
        raise typer.Exit(_drop_many(image, folder=folder.strip("/"), timeout=timeout, stack=stack, local=local))
    if image.is_dir():
        raise typer.BadParameter(f"{image} is a folder: drop a folder alone (s2v drop FOLDER)", param_hint="IMAGE")
    _extension_ok(image, IMAGE_EXTENSIONS, "image", "IMAGE")
    _extension_ok(audio, AUDIO_EXTENSIONS, "audio clip", "AUDIO")
    stem = name if name is not None else image.stem
    if not stem or "/" in stem or stem.startswith("."):
        raise typer.BadParameter(f"{stem!r} cannot name a pair: no '/', not empty, not starting with '.'",
                                 param_hint="--name")
    params = {k: v for k, v in (("prompt", prompt), ("resolution", resolution and str(resolution)),
                                ("seed", seed)) if v is not None}
    target = resolve(stack=stack, local=local)
    dropped = drop_pair(target, image, audio, folder=folder, stem=stem, params=params)
    for key in dropped.keys:
        out.print(f"uploaded s3://{target.bucket}/{key}")
    if dropped.earlier_sidecar:
        out.print(f"note: s3://{target.bucket}/{dropped.earlier_sidecar} was already there and sets this pair's "
                  "params; delete it to render with the defaults")
    out.print(f"job {dropped.job_id}")
    if not wait:
        out.print(f"follow it with: s2v show {dropped.job_id[:views.SHORT_ID]}")
        return
    raise typer.Exit(_follow(target, dropped.job_id, since=dropped.started_at, timeout=timeout,
                             folder=folder.strip("/"), stem=stem))


def _drop_many(source: Path, *, folder: str, timeout: float, stack: str | None, local: bool) -> int:
    from s2v.model.pairing import MANIFEST_SUFFIXES

    if source.is_file() and not source.name.lower().endswith(MANIFEST_SUFFIXES):
        raise typer.BadParameter(f"{source.name}: give an IMAGE and an AUDIO clip, a folder of pairs, or a manifest "
                                 f"({' or '.join(MANIFEST_SUFFIXES)})", param_hint="IMAGE|FOLDER|MANIFEST")
    target = resolve(stack=stack, local=local)
    if source.is_dir():
        dropped = drop_folder(target, source, folder=folder or source.name)
    else:
        dropped = drop_manifest(target, source, folder=folder)
    out.print(f"uploaded {len(dropped.keys)} file(s) to s3://{target.bucket}/"
              f"{posixpath.dirname(dropped.keys[-1])}/")
    if dropped.skipped:
        out.print(f"not uploaded (no partner of the same name): {', '.join(dropped.skipped)}")
    if dropped.batch_id:
        out.print(f"batch {dropped.batch_id} ({len(dropped.job_ids)} rows): s2v jobs --batch {dropped.manifest_key}")
    jobs = _follow_many(target, list(dropped.job_ids), timeout=timeout, batch_id=dropped.batch_id)
    if dropped.batch_id and _rejection(target, dropped.batch_id):
        err.print(f"the stack rejected {dropped.manifest_key}: {_rejection(target, dropped.batch_id)}")
        return 1
    return _batch_outcome(target, list(dropped.job_ids), jobs)


def _rejection(target: Target, batch_id: str) -> str:
    """Why the stack rejected a manifest as a whole ("" while it is accepted or not yet read)."""
    batch = target.store.get_batch(batch_id) or {}
    return str((batch.get("error") or {}).get("reason", "")) if batch.get("state") == "rejected" else ""


def _follow_many(target: Target, job_ids: list[str], *, timeout: float, batch_id: str = "") -> dict[str, Job]:
    """Read the jobs (by id, 100 a call) until every one has ended, their manifest was rejected (its
    rows then never get jobs) or time runs out, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    jobs: dict[str, Job] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=False) as bar:
        task = bar.add_task("jobs done", total=len(job_ids))
        while True:
            jobs = target.store.get_many(job_ids)
            progress = views.batch_progress(len(job_ids), jobs.values())
            bar.update(task, completed=progress.done, description=f"{progress.delivered} delivered, "
                       f"{progress.failed} failed, {progress.pending} pending")
            if progress.pending == 0 or time.monotonic() >= deadline:
                return jobs
            if batch_id and not jobs and _rejection(target, batch_id):
                return jobs
            time.sleep(POLL_SECONDS)


def _batch_outcome(target: Target, job_ids: list[str], jobs: dict[str, Job]) -> int:
    """Where each video landed and why each failure failed; the exit code says whether all went well."""
    for number, job_id in enumerate(job_ids, start=1):
        job = jobs.get(job_id)
        label = views.inputs_label(job) if job else f"row {number}"
        if job is None or not job.is_terminal:
            out.print(f"{job_id[:views.SHORT_ID]}  {label}: {job.status if job else 'not started yet'}")
        elif job.status is Status.DELIVERED:
            out.print(f"{job_id[:views.SHORT_ID]}  {label}: s3://{target.bucket}/{job.output_key}")
        else:
            reason = job.failure.reason if job.failure else str(job.status)
            err.print(Text.assemble(f"{job_id[:views.SHORT_ID]}  {label}: ", ("failed: ", "bold red"), reason),
                      soft_wrap=True)
    progress = views.batch_progress(len(job_ids), jobs.values())
    out.print(progress.line)
    if progress.pending:
        err.print("time ran out with jobs still running; follow them with `s2v jobs`")
        return EXIT_TIMEOUT
    return EXIT_FAILED if progress.failed or progress.cancelled else 0


@app.command()
@operator_command
def retry(
    job: Annotated[str, typer.Argument(help="A FAILED or CANCELLED job's id, or a unique prefix of one.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the new job until it ends.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --wait waits.")] = 600,
    stack: StackOption = None, local: LocalOption = False,
) -> None:
    """Render a FAILED or CANCELLED job again as a new job linked to it, through the pipeline's own path."""
    from s2v.flows.ingest import retry_failed

    target = resolve(stack=stack, local=local)
    old = _find_job(target, job)
    asked = time.time()
    new = retry_failed(old.job_id, target.deps())
    if new.created_at < asked - 1:
        out.print(f"job {old.job_id} was already retried as {new.job_id} ({new.status})")
    else:
        out.print(f"retrying {old.job_id} (attempt {new.attempt}); the poller submits it on its next run")
    out.print(f"new job {new.job_id}")
    if wait:
        raise typer.Exit(_follow(target, new.job_id, since=asked, timeout=timeout, folder=new.folder,
                                 stem=new.stem, waiting="waiting for the poller to pick the job up"))


@app.command()
@operator_command
def cancel(
    job: Annotated[str, typer.Argument(help="A job's id, or a unique prefix of one.")],
    by: Annotated[str | None, typer.Option("--by", metavar="NAME", help="Who cancels, for the record (default: "
                                           "your AWS identity on a deployed stack, your user name locally).")]
    = None,
    stack: StackOption = None, local: LocalOption = False,
) -> None:
    """Stop a job that has not been delivered: a job not yet at WaveSpeed ends at once; one at
    WaveSpeed is marked CANCELLED (so it is never delivered) and its task deleted there."""
    from s2v.flows.cancel import cancel as cancel_job

    target = resolve(stack=stack, local=local)
    found = _find_job(target, job)
    outcome = cancel_job(found.job_id, target.deps(), by=by or target.who())
    for line in views.cancel_lines(outcome.job, was=outcome.was, bucket=target.bucket):
        (err if "could not be told" in line else out).print(line, soft_wrap=True)
    if outcome.delete_failed:
        raise typer.Exit(EXIT_FAILED)


def _follow(target: Target, job_id: str, *, since: float, timeout: float, folder: str, stem: str,
            waiting: str = "waiting for the pair to be picked up (the queue lets a pair settle first)") -> int:
    """Follow a job until it ends; the exit code says how it ended."""
    job = _watch(target, job_id, since=since, timeout=timeout, folder=folder, stem=stem, waiting=waiting)
    if job is None or not job.is_terminal:
        where = f"is still {job.status}" if job else "has not been picked up"
        err.print(f"job {job_id} {where} after {timeout:.0f} s; follow it with `s2v show {job_id[:views.SHORT_ID]}`")
        return EXIT_TIMEOUT
    if job.status is Status.FAILED:
        return _report_failure(target, job)
    if job.status is Status.CANCELLED:
        err.print(f"cancelled by {job.cancelled_by or '?'} at {views.format_time(job.cancelled_at)}")
        return EXIT_FAILED
    out.print(f"video: s3://{target.bucket}/{job.output_key}")
    out.print(f"report: s3://{target.bucket}/{job.report_key}")
    return 0


def _watch(target: Target, job_id: str, *, since: float, timeout: float, folder: str, stem: str,
           waiting: str) -> Job | None:
    """Print each status the job passes through (from its history, so none is missed between
    reads) until it ends or time runs out; returns the job as last read."""
    deadline = time.monotonic() + timeout
    printed = 0
    job: Job | None = None
    with out.status(waiting) as spinner:
        while time.monotonic() < deadline:
            job = target.store.get(job_id)
            if job is None:
                job_id = _failed_elsewhere(target, folder, stem, since) or job_id
            else:
                if printed == 0 and job.created_at < since - 1:
                    out.print(f"these exact files were dropped before: job {job_id} is {job.status}")
                for entry in job.history[printed:]:
                    note = f"  {entry.get('note')}" if entry.get("note") else ""
                    out.print(f"{float(entry.get('at', 0)) - since:7.1f}s  {entry.get('status')}{note}")
                printed = len(job.history)
                spinner.update(f"job {job_id[:views.SHORT_ID]} is {job.status}")
                if job.is_terminal:
                    return job
            time.sleep(POLL_SECONDS)
    return job


def _failed_elsewhere(target: Target, folder: str, stem: str, since: float) -> str:
    """The id of a job that failed this pair under another identity (e.g. a second image with the same
    name made the pair ambiguous), found by its fresh error report; "" when there is none."""
    key = "outputs/" + "/".join(p for p in (folder, stem) if p) + ".error.json"
    try:
        head = target.s3.head_object(Bucket=target.bucket, Key=key)
    except ClientError:
        return ""
    fresh = head["LastModified"].timestamp() >= since - 1
    return str(head.get("Metadata", {}).get("s2v-job-id", "")) if fresh else ""


def _report_failure(target: Target, job: Job) -> int:
    grace = time.monotonic() + ERROR_REPORT_GRACE_SECONDS
    while not job.error_key and time.monotonic() < grace:
        time.sleep(POLL_SECONDS / 2)
        job = target.store.get(job.job_id) or job
    reason = job.failure.reason if job.failure else "no reason recorded"
    err.print(Text.assemble(("failed: ", "bold red"), reason), soft_wrap=True)
    report = job.error_key or "outputs/" + "/".join(p for p in (job.folder, job.stem) if p) + ".error.json"
    err.print(f"error report: s3://{target.bucket}/{report}")
    if views.retry_possible(job):
        out.print(f"to render it again: s2v retry {job.job_id[:views.SHORT_ID]}")
    else:
        out.print("fix the input and upload it again: a fixed upload starts a new job by itself")
    return EXIT_FAILED


# --- the local stack ----------------------------------------------------------------------------

@local_app.command("up")
@operator_command
def local_up(
    render_seconds: Annotated[float, typer.Option("--render-seconds", min=0, metavar="N",
                                                  help="How long the emulator takes per render.")] = 2.0,
    webhooks: Annotated[bool, typer.Option("--webhooks/--no-webhooks", help="Let the emulator call the webhook "
                                           "(off: status by polling only, as with the real API).")] = True,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.2, help="Run the poller this often "
                                                "(AWS: every minute).")] = 2.0,
    queue_delay: Annotated[int, typer.Option("--queue-delay", min=0, max=900,
                                             help="Seconds a new upload settles before ingest.")] = 1,
    daily_budget: Annotated[float | None, typer.Option("--daily-budget", min=0, metavar="USD",
                                                       help="DailyBudgetUSD (default: the template's).")] = None,
    max_in_flight: Annotated[int | None, typer.Option("--max-in-flight", min=1,
                                                      help="MaxInFlightJobs (default: the template's).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show every function invocation and its logs.")]
    = False,
    detach: Annotated[bool, typer.Option("--detach", help="Run it in the background (its log in this "
                                         "checkout's .s2v/ folder); `s2v local down` stops it.")] = False,
) -> None:
    """Run the embedded local stack until Ctrl-C (or in the background with --detach), and print where it listens.

    Each checkout has its own stack data and state (its .s2v/ folder), so clones never mix jobs."""
    if detach:
        args = ["--render-seconds", str(render_seconds), "--webhooks" if webhooks else "--no-webhooks",
                "--poll-seconds", str(poll_seconds), "--queue-delay", str(queue_delay),
                *(["--daily-budget", str(daily_budget)] if daily_budget is not None else []),
                *(["--max-in-flight", str(max_in_flight)] if max_in_flight is not None else []),
                *(["--verbose"] if verbose else [])]
        state, path, log = start_detached(args)
        _print_endpoints(state, path, detached=log)
        return
    _quiet_local_logs(verbose)
    from s2v_local.snapshot import default_data_dir

    options = LocalOptions(render_seconds=render_seconds, webhooks=webhooks, poll_interval_seconds=poll_seconds,
                           queue_delay_seconds=queue_delay, daily_budget_usd=daily_budget,
                           max_in_flight_jobs=max_in_flight, log_level="INFO" if verbose else "WARNING",
                           data_dir=default_data_dir())
    path = state_path()
    err.print(f"starting the local stack of {_checkout()} ...")
    try:
        with running_local_stack(options, path) as state:
            _print_endpoints(state, path)
            wait_for_stop_signal(_activity_printer(local_target(path)))
            err.print("stopping ...")
    except TargetError:
        raise
    except Exception as exc:  # e.g. a handler file missing from the template: say so, without a traceback
        raise _fail(f"the local stack failed: {type(exc).__name__}: {exc}", EXIT_FAILED) from None
    out.print("local stack stopped")


ACTIVITY_JOBS = 50  # the newest jobs the local stack's console follows


def _activity_printer(target: Target) -> Callable[[], None]:
    """Print each job's moves (picked up, rendering, delivered where, failed why) on the stack's console;
    jobs the stack restored are known already, so only what moves from now on is said."""
    found = _queries(target)
    seen: dict[str, Status] = {}

    def newest() -> list[Job]:
        return found.page(size=ACTIVITY_JOBS).jobs

    views.activity_lines(seen, newest(), target.bucket)

    def tick() -> None:
        try:
            jobs = newest()
        except Exception as exc:  # the console is information: a failed read is said once a tick, never fatal
            err.print(f"could not read the jobs table: {type(exc).__name__}", soft_wrap=True)
            return
        for line in views.activity_lines(seen, jobs, target.bucket):
            out.print(f"{time.strftime('%H:%M:%S')}  {line}", soft_wrap=True)

    return tick


@local_app.command("down")
@operator_command
def local_down(
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for it to save and stop.")]
    = 120,
) -> None:
    """Stop this checkout's local stack (started with `s2v local up`, in the background or not); its jobs are kept."""
    path = state_path()
    stopped = stop_local(path, timeout=timeout)
    if stopped is None:
        out.print(f"no local stack of {_checkout()} is running (no live state file at {path})")
        return
    out.print(f"local stack stopped (process {stopped.pid}); {_data_note()}")


def _checkout() -> str:
    from s2v_local import home

    return str(home.CHECKOUT if not os.environ.get(home.HOME_ENV) else home.home())


def _quiet_local_logs(verbose: bool) -> None:
    from rich.logging import RichHandler

    # Powertools metrics would print an EMF document per invocation; locally nobody reads them.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False)])
    logging.getLogger("s2v_local").setLevel(logging.INFO if verbose else logging.WARNING)


def _data_note() -> str:
    from s2v_local.snapshot import default_data_dir

    return f"{default_data_dir()} (restored at start, saved at stop; delete it to start empty)"


def _print_endpoints(state: LocalState, path: Path, detached: Path | None = None) -> None:
    line = functools.partial(out.print, soft_wrap=True)  # URLs and commands stay whole, to copy
    budget = views.usd(state.daily_budget_usd) if state.daily_budget_usd is not None else "?"
    how_to_stop = "`s2v local down` to stop" if detached else "Ctrl-C to stop"
    line(Text.assemble(("s2v local stack is up", "bold green"), f" (process {state.pid}; {how_to_stop})"))
    line(f"  AWS endpoint:       {state.endpoint_url}  (S3, SQS, DynamoDB, EventBridge, Secrets Manager)")
    line(f"  bucket:             {state.bucket}")
    line(f"  jobs table:         {state.table}")
    line(f"  webhook base URL:   {state.webhook_base_url or '(off: status by polling)'}")
    line(f"  WaveSpeed emulator: {state.provider_base_url}")
    line(f"  spend guard:        MaxInFlightJobs {state.max_in_flight_jobs}, DailyBudgetUSD {budget}")
    line(f"  state file:         {path}")
    line(f"  jobs kept in:       {_data_note()}")
    if detached:
        line(f"  its log:            {detached}")
    line("Drop a pair with the AWS CLI (any credentials work):")
    line("  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1")
    for name in ("alice.png", "alice.wav"):
        line(f"  aws --endpoint-url {state.endpoint_url} s3 cp {name} s3://{state.bucket}/inputs/talks/{name}")
    line("or: s2v drop alice.png alice.wav --folder talks --wait   (then s2v jobs, s2v status)")
    line(f"Jobs as they move: in {detached} (`tail -f` it), or `s2v jobs`" if detached else
         "Jobs appear below as they move:")
