"""`make live-check`: one real render through the local stack, compared with the emulator.

Opt-in and never part of `make test`: with WAVESPEED_API_KEY set it renders one 3 s clip at 480p
(billed about $0.09) against the real API, the local stack doing what a deployment does (media
upload, submit, poll, result, delivery from the provider's CDN), then lists the account's
predictions to find the task and reads the balance before and after. Every provider answer is
recorded (paths and JSON, never the key) and its shape compared with the emulator's answer to the
same call, made just before against a local emulator. It fails loudly (exit 1) where they differ:
field names, value types, status names, the output host and path. Without a key it prints what it
needs and exits 2, touching nothing.

    WAVESPEED_API_KEY=... make live-check
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

NEEDS = """\
live-check renders one real 3 s clip at 480p (billed about $0.09 to your WaveSpeed account) through
the local stack and compares every provider answer with the emulator's. It needs:

  WAVESPEED_API_KEY    your WaveSpeed API key (required; never printed)
  WAVESPEED_BASE_URL   optional, default https://api.wavespeed.ai
  S2V_LIVE_CHECK_DIR   optional, where the delivered video is saved (default live-check-output)

Nothing was started, sent or written.
"""
DEFAULT_BASE_URL = "https://api.wavespeed.ai"
CLIP_SECONDS = 3.0
RESOLUTION = "480p"
FOLDER, STEM = "live-check", "speaker"
TIMEOUT_SECONDS = 900
LIST_PAGES = 3  # pages of 100 searched for the task (the list is newest first)
CALLS = ("upload", "submit", "result", "list", "balance")
KNOWN_STATUSES = ("created", "processing", "completed", "failed", "cancelled", "timeout", "deleted")


# --------------------------------------------------------------------------- recording answers

@dataclass(frozen=True)
class Exchange:
    """One provider call as seen on the wire: which call, where, the HTTP status and the JSON."""

    call: str
    method: str
    path: str
    status: int
    payload: Any


def classify(method: str, path: str) -> str:
    """Which documented call a request is (by method and path), or "other"."""
    from s2v.adapters.providers.wavespeed import SUBMIT_PATH, UPLOAD_PATH
    from s2v.model import provider_facts

    method = method.upper()
    if method == "POST" and path in (UPLOAD_PATH, "/api/v3/media/uploads"):
        return "upload"
    if method == "POST" and path == SUBMIT_PATH:
        return "submit"
    if method == "GET" and re.fullmatch(r"/api/v3/predictions/[^/]+(/result)?", path):
        return "result"
    if method == "POST" and path == provider_facts.LIST_PATH:
        return "list"
    if method == "GET" and path in (provider_facts.BALANCE_PATH, "/api/v3/balance"):
        return "balance"
    if method == "DELETE" and path.startswith(provider_facts.LIST_PATH + "/"):
        return "delete"
    return "other"


class Recorder:
    """Records every requests call to ``base_url`` made in this process (the local stack's
    functions run in-process, so their provider calls are seen too). Headers are never kept."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    @contextmanager
    def recording(self) -> Iterator[Recorder]:
        import requests

        original = requests.Session.request
        recorder = self

        def request(session: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            response = original(session, method, url, *args, **kwargs)
            if str(url).startswith(recorder.base_url + "/"):
                recorder.add(method, str(url), response)
            return response

        requests.Session.request = request  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            requests.Session.request = original  # type: ignore[method-assign]

    def add(self, method: str, url: str, response: Any) -> None:
        path = urlsplit(url).path
        try:
            payload = response.json()
        except ValueError:
            payload = None
        with self._lock:
            self.exchanges.append(Exchange(classify(method, path), method.upper(), path, response.status_code,
                                           payload))


# --------------------------------------------------------------------------- comparing shapes

def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


@dataclass
class Shape:
    """Field names and value types seen in the answers to one call."""

    envelope: dict[str, set[str]] = field(default_factory=dict)
    data: dict[str, set[str]] = field(default_factory=dict)
    items: dict[str, set[str]] = field(default_factory=dict)  # list items of our model

    def add(self, exchange: Exchange, model: str) -> None:
        payload = exchange.payload
        if not isinstance(payload, Mapping):
            return
        _merge(self.envelope, payload)
        data = payload.get("data")
        if isinstance(data, Mapping):
            _merge(self.data, data)
            items = data.get("items") if exchange.call == "list" else None
            for item in items if isinstance(items, list) else ():
                if isinstance(item, Mapping) and item.get("model") == model:
                    _merge(self.items, item)


def _merge(into: dict[str, set[str]], fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        into.setdefault(str(name), set()).add(type_name(value))


def shapes(exchanges: Iterable[Exchange], model: str) -> dict[str, Shape]:
    found: dict[str, Shape] = {}
    for exchange in exchanges:
        if 200 <= exchange.status < 300 and exchange.call in CALLS:
            found.setdefault(exchange.call, Shape()).add(exchange, model)
    return found


def _field_differences(call: str, part: str, real: dict[str, set[str]], emulated: dict[str, set[str]]) -> list[str]:
    where = f"{call} {part}"
    problems = [f"{where}: the real answer has no {name!r} (the emulator sends it)"
                for name in sorted(set(emulated) - set(real))]
    problems += [f"{where}: the real answer has {name!r} ({'/'.join(sorted(real[name]))}), the emulator does not"
                 for name in sorted(set(real) - set(emulated))]
    for name in sorted(set(real) & set(emulated)):
        real_types, emulated_types = real[name] - {"null"}, emulated[name] - {"null"}
        if real_types and emulated_types and not real_types & emulated_types:
            problems.append(f"{where}: {name!r} is {'/'.join(sorted(real_types))} in the real answer, "
                            f"{'/'.join(sorted(emulated_types))} in the emulator's")
    return problems


def compare(real: Sequence[Exchange], emulated: Sequence[Exchange], *, model: str) -> list[str]:
    """Where the real answers differ from the emulator's: field names and types, per call."""
    real_shapes, emulated_shapes = shapes(real, model), shapes(emulated, model)
    problems: list[str] = []
    for call in CALLS:
        if call not in real_shapes:
            problems.append(f"{call}: no successful real answer was seen")
            continue
        if call not in emulated_shapes:
            problems.append(f"{call}: the emulator gave no successful answer to compare with")
            continue
        mine, theirs = real_shapes[call], emulated_shapes[call]
        problems += _field_differences(call, "envelope", mine.envelope, theirs.envelope)
        problems += _field_differences(call, "data", mine.data, theirs.data)
        if call == "list":
            problems += _field_differences(call, "item", mine.items, theirs.items)
    for exchange in real:
        code = exchange.payload.get("code") if isinstance(exchange.payload, Mapping) else None
        if exchange.call in CALLS and 200 <= exchange.status < 300 and code != 200:
            problems.append(f"{exchange.call}: HTTP {exchange.status} with envelope code {code!r} (expected 200)")
    return problems


def statuses_seen(exchanges: Iterable[Exchange], task_id: str) -> list[str]:
    """The task's statuses in the order the answers gave them (repeats removed)."""
    seen: list[str] = []
    for exchange in exchanges:
        for task in _tasks(exchange):
            status = task.get("status")
            if task.get("id") == task_id and isinstance(status, str) and (not seen or seen[-1] != status):
                seen.append(status)
    return seen


def _tasks(exchange: Exchange) -> list[Mapping[str, Any]]:
    data = exchange.payload.get("data") if isinstance(exchange.payload, Mapping) else None
    if not isinstance(data, Mapping):
        return []
    if exchange.call == "list":
        return [item for item in data.get("items") or () if isinstance(item, Mapping)]
    return [data] if exchange.call in ("submit", "result") else []


def status_problems(statuses: Sequence[str]) -> list[str]:
    problems = [f"status {status!r} is not one the emulator or the SDK knows" for status in statuses
                if status not in KNOWN_STATUSES]
    if "completed" not in statuses:
        problems.append(f"the task never reported 'completed' (saw {', '.join(statuses) or 'nothing'})")
    return problems


def output_problems(urls: Sequence[str], task_id: str, allowed_hosts: Sequence[str]) -> list[str]:
    """The outputs must come from an allowed host, at the CDN's path, like the emulator's."""
    from s2v.adapters.delivery import host_allowed
    from s2v.model import provider_facts

    if not urls:
        return ["the completed task has no output URL"]
    problems = []
    expected_path = provider_facts.OUTPUT_PATH.format(id=task_id)
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host_allowed(host, allowed_hosts):
            problems.append(f"output host {host} is not on the default allow-list ({', '.join(allowed_hosts)})")
        if parts.scheme != "https" and allowed_hosts == provider_facts.OUTPUT_HOSTS:
            problems.append(f"output URL scheme is {parts.scheme}, not https")
        if parts.path != expected_path:
            problems.append(f"output path is {parts.path}, the emulator serves {expected_path}")
    return problems


# --------------------------------------------------------------------------- the two runs

@dataclass
class Run:
    """What one run saw."""

    exchanges: list[Exchange]
    task_id: str = ""
    outputs: tuple[str, ...] = ()
    listed_on_page: int | None = None
    listed_input: Mapping[str, Any] = field(default_factory=dict)
    balance_before: float | None = None
    balance_after: float | None = None
    job: Mapping[str, Any] = field(default_factory=dict)
    video: Path | None = None
    notes: list[str] = field(default_factory=list)


def find_in_list(client: Any, task_id: str, *, since: float) -> tuple[int | None, Any]:
    """(page, prediction) of ``task_id`` in the list of our model's predictions since ``since``."""
    from datetime import UTC, datetime

    from s2v.adapters.providers.wavespeed import MODEL

    after = datetime.fromtimestamp(since - 120, UTC)
    for page in range(1, LIST_PAGES + 1):
        listed = client.list_predictions(page=page, page_size=100, model=MODEL, created_after=after)
        for prediction in listed.items:
            if prediction.id == task_id:
                return page, prediction
        if len(listed.items) < 100:
            break
    return None, None


def emulator_reference(inputs: tuple[bytes, bytes]) -> list[Exchange]:
    """The emulator's answers to the calls the live run makes: upload, submit, result, list, balance."""
    from s2v.adapters.providers.wavespeed import SubmitRequest, WaveSpeedClient
    from s2v_local.emulator import Emulator

    with Emulator(render_seconds=0.2) as emulator:
        recorder = Recorder(emulator.base_url)
        with recorder.recording():
            client = WaveSpeedClient(emulator.base_url, emulator.api_key, timeout=30)
            client.balance()
            image_url = client.upload_media(inputs[0], f"{STEM}.png", "image/png")
            audio_url = client.upload_media(inputs[1], f"{STEM}.wav", "audio/wav")
            task = client.submit(SubmitRequest(image_url, audio_url, resolution=RESOLUTION))
            deadline = time.monotonic() + 60
            while not client.result(task.id).is_terminal and time.monotonic() < deadline:
                time.sleep(0.1)
            find_in_list(client, task.id, since=time.time())
            client.balance()
        return recorder.exchanges


def live_run(base_url: str, api_key: str, inputs: tuple[bytes, bytes], out_dir: Path, *,
             env_overrides: Mapping[str, str] | None = None, say: Callable[[str], None] = print) -> Run:
    """The real render through the local stack, recorded. ``env_overrides`` is for tests only."""
    from s2v.adapters.providers.wavespeed import WaveSpeedClient
    from s2v_local.stack import LocalStack

    recorder = Recorder(base_url)
    run = Run(recorder.exchanges)
    client = WaveSpeedClient(base_url, api_key, timeout=60)
    started = time.time()
    with ExitStack() as stack_ctx:
        stack_ctx.enter_context(recorder.recording())
        run.balance_before = client.balance()
        say(f"balance before: ${run.balance_before:.4f}")
        stack = stack_ctx.enter_context(LocalStack(
            provider_base_url=base_url, api_key=api_key, webhooks=False, poll_interval_seconds=5,
            queue_delay_seconds=1, parameters={"LogLevel": os.environ.get("S2V_LIVE_CHECK_LOG_LEVEL", "WARNING")},
            env_overrides={"S2V_MEDIA_MODE": "upload", "S2V_LOCAL_MODE": "false",
                           "S2V_OUTPUT_ALLOWED_HOSTS": "",  # unset: the deployment default applies
                           "S2V_DEFAULT_RESOLUTION": RESOLUTION, **(env_overrides or {})},
        ))
        s3 = stack.client("s3")
        s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{STEM}.png", Body=inputs[0], ContentType="image/png")
        s3.put_object(Bucket=stack.bucket, Key=f"inputs/{FOLDER}/{STEM}.wav", Body=inputs[1], ContentType="audio/wav")
        say(f"uploaded inputs/{FOLDER}/{STEM}.png and .wav; waiting for the job (up to {TIMEOUT_SECONDS} s)")
        run.job = _wait_for_job(stack, say)
        run.task_id = str(run.job.get("provider_id") or "")
        if run.job.get("status") == "DELIVERED":
            out_dir.mkdir(parents=True, exist_ok=True)
            run.video = out_dir / f"{STEM}.mp4"
            s3.download_file(stack.bucket, str(run.job["output_key"]), str(run.video))
        if run.task_id:
            run.outputs = client.result(run.task_id).outputs
            page, listed = find_in_list(client, run.task_id, since=started)
            run.listed_on_page = page
            run.listed_input = listed.input if listed is not None else {}
        run.balance_after = client.balance()
    return run


def _wait_for_job(stack: Any, say: Callable[[str], None]) -> Mapping[str, Any]:
    from s2v.adapters.store import deserialize_item

    ddb = stack.client("dynamodb")
    deadline, last, started = time.monotonic() + TIMEOUT_SECONDS, "", time.monotonic()
    while time.monotonic() < deadline:
        jobs = [deserialize_item(i) for i in ddb.scan(TableName=stack.table_name).get("Items", [])]
        job = next((j for j in jobs if j.get("folder") == FOLDER and j.get("stem") == STEM), None)
        status = str(job.get("status")) if job else "waiting for the pair"
        if status != last:
            say(f"  [{time.monotonic() - started:6.1f}s] {status}")
            last = status
        if job and status in ("DELIVERED", "FAILED"):
            return job
        time.sleep(1.0)
    return {"status": f"no result within {TIMEOUT_SECONDS} s (last: {last})"}


# --------------------------------------------------------------------------- the verdict

def verdict(run: Run, reference: Sequence[Exchange], *, allowed_hosts: Sequence[str] | None = None) -> list[str]:
    """Every difference between the live run and what the emulator does; empty when they agree."""
    from s2v.adapters.providers.wavespeed import MODEL
    from s2v.model import provider_facts

    hosts = tuple(allowed_hosts or provider_facts.OUTPUT_HOSTS)
    problems = []
    if run.job.get("status") != "DELIVERED":
        failure = run.job.get("failure")
        reason = failure.get("reason") if isinstance(failure, Mapping) else ""
        problems.append(f"the job ended {run.job.get('status')!r}, not DELIVERED {reason}".rstrip())
    if not run.task_id:
        return [*problems, "no provider task id was recorded"]
    problems += compare(run.exchanges, reference, model=MODEL)
    problems += status_problems(statuses_seen(run.exchanges, run.task_id))
    problems += output_problems(run.outputs, run.task_id, hosts)
    if run.listed_on_page is None:
        problems.append(f"the list did not show task {run.task_id} in its first {LIST_PAGES} pages")
    elif not run.listed_input:
        problems.append("the listed task carries no 'input' (include_inputs); the emulator's does")
    return problems


def report(run: Run, problems: Sequence[str], say: Callable[[str], None] = print) -> None:
    from s2v.model import provider_facts

    say("")
    say("What the provider answered:")
    for exchange in run.exchanges:
        if not exchange.path.startswith("/api/"):
            continue  # media the provider itself fetched (only when the "provider" is a local emulator)
        data = exchange.payload.get("data") if isinstance(exchange.payload, Mapping) else None
        fields = ", ".join(sorted(data)) if isinstance(data, Mapping) else type_name(data)
        say(f"  {exchange.method:6} {exchange.path:48} HTTP {exchange.status}  [{exchange.call}] data: {fields}")
    say(f"task {run.task_id or '-'}: statuses {' -> '.join(statuses_seen(run.exchanges, run.task_id)) or '-'}")
    for url in run.outputs:
        say(f"output: host {urlsplit(url).hostname}, path {urlsplit(url).path}")
    if run.video is not None:
        from s2v_local.probe import probe_media

        say(f"delivered: {run.job.get('output_key')} -> {run.video} ({probe_media(run.video).describe()})")
    say(f"list: task found on page {run.listed_on_page}" if run.listed_on_page else "list: task not found")
    if run.balance_before is not None and run.balance_after is not None:
        spent = run.balance_before - run.balance_after
        expected = provider_facts.price_usd(CLIP_SECONDS, RESOLUTION)
        lag = "" if abs(spent - expected) < 0.005 else "; the balance may lag"
        say(f"balance: ${run.balance_before:.4f} before, ${run.balance_after:.4f} after: ${spent:.4f} spent "
            f"(the billing rule says ${expected:.2f}{lag})")
    say("")
    if problems:
        say(f"LIVE CHECK FAILED: {len(problems)} difference(s) between the real service and the emulator:")
        for problem in problems:
            say(f"  - {problem}")
        say("Update s2v/model/provider_facts.py (and the emulator, which follows it), then run the check again.")
    else:
        say("LIVE CHECK PASSED: the real answers have the emulator's shape, statuses and output host.")


def check(base_url: str, api_key: str, out_dir: Path, *, say: Callable[[str], None] = print,
          env_overrides: Mapping[str, str] | None = None, allowed_hosts: Sequence[str] | None = None) -> int:
    from s2v_local import samples

    inputs = (samples.portrait_png(), samples.speech_wav(CLIP_SECONDS))
    say("Asking the emulator the same questions first (local, free)...")
    reference = emulator_reference(inputs)
    say(f"Rendering one {CLIP_SECONDS:g} s clip at {RESOLUTION} through the local stack against {base_url} ...")
    run = live_run(base_url, api_key, inputs, out_dir, env_overrides=env_overrides, say=say)
    problems = verdict(run, reference, allowed_hosts=allowed_hosts)
    report(run, problems, say)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
         out: TextIO | None = None) -> int:
    env = os.environ if env is None else env
    stream = out or sys.stdout
    key = env.get("WAVESPEED_API_KEY", "").strip()
    if not key:
        print(NEEDS, file=stream, end="")
        return 2
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    base_url = (env.get("WAVESPEED_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    out_dir = Path(env.get("S2V_LIVE_CHECK_DIR") or "live-check-output")

    def say(line: str) -> None:
        print(line.replace(key, "[redacted]"), file=stream, flush=True)

    try:
        return check(base_url, key, out_dir, say=say)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the check's contract: a clear message and a non-zero exit
        say(f"LIVE CHECK FAILED: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
