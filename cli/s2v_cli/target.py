"""Which s2v stack a command talks to, and the clients and core objects pointed at it.

A deployed stack is found by name through CloudFormation: its outputs ``BucketName`` and
``JobsTableName`` name the resources, and its ``DailyBudgetUSD`` / ``MaxInFlightJobs`` parameters
(the values the template passes to the functions) are the spend guard's limits. The provider is
reached as the stack reaches it: ``WaveSpeedBaseUrl`` (parameter) with the API key from the secret
the ``ApiKeySecretArn`` output names. The caller's normal AWS credentials, profile and region
apply (``AWS_PROFILE``, ``AWS_REGION``...).

The embedded local stack (``s2v local up``) writes a small state file while it runs
(the checkout's ``.s2v/local.json``, see ``s2v_local.home``) with its endpoint, bucket, table and
limits; commands point boto3 at that endpoint with dummy credentials. Its jobs and objects are
kept between runs in the local data folder (``s2v_local.snapshot``).
"""

from __future__ import annotations

import json
import mimetypes
import os
import posixpath
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from s2v.adapters.store import JobStore
from s2v.config import Settings
from s2v.deps import Deps
from s2v.model.jobs import InputObject, Job, job_id_for
from s2v_cli.views import StackLimits

STATE_ENV = "S2V_LOCAL_STATE"
DEFAULT_PROVIDER_URL = "https://api.wavespeed.ai"
LOCAL_REGION = "us-east-1"
LOCAL_API_KEY = "local-dev-key"  # the emulator's key; never a real one
REQUIRED_OUTPUTS = ("BucketName", "JobsTableName")


class TargetError(Exception):
    """The target cannot be found or reached; the message says what to do. Exit code 2."""


# --- the local stack's state file --------------------------------------------------------------

@dataclass(frozen=True)
class LocalState:
    endpoint_url: str
    bucket: str
    table: str
    webhook_base_url: str
    provider_base_url: str
    pid: int
    region: str = LOCAL_REGION
    daily_budget_usd: float | None = None
    max_in_flight_jobs: int | None = None
    started_at: float = 0.0


def state_path() -> Path:
    """This checkout's (``s2v_local.home``): ``<checkout>/.s2v/local.json`` unless the environment moves it."""
    from s2v_local import home

    return home.state_path()


def read_state(path: Path) -> LocalState | None:
    """The state file's content, or None when there is no (readable) file."""
    try:
        data = json.loads(path.read_text())
        known = LocalState.__dataclass_fields__
        return LocalState(**{k: v for k, v in data.items() if k in known})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise TargetError(f"the local stack state file {path} is unreadable ({exc}); delete it and run "
                          "`s2v local up` again") from exc


def write_state(path: Path, state: LocalState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(asdict(state), indent=2))
    partial.replace(path)  # readers never see half a file


def remove_state(path: Path, pid: int) -> None:
    """Remove the state file if it is still ours (another `local up` may have replaced it)."""
    try:
        current = read_state(path)
    except TargetError:
        return
    if current is not None and current.pid == pid:
        path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _port_open(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def is_live(state: LocalState) -> bool:
    return _process_alive(state.pid) and _port_open(state.endpoint_url)


# --- targets -----------------------------------------------------------------------------------

@dataclass
class Target:
    """One stack: where its bucket and table are, and how to build clients for them."""

    description: str  # for messages: "local stack at http://..." or "stack prod (eu-west-1)"
    bucket: str
    table: str
    limits: StackLimits
    client_factory: Callable[[str], Any] = field(repr=False)
    provider_base_url: str = DEFAULT_PROVIDER_URL
    api_key: Callable[[], str] | None = field(default=None, repr=False)  # resolved on first provider call
    local: bool = False

    def client(self, service: str) -> Any:
        return self.client_factory(service)

    @cached_property
    def provider(self) -> Any:
        """The WaveSpeed client the stack's functions use (same base URL and key); an operator
        waits for one short retry at most, not the functions' backoff."""
        from s2v.adapters.providers.wavespeed import WaveSpeedClient

        def key() -> str:
            if self.api_key is None:
                raise TargetError(f"{self.description} names no WaveSpeed API key (no ApiKeySecretArn output)")
            return self.api_key()

        return WaveSpeedClient(self.provider_base_url, key, timeout=10.0, max_read_retries=1, backoff_max=2.0)

    def who(self) -> str:
        """Who is acting, for the job record: the AWS caller identity on a deployed stack, else the OS user."""
        import getpass

        if not self.local:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                return str(self.client("sts").get_caller_identity()["Arn"])
            except (BotoCoreError, ClientError, KeyError):
                pass
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown operator"

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.client("dynamodb"), self.table)

    @cached_property
    def s3(self) -> Any:
        return self.client("s3")

    def deps(self) -> Deps:
        """What the core needs for operator actions (S3, DynamoDB, events, the provider); built for this target."""
        deps = Deps(Settings(bucket=self.bucket, jobs_table=self.table, provider_base_url=self.provider_base_url),
                    client_factory=self.client)
        deps.provider = self.provider
        return deps

    def jobs(self) -> list[Job]:
        return list(self.store.scan_jobs())


def _client_factory(session: Any, *, endpoint_url: str | None = None) -> Callable[[str], Any]:
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30,
                    s3={"addressing_style": "path"} if endpoint_url else {})
    cache: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in cache:
            cache[service] = session.client(service, endpoint_url=endpoint_url, config=config)
        return cache[service]

    return client


def local_target(path: Path | None = None) -> Target:
    import boto3

    path = path or state_path()
    state = read_state(path)
    if state is None:
        raise TargetError(f"this checkout's local stack is not running (no state file at {path}); start it with "
                          "`s2v local up --detach`, or pass --stack NAME for a deployed stack")
    if not is_live(state):
        raise TargetError(f"the local stack is not running (its state file {path} names process {state.pid} "
                          f"and {state.endpoint_url}, which no longer answer); start it with `s2v local up --detach`")
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name=state.region)
    return Target(description=f"local stack at {state.endpoint_url}", bucket=state.bucket, table=state.table,
                  limits=StackLimits(daily_budget_usd=state.daily_budget_usd, max_in_flight=state.max_in_flight_jobs),
                  client_factory=_client_factory(session, endpoint_url=state.endpoint_url),
                  provider_base_url=state.provider_base_url or DEFAULT_PROVIDER_URL,
                  api_key=lambda: LOCAL_API_KEY, local=True)


def stack_target(name: str) -> Target:
    import boto3
    from botocore.exceptions import ClientError

    with aws_errors(f"stack {name}"):
        # botocore reads AWS_DEFAULT_REGION only; other AWS tools also honour AWS_REGION.
        session = boto3.session.Session(region_name=os.environ.get("AWS_DEFAULT_REGION") or
                                        os.environ.get("AWS_REGION") or None)
        clients = _client_factory(session)
        try:
            stacks = clients("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
                raise TargetError(f"no stack named {name} in region {session.region_name}; check the name "
                                  "(`aws cloudformation list-stacks`), AWS_REGION and AWS_PROFILE") from None
            raise
    stack = stacks[0]
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    missing = [o for o in REQUIRED_OUTPUTS if not outputs.get(o)]
    if missing:
        raise TargetError(f"stack {name} ({stack.get('StackStatus')}) has no {' or '.join(missing)} output: "
                          "is it an s2v stack, and did its deployment finish?")
    parameters = {p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", ""))
                  for p in stack.get("Parameters", [])}
    secret_id = outputs.get("ApiKeySecretArn", "")

    def api_key() -> str:
        value = clients("secretsmanager").get_secret_value(SecretId=secret_id).get("SecretString", "")
        return str(value).strip()

    return Target(description=f"stack {name} ({session.region_name})", bucket=outputs["BucketName"],
                  table=outputs["JobsTableName"],
                  limits=StackLimits(daily_budget_usd=_number(parameters.get("DailyBudgetUSD"), float),
                                     max_in_flight=_number(parameters.get("MaxInFlightJobs"), int)),
                  client_factory=clients,
                  provider_base_url=(parameters.get("WaveSpeedBaseUrl") or DEFAULT_PROVIDER_URL).rstrip("/"),
                  api_key=api_key if secret_id else None)


def _number(raw: str | None, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def resolve(*, stack: str | None, local: bool) -> Target:
    """--stack NAME, --local, or (neither) the local stack when it is running."""
    if stack and local:
        raise TargetError("choose one target: --stack NAME or --local, not both")
    if stack:
        return stack_target(stack)
    if local:
        return local_target()
    path = state_path()
    state = read_state(path)
    if state is None or not is_live(state):
        raise TargetError("no s2v stack to talk to: start this checkout's embedded one with `s2v local up --detach` "
                          "(commands then "
                          "use it by default) or pass --stack NAME for a deployed stack (with your usual AWS "
                          "credentials)")
    return local_target(path)


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn "cannot reach AWS" into a TargetError saying what to do; other errors pass through."""
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        TokenRetrievalError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError, TokenRetrievalError) as exc:
        raise TargetError(f"no usable AWS credentials to reach {what} ({exc}); configure them (`aws configure`, "
                          "`aws sso login`, AWS_PROFILE) or use the local stack with --local") from None
    except ProfileNotFound as exc:
        raise TargetError(f"{exc}; check AWS_PROFILE") from None
    except NoRegionError:
        raise TargetError(f"no AWS region to find {what}: set AWS_REGION (or AWS_DEFAULT_REGION) or a region in "
                          "your profile") from None
    except EndpointConnectionError as exc:
        raise TargetError(f"cannot reach {what}: {exc}") from None


# --- what a user does: upload a pair -----------------------------------------------------------

@dataclass(frozen=True)
class Dropped:
    job_id: str  # the id the pipeline gives this exact pair of objects
    keys: tuple[str, ...]
    started_at: float
    earlier_sidecar: str = ""  # a params file already in the bucket that will apply to this pair


def drop_pair(target: Target, image: Path, audio: Path, *, folder: str, stem: str,
              params: dict[str, Any]) -> Dropped:
    """Upload like a user would: the params sidecar first (so it is there when the pair is read),
    then the image, then the audio, which completes the pair."""
    base = "inputs/" + "/".join(p for p in (folder.strip("/"), stem) if p)
    started = time.time()
    keys: list[str] = []
    earlier_sidecar = ""
    if params:
        target.s3.put_object(Bucket=target.bucket, Key=base + ".json", ContentType="application/json",
                             Body=json.dumps(params, ensure_ascii=False).encode())
        keys.append(base + ".json")
    elif _exists(target, base + ".json"):
        earlier_sidecar = base + ".json"
    uploaded: list[InputObject] = []
    for path in (image, audio):
        key = f"{base}.{path.suffix.lstrip('.').lower()}"
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as body:
            response = target.s3.put_object(Bucket=target.bucket, Key=key, Body=body, ContentType=content_type)
        uploaded.append(InputObject(key=key, etag=response["ETag"].strip('"'), size=path.stat().st_size))
        keys.append(key)
    # The same identity ingest computes from the listed objects, so we can follow the job by id.
    job_id = job_id_for(folder.strip("/"), stem, uploaded[0], uploaded[1])
    return Dropped(job_id=job_id, keys=tuple(keys), started_at=started, earlier_sidecar=earlier_sidecar)


def _exists(target: Target, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        target.s3.head_object(Bucket=target.bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


# --- the embedded local stack in the foreground ------------------------------------------------

@dataclass(frozen=True)
class LocalOptions:
    render_seconds: float = 2.0
    webhooks: bool = True
    poll_interval_seconds: float = 2.0
    queue_delay_seconds: int = 1
    daily_budget_usd: float | None = None
    max_in_flight_jobs: int | None = None
    log_level: str = "WARNING"  # the functions' Powertools log level (template parameter LogLevel)
    # Restore the stack's jobs and objects from here and save them back at exit (s2v_local.snapshot).
    data_dir: Path | None = None


@contextmanager
def running_local_stack(options: LocalOptions, path: Path) -> Iterator[LocalState]:
    """Start the emulator and the stack, publish the state file, and clean both up on exit."""
    from s2v_local import home
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    existing = read_state(path)
    if existing is not None and existing.pid != os.getpid() and is_live(existing):
        raise TargetError(already_running(existing, path))
    parameters = {name: str(value) for name, value in (("DailyBudgetUSD", options.daily_budget_usd),
                                                       ("MaxInFlightJobs", options.max_in_flight_jobs),
                                                       ("LogLevel", options.log_level)) if value is not None}
    with ExitStack() as resources:
        emulator = resources.enter_context(Emulator(api_key=LOCAL_API_KEY, render_seconds=options.render_seconds))
        try:
            stack = resources.enter_context(LocalStack(
                emulator=emulator, provider_base_url=emulator.base_url, api_key=LOCAL_API_KEY,
                parameters=parameters, webhooks=options.webhooks,
                poll_interval_seconds=options.poll_interval_seconds, queue_delay_seconds=options.queue_delay_seconds,
                data_dir=options.data_dir, stack_name=home.stack_name() if options.data_dir else None))
        except home.DataInUse as exc:
            raise TargetError(str(exc)) from None
        env = stack.environment
        state = LocalState(
            endpoint_url=stack.endpoint_url, bucket=stack.bucket, table=stack.table_name,
            webhook_base_url=stack.webhook_base_url if options.webhooks else "",
            provider_base_url=emulator.base_url, pid=os.getpid(),
            daily_budget_usd=_number(env.get("S2V_DAILY_BUDGET_USD"), float),
            max_in_flight_jobs=_number(env.get("S2V_MAX_IN_FLIGHT_JOBS"), int), started_at=time.time())
        write_state(path, state)
        resources.callback(remove_state, path, state.pid)
        yield state


def already_running(state: LocalState, path: Path) -> str:
    return (f"this checkout's local stack is already running (process {state.pid}, {state.endpoint_url}, "
            f"bucket {state.bucket}; state file {path}): use it, or stop it with `s2v local down`")


DETACH_START_SECONDS = 180.0


def start_detached(args: list[str], path: Path | None = None) -> tuple[LocalState, Path, Path]:
    """Start `s2v local up ARGS` in the background, wait until it is up; its state, state file and log."""
    import subprocess
    import sys

    path = path or state_path()
    existing = read_state(path)
    if existing is not None and is_live(existing):
        raise TargetError(already_running(existing, path))
    log = path.with_name("local-up.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        child = subprocess.Popen([sys.executable, "-m", "s2v_cli", "local", "up", *args], stdin=subprocess.DEVNULL,
                                 stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    deadline = time.monotonic() + DETACH_START_SECONDS
    while time.monotonic() < deadline:
        state = read_state(path)
        if state is not None and state.pid == child.pid and is_live(state):
            return state, path, log
        if child.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise TargetError("the local stack did not start: " + (" / ".join(tail) or f"exit {child.returncode}"))
        time.sleep(0.2)
    child.terminate()
    raise TargetError(f"the local stack did not start within {DETACH_START_SECONDS:.0f} s; its log: {log}")


def stop_local(path: Path, *, timeout: float) -> LocalState | None:
    """Stop the stack the state file names (SIGTERM: it saves its data and exits); None when none runs."""
    state = read_state(path)
    if state is None or not _process_alive(state.pid):
        return None
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    while _process_alive(state.pid) and time.monotonic() < deadline:
        with suppress(ChildProcessError):
            os.waitpid(state.pid, os.WNOHANG)  # reap it when it is our own child (started by this process)
        time.sleep(0.2)
    if _process_alive(state.pid):
        raise TargetError(f"the local stack (process {state.pid}) is still saving after {timeout:.0f} s; "
                          "wait, or run `s2v local down` again")
    return state


def wait_for_stop_signal(tick: Callable[[], None] | None = None) -> None:
    """Block until Ctrl-C or SIGTERM, calling ``tick`` about once a second meanwhile."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):
            if tick is not None:
                tick()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- a folder of pairs, or a manifest, dropped at once ------------------------------------------

@dataclass(frozen=True)
class DroppedBatch:
    """What `s2v drop FOLDER|MANIFEST` uploaded and the jobs it follows (by id: ingest computes the same)."""
    keys: tuple[str, ...]
    job_ids: tuple[str, ...]  # a manifest's: one per row, in row order (a row's job may not exist yet)
    started_at: float
    skipped: tuple[str, ...] = ()  # local files that pair with nothing
    batch_id: str = ""
    manifest_key: str = ""


def drop_folder(target: Target, source: Path, *, folder: str) -> DroppedBatch:
    """Every image of ``source`` with an audio clip of the same name, as pairs under inputs/<folder>/."""
    from s2v.model.pairing import AUDIO_EXTENSIONS, DEFAULTS_NAME, IMAGE_EXTENSIONS

    started = time.time()
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    by_stem: dict[str, dict[str, Path]] = {}
    for path in files:
        ext = path.suffix.lstrip(".").lower()
        kind = "image" if ext in IMAGE_EXTENSIONS else "audio" if ext in AUDIO_EXTENSIONS else ""
        if kind and "." not in path.stem:  # "x.left.wav", "x.mask.png": two-speaker sets go one by one
            if kind in by_stem.setdefault(path.stem, {}):
                raise TargetError(f"{source} has two {kind}s named {path.stem}: keep one")
            by_stem[path.stem][kind] = path
    pairs = {stem: found for stem, found in by_stem.items() if len(found) == 2}
    if not pairs:
        raise TargetError(f"{source} holds no pair: an image and an audio clip with the same name (alice.png + "
                          "alice.wav)")
    paired = {p for found in pairs.values() for p in found.values()}
    # The folder's own params go up with it: its _defaults.json first, each pair's <stem>.json with
    # its pair; both checked here like the stack checks them, so a typo stops the drop before any upload.
    defaults = source / DEFAULTS_NAME
    sidecars = {stem: _local_params(source / f"{stem}.json") for stem in pairs if (source / f"{stem}.json").is_file()}
    keys: list[str] = []
    if defaults.is_file():
        key = "inputs/" + "/".join(p for p in (folder.strip("/"), DEFAULTS_NAME) if p)
        _local_params(defaults)
        target.s3.put_object(Bucket=target.bucket, Key=key, Body=defaults.read_bytes(),
                             ContentType="application/json")
        keys.append(key)
    job_ids: list[str] = []
    for stem, found in sorted(pairs.items()):
        dropped = drop_pair(target, found["image"], found["audio"], folder=folder, stem=stem,
                            params=sidecars.get(stem, {}))
        keys += dropped.keys
        job_ids.append(dropped.job_id)
    sent = paired | {defaults} | {source / f"{stem}.json" for stem in sidecars}
    return DroppedBatch(keys=tuple(keys), job_ids=tuple(job_ids), started_at=started,
                        skipped=tuple(p.name for p in files if p not in sent))


def _local_params(path: Path) -> dict[str, Any]:
    """A local sidecar or ``_defaults.json``, checked as the stack checks it (a ``TargetError`` says why)."""
    from s2v.model.errors import InputError
    from s2v.model.params import parse_document

    try:
        return parse_document(path.read_bytes(), str(path))
    except InputError as exc:
        raise TargetError(str(exc)) from None


def drop_manifest(target: Target, manifest: Path, *, folder: str) -> DroppedBatch:
    """The files a manifest names relative to its folder (found next to it), then the manifest itself,
    which starts the batch; rows naming bucket keys ('/inputs/...') use what is already there."""
    from s2v.model.jobs import row_job_id
    from s2v.model.manifest import batch_id_for, parse_manifest

    started = time.time()
    raw = manifest.read_bytes()
    base = "inputs/" + "/".join(p for p in (folder.strip("/"),) if p)
    key = (base.rstrip("/") + "/" + manifest.name) if folder.strip("/") else "inputs/" + manifest.name
    # Read here only to know its rows and files; the stack judges it again with its own limits.
    parsed = parse_manifest(raw, key, input_prefix="inputs/", max_rows=Settings.max_manifest_rows,
                            max_prompt_chars=Settings.max_prompt_chars)
    prefix = posixpath.dirname(key) + "/"
    local_root = manifest.resolve().parent
    keys: list[str] = []
    for row in parsed.rows:
        for wanted in (row.image_key, row.audio_key):
            if row.error is not None or wanted in keys or not wanted.startswith(prefix):
                continue
            path = (local_root / wanted[len(prefix):]).resolve()
            if local_root not in path.parents or not path.is_file():
                continue  # not next to the manifest: the row waits for it in the bucket, or fails saying so
            with path.open("rb") as body:
                target.s3.put_object(Bucket=target.bucket, Key=wanted, Body=body,
                                     ContentType=mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            keys.append(wanted)
    content_type = "text/csv" if key.endswith(".csv") else "application/json"
    target.s3.put_object(Bucket=target.bucket, Key=key, Body=raw, ContentType=content_type)
    batch_id = batch_id_for(key, raw)
    return DroppedBatch(keys=(*keys, key), job_ids=tuple(row_job_id(batch_id, r.number) for r in parsed.rows),
                        started_at=started, batch_id=batch_id, manifest_key=key)
