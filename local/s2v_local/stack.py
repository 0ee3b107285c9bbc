"""The embedded local stack: moto's server plus an event router driven by template.yaml.

``LocalStack.start()`` creates the template's queues, table, secrets and bucket in moto, loads each
function's handler, and delivers the triggers the template declares: S3 → SQS (moto itself sends
the bucket notifications) → ingest, schedule → poll, HTTP → webhook (API Gateway payload v2.0),
table stream → deliver (with the template's filter, retries and on-failure queue). Nothing here
names a particular function: add an event to template.yaml and it runs locally too.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import string
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl, quote_plus, unquote, unquote_plus, urlsplit

from s2v_local import patterns
from s2v_local.template import (
    Function,
    HttpTrigger,
    Pseudo,
    Resolver,
    ScheduleTrigger,
    SqsTrigger,
    StreamTrigger,
    Template,
    TemplateError,
    load,
)

# Not "s2v…": Powertools filters every logger whose name contains its service name out of the root handlers.
log = logging.getLogger("local_router")

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "s2v-local"
API_KEY_SECRET_ENV = "WAVESPEED_API_KEY_SECRET_ID"  # the secret that holds the provider key
MAX_HTTP_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
STOP_GRACE_SECONDS = 3.0
ROUTER = "s2v-local-router"  # tags the requests Lambda's triggers would make on AWS


class HandlerMissing(RuntimeError):
    """A function in template.yaml has no handler file (or no handler in it) under the root."""


class ProviderEndpoint(Protocol):
    """What the stack needs from a provider emulator: where it listens. Its owner starts and stops it."""

    @property
    def base_url(self) -> str: ...


# --------------------------------------------------------------------------- Lambda runtime

@dataclass
class LambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float  # time.monotonic() when the invocation would time out
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


_import_lock = threading.Lock()


class FunctionRuntime:
    """One template function and its warm "containers" (module instances).

    Like Lambda, a container serves one invocation at a time and a new one cold-starts when all
    are busy, so module-level state in a handler (a Powertools BatchProcessor, say) is never
    shared by concurrent invocations.
    """

    def __init__(self, function: Function, root: Path, *, name: str, arn: str) -> None:
        self.function = function
        self.name = name
        self.arn = arn
        self.module_file = root / function.module_path
        self._idle: list[ModuleType] = []
        self._loaded: list[str] = []
        self._lock = threading.Lock()
        # Seconds per invocation, for bench/'s cost model: those a schedule made cost the same at
        # any load; those events made (uploads, webhooks, stream records) are a cost per job.
        self.event_durations: list[float] = []
        self.scheduled_durations: list[float] = []

    def check_handler(self) -> str | None:
        """Why this function cannot run, or None."""
        if not self.module_file.is_file():
            return (f"{self.function.logical_id}: {self.module_file} not found "
                    f"(CodeUri {self.function.code_uri}, Handler {self.function.handler})")
        return None

    def warm(self) -> None:
        self._idle.append(self._cold_start())

    def _cold_start(self) -> ModuleType:
        with _import_lock:
            module_name = f"s2v_fn_{self.function.logical_id}_{len(self._loaded)}"
            spec = importlib.util.spec_from_file_location(module_name, self.module_file)
            if spec is None or spec.loader is None:
                raise HandlerMissing(f"{self.function.logical_id}: cannot import {self.module_file}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            # The code directory is on sys.path as /var/task is on Lambda, for sibling modules.
            code_dir = str(self.module_file.parent)
            sys.path.insert(0, code_dir)
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            finally:
                sys.path.remove(code_dir)
            self._loaded.append(module_name)
        if not callable(getattr(module, self.function.handler_name, None)):
            raise HandlerMissing(f"{self.function.logical_id}: {self.module_file} has no callable "
                                 f"{self.function.handler_name!r} (Handler {self.function.handler})")
        return module

    def invoke(self, event: Any, *, source: str = "invoke", scheduled: bool = False) -> Any:
        with self._lock:
            module = self._idle.pop() if self._idle else None
        cold = module is None
        if module is None:
            module = self._cold_start()
        context = LambdaContext(
            function_name=self.name,
            invoked_function_arn=self.arn,
            memory_limit_in_mb=self.function.memory_size,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{self.name}",
            log_stream_name=f"local/{threading.current_thread().name}",
            deadline=time.monotonic() + self.function.timeout,
        )
        started = time.monotonic()
        outcome = "error"
        try:
            result = getattr(module, self.function.handler_name)(event, context)
            outcome = "ok"
            return result
        finally:
            elapsed = time.monotonic() - started
            with self._lock:
                self._idle.append(module)
                (self.scheduled_durations if scheduled else self.event_durations).append(elapsed)
            overtime = " — longer than its timeout on AWS" if elapsed > self.function.timeout else ""
            log.info("%s ← %s: %s in %d ms%s%s", self.function.logical_id, source, outcome,
                     elapsed * 1000, " (cold start)" if cold else "", overtime)

    def unload(self) -> None:
        for name in self._loaded:
            sys.modules.pop(name, None)
        self._idle.clear()
        self._loaded.clear()


# --------------------------------------------------------------------------- the stack

class LocalStack:
    """moto + the template's triggers, on 127.0.0.1. Use as a context manager or start()/stop()."""

    _running: ClassVar[LocalStack | None] = None

    def __init__(self, root: Path = REPO_ROOT, *, emulator: ProviderEndpoint | None = None,
                 provider_base_url: str | None = None, api_key: str = "local-dev-key",
                 parameters: Mapping[str, str] | None = None, env_overrides: Mapping[str, str] | None = None,
                 webhooks: bool = True, poll_interval_seconds: float | None = None,
                 queue_delay_seconds: int | None = None, ingest_concurrency: int = 4,
                 redelivery_seconds: int | None = None) -> None:
        """``redelivery_seconds``: how soon a failed SQS message is visible again (default: the
        queue's VisibilityTimeout, as on AWS; tests use 0). ``poll_interval_seconds`` replaces
        every schedule's rate and ``queue_delay_seconds`` every queue's DelaySeconds."""
        self.root = Path(root)
        self.emulator = emulator
        self._provider_base_url = provider_base_url
        self._api_key = api_key
        self._parameters = dict(parameters or {})
        self._env_overrides = dict(env_overrides or {})
        self._webhooks = webhooks
        self.poll_interval_seconds = poll_interval_seconds
        self.queue_delay_seconds = queue_delay_seconds
        self.ingest_concurrency = max(1, ingest_concurrency)
        self.redelivery_seconds = redelivery_seconds
        # moto's backends are process-wide and may hold other tests' resources: never reset
        # them, use names no other stack in this process has.
        self.pseudo = Pseudo(stack_name=f"{STACK_NAME}-{secrets.token_hex(3)}")

        self.endpoint_url = ""
        self.bucket = ""
        self.table_name = ""
        self.webhook_base_url = ""
        self.physical: dict[str, Any] = {}
        self.environment: dict[str, str] = {}  # what the handlers see (all functions merged)
        self.template: Template | None = None
        self._runtimes: dict[str, FunctionRuntime] = {}
        self._moto: Any = None
        self._http: HttpApiServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._workers_lock = threading.Lock()
        self._saved_env: dict[str, str | None] = {}
        self._saved_log_levels: dict[str, int] = {}

    # -- lifecycle

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        try:
            self.template = load(self.root / "template.yaml")
            self._load_runtimes()
            if LocalStack._running is not None:
                raise RuntimeError("another LocalStack is running in this process (os.environ is process-wide)")
            LocalStack._running = self
            self._quiet_loggers()
            self._start_moto()
            self._create_resources()
            self._start_http_api()
            self._configure_functions()
            self._start_routers()
        except BaseException:
            self.stop()
            raise
        log.info("local stack up: moto %s, bucket %s, table %s, webhooks %s", self.endpoint_url,
                 self.bucket, self.table_name, self.webhook_base_url or "off")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        for thread in self._threads:
            thread.join(timeout=STOP_GRACE_SECONDS)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:  # daemon threads: an invocation still running past this is abandoned
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        for runtime in self._runtimes.values():
            runtime.unload()
        self._runtimes.clear()
        self._threads.clear()
        self._restore_environment()
        for name, level in self._saved_log_levels.items():
            logging.getLogger(name).setLevel(level)
        self._saved_log_levels.clear()
        if LocalStack._running is self:
            LocalStack._running = None

    # -- public helpers

    def client(self, service: str, *, caller: str = "") -> Any:
        """A boto3 client pointed at moto, independent of the process environment. ``caller`` tags
        its requests in ``request_counts`` (one of motoserver.CALLER_TAGS)."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=self.pseudo.region)
        return session.client(service, endpoint_url=self.endpoint_url,
                              config=Config(retries={"mode": "standard", "max_attempts": 3},
                                            s3={"addressing_style": "path"}, user_agent_extra=caller or None))

    @property
    def request_counts(self) -> Counter[tuple[str, str, str]]:
        """Requests moto has answered, by (caller, service, operation); callers: "app" (the
        handlers), "s2v-local-router" (what Lambda's triggers do on AWS), "s2v-bench"."""
        return self._moto.request_counts if self._moto is not None else Counter()

    @property
    def moto_cpu_seconds(self) -> float:
        """CPU time moto has spent answering requests so far."""
        return self._moto.cpu_seconds if self._moto is not None else 0.0

    def invocation_durations(self, *, scheduled: bool = False) -> dict[str, list[float]]:
        """Seconds per invocation so far, by function logical id: those events made, or with
        ``scheduled`` those a schedule made."""
        return {logical_id: list(runtime.scheduled_durations if scheduled else runtime.event_durations)
                for logical_id, runtime in self._runtimes.items()}

    def invoke(self, function_logical_id: str, event: dict[str, Any]) -> object:
        """Invoke a function synchronously through its loaded handler (like `sam local invoke`)."""
        if function_logical_id not in self._runtimes:
            raise KeyError(f"unknown function {function_logical_id!r}; known: {', '.join(self._runtimes)}")
        return self._runtimes[function_logical_id].invoke(event)

    def queue_url(self, queue_logical_id: str) -> str:
        return str(self.physical[queue_logical_id])

    # -- start-up steps

    def _load_runtimes(self) -> None:
        """One runtime per template function; fails before anything starts if a handler is missing."""
        assert self.template is not None
        region, account = self.pseudo.region, self.pseudo.account_id
        self._runtimes = {
            fid: FunctionRuntime(fn, self.root, name=self._default_name(fid),
                                 arn=f"arn:aws:lambda:{region}:{account}:function:{self._default_name(fid)}")
            for fid, fn in self.template.functions.items()
        }
        missing = [problem for r in self._runtimes.values() if (problem := r.check_handler())]
        if missing:
            raise HandlerMissing("cannot start the local stack, handler files are missing:\n  "
                                 + "\n  ".join(missing))

    def _quiet_loggers(self) -> None:
        # moto's server logs every request through werkzeug; the router logs what matters.
        for name in ("werkzeug",):
            logger = logging.getLogger(name)
            self._saved_log_levels[name] = logger.level
            logger.setLevel(logging.WARNING)

    def _start_moto(self) -> None:
        from s2v_local.motoserver import MotoServer  # moto's server with linearizable DynamoDB

        self._moto = MotoServer(host="127.0.0.1", port=0)
        self._moto.start()
        self.endpoint_url = self._moto.endpoint_url
        self._set_environment({
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.pseudo.region,
            "AWS_REGION": self.pseudo.region,
            # Powertools Tracer would look for an X-Ray daemon.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }, remove_prefixes=("AWS_ENDPOINT_URL_", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"))

    def _resolver(self) -> Resolver:
        assert self.template is not None
        return Resolver(self.template, parameters=self._parameters, physical=self.physical, pseudo=self.pseudo)

    def _default_name(self, logical_id: str) -> str:
        return f"{self.pseudo.stack_name}-{logical_id}"

    def _create_resources(self) -> None:
        template = self.template
        assert template is not None
        region, account = self.pseudo.region, self.pseudo.account_id
        # Anything the stack does not create still resolves, to a name that says where it came from.
        for logical_id in template.resources:
            self.physical[logical_id] = self._default_name(logical_id)
        for logical_id in template.functions:
            self.physical[f"{logical_id}.Arn"] = (
                f"arn:aws:lambda:{region}:{account}:function:{self._default_name(logical_id)}")
        self._create_queues()
        self._create_tables()
        self._create_secrets()
        self._create_buckets()

    def _create_queues(self) -> None:
        assert self.template is not None
        sqs = self.client("sqs")
        pending = dict(self.template.queues)
        while pending:  # dead-letter queues first
            ready = [q for q in pending.values() if q.dead_letter_queue is None or q.dead_letter_queue not in pending]
            if not ready:
                raise TemplateError(f"queues redrive to each other: {sorted(pending)}")
            for queue in ready:
                del pending[queue.logical_id]
                resolver = self._resolver()
                name = resolver.text(queue.name) if queue.name else self._default_name(queue.logical_id)
                attributes = {
                    "DelaySeconds": str(queue.delay_seconds if self.queue_delay_seconds is None
                                        else self.queue_delay_seconds),
                    "VisibilityTimeout": str(queue.visibility_timeout),
                    "MessageRetentionPeriod": str(queue.retention_seconds),
                }
                if queue.dead_letter_queue:
                    attributes["RedrivePolicy"] = json.dumps({
                        "deadLetterTargetArn": self.physical[f"{queue.dead_letter_queue}.Arn"],
                        "maxReceiveCount": queue.max_receive_count,
                    })
                url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                self.physical.update({queue.logical_id: url, f"{queue.logical_id}.Arn": arn,
                                      f"{queue.logical_id}.QueueName": name, f"{queue.logical_id}.QueueUrl": url})

    def _create_tables(self) -> None:
        assert self.template is not None
        dynamodb = self.client("dynamodb")
        for table in self.template.tables.values():
            name = self._resolver().text(table.name) if table.name else self._default_name(table.logical_id)
            request: dict[str, Any] = {
                "TableName": name,
                "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t}
                                         for n, t in table.attribute_types.items()],
                "KeySchema": _key_schema(table.hash_key, table.range_key),
                "BillingMode": "PAY_PER_REQUEST",
                "SSESpecification": {"Enabled": True},
            }
            if table.indexes:
                request["GlobalSecondaryIndexes"] = [
                    {"IndexName": i.name, "KeySchema": _key_schema(i.hash_key, i.range_key),
                     "Projection": dict(i.projection)} for i in table.indexes]
            if table.stream_view_type:
                request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": table.stream_view_type}
            described = dynamodb.create_table(**request)["TableDescription"]
            if table.ttl_attribute:
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": table.ttl_attribute})
            self.physical.update({table.logical_id: name, f"{table.logical_id}.Arn": described["TableArn"]})
            if "LatestStreamArn" in described:
                self.physical[f"{table.logical_id}.StreamArn"] = described["LatestStreamArn"]
            self.table_name = self.table_name or name

    def _create_secrets(self) -> None:
        assert self.template is not None
        holds_api_key = {
            ref.get("Ref") for fn in self.template.functions.values()
            if isinstance(ref := fn.environment.get(API_KEY_SECRET_ENV), dict)
        }
        secretsmanager = self.client("secretsmanager")
        for secret in self.template.secrets.values():
            name = self._resolver().text(secret.name) if secret.name else self._default_name(secret.logical_id)
            if secret.logical_id in holds_api_key:
                value = self._api_key
            elif secret.secret_string is not None:
                value = self._resolver().text(secret.secret_string)
            else:
                value = _generated_secret(secret.generate or {})
            arn = secretsmanager.create_secret(Name=name, SecretString=value,
                                               Description=secret.description[:2048])["ARN"]
            self.physical.update({secret.logical_id: arn, f"{secret.logical_id}.Id": arn})

    def _create_buckets(self) -> None:
        assert self.template is not None
        s3 = self.client("s3")
        for bucket in self.template.buckets.values():
            resolver = self._resolver()
            name = resolver.text(bucket.name) if bucket.name else self._default_name(bucket.logical_id).lower()
            s3.create_bucket(Bucket=name)
            if bucket.public_access_block:
                s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=dict(
                    resolver.value(dict(bucket.public_access_block))))
            if bucket.encryption:
                rules = [{"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                          **({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {})}
                         for rule in resolver.value(list(bucket.encryption))]
                s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
            if bucket.ownership:
                s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={
                    "Rules": [{"ObjectOwnership": bucket.ownership}]})
            # The TLS-only bucket policy is not applied: loopback is plain http and moto does not
            # evaluate bucket policies anyway.
            if bucket.queue_notifications:
                # moto delivers these notifications to SQS itself, keys URL-encoded as S3 does,
                # and (like S3) sends an s3:TestEvent when the configuration is set.
                s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={
                    "QueueConfigurations": [{
                        "QueueArn": self.physical[f"{n.queue}.Arn"],
                        "Events": list(n.events),
                        "Filter": {"Key": {"FilterRules": [
                            {"Name": rule, "Value": value}
                            for rule, value in (("prefix", n.prefix), ("suffix", n.suffix)) if value]}},
                    } for n in bucket.queue_notifications]})
            self.physical.update({bucket.logical_id: name, f"{bucket.logical_id}.Arn": f"arn:aws:s3:::{name}"})
            self.bucket = self.bucket or name

    def _start_http_api(self) -> None:
        assert self.template is not None
        self._http = HttpApiServer(self)
        thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="s2v-http-api", daemon=True)
        thread.start()
        self._threads.append(thread)
        self.webhook_base_url = self._http.base_url
        for api in self.template.http_apis:
            self.physical[api] = "local"
            self.physical[f"{api}.ApiEndpoint"] = self.webhook_base_url

    def _configure_functions(self) -> None:
        assert self.template is not None
        resolver = self._resolver()
        provider_url = self._provider_base_url or (self.emulator.base_url if self.emulator else None)
        local = {
            "S2V_LOCAL_MODE": "true",
            "S2V_OUTPUT_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "S2V_WEBHOOK_BASE_URL": self.webhook_base_url if self._webhooks else "",
            **({"S2V_POLL_SCHEDULE_SECONDS": str(max(1, round(self.poll_interval_seconds)))}
               if self.poll_interval_seconds else {}),
            **({"WAVESPEED_BASE_URL": provider_url.rstrip("/")} if provider_url else {}),
        }
        merged: dict[str, str] = {}
        conflicts: list[str] = []
        for function in self.template.functions.values():
            env = {**resolver.environment(function), **local, **self._env_overrides}
            for key, value in env.items():
                if merged.setdefault(key, value) != value:
                    conflicts.append(f"{key} ({merged[key]!r} vs {value!r} in {function.logical_id})")
        if conflicts:
            # The environment is process-wide locally: two functions cannot see different values.
            raise TemplateError("functions need different values for: " + "; ".join(conflicts))
        self.environment = merged
        # Cold starts read settings from os.environ, which every local function shares: it holds
        # the union of the functions' environments (checked above to agree on every value), so a
        # variable set for one function only (e.g. the webhook's provider timeout) is seen by all.
        self._set_environment(merged)

        self._add_layers_to_path()
        for runtime in self._runtimes.values():
            runtime.warm()

    def _add_layers_to_path(self) -> None:
        # On Lambda a Python layer's content is importable; locally its source directory is.
        assert self.template is not None
        for logical_id, resource in self.template.resources.items():
            if resource.get("Type") != "AWS::Serverless::LayerVersion":
                continue
            content = self.root / str(resource.get("Properties", {}).get("ContentUri", ""))
            if content.is_dir() and str(content) not in sys.path:
                log.debug("layer %s importable from %s", logical_id, content)
                sys.path.append(str(content))

    def _start_routers(self) -> None:
        assert self.template is not None
        for function in self.template.functions.values():
            runtime = self._runtimes[function.logical_id]
            for trigger in function.triggers:
                if isinstance(trigger, SqsTrigger):
                    router: Callable[[], None] = SqsPoller(self, runtime, trigger).run
                elif isinstance(trigger, ScheduleTrigger):
                    if not trigger.enabled:
                        continue
                    router = ScheduleTimer(self, runtime, trigger).run
                elif isinstance(trigger, StreamTrigger):
                    router = StreamReader(self, runtime, trigger).run  # iterators taken now: LATEST
                else:
                    continue  # HttpTrigger: served by the HTTP API server
                thread = threading.Thread(target=router, name=f"s2v-{function.logical_id}-{trigger.name}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    # -- used by the routers

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def http_routes(self) -> list[tuple[HttpTrigger, FunctionRuntime]]:
        assert self.template is not None
        return [(t, self._runtimes[f.logical_id]) for f in self.template.functions.values()
                for t in f.triggers_of(HttpTrigger) if f.logical_id in self._runtimes]

    def run_in_worker(self, target: Callable[[], None], name: str) -> None:
        worker = threading.Thread(target=target, name=name, daemon=True)
        with self._workers_lock:
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()

    # -- environment

    def _set_environment(self, values: Mapping[str, str], remove_prefixes: tuple[str, ...] = ()) -> None:
        for key in [k for k in os.environ if k.startswith(remove_prefixes)] if remove_prefixes else []:
            self._saved_env.setdefault(key, os.environ.get(key))
            del os.environ[key]
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_environment(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()


def _key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
    keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return keys


def _generated_secret(spec: Mapping[str, Any]) -> str:
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    return "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))


# --------------------------------------------------------------------------- SQS → function

def s3_keys_as_aws_encodes(body: str) -> str:
    """moto URL-encodes the '/' in S3 notification keys (``inputs%2Ftalks%2Fa.png``); S3 itself
    leaves it (``inputs/talks/a.png``) and encodes the rest, space as '+'. Other bodies pass as is."""
    if '"aws:s3"' not in body:
        return body
    try:
        document = json.loads(body)
        for record in document["Records"]:
            s3_object = record["s3"]["object"]
            s3_object["key"] = quote_plus(unquote_plus(s3_object["key"]), safe="/")
    except (ValueError, KeyError, TypeError):
        return body
    return json.dumps(document)


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One SQS message as Lambda's SQS event source delivers it."""
    body = s3_keys_as_aws_encodes(message["Body"])
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        binary = value.get("BinaryValue")
        attributes[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_message_ids(response: Any, message_ids: list[str]) -> set[str]:
    """Which records to keep for redelivery, by Lambda's ReportBatchItemFailures rules: an empty
    or missing list is full success; an identifier that is empty or not in the batch fails it all."""
    if not isinstance(response, Mapping) or not response.get("batchItemFailures"):
        return set()
    failed = set()
    for item in response["batchItemFailures"]:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not identifier or identifier not in message_ids:
            return set(message_ids)
        failed.add(identifier)
    return failed


class SqsPoller:
    def __init__(self, stack: LocalStack, runtime: FunctionRuntime, trigger: SqsTrigger) -> None:
        self.stack = stack
        self.runtime = runtime
        self.trigger = trigger
        self.queue_url = stack.queue_url(trigger.queue)
        self.queue_arn = str(stack.physical[f"{trigger.queue}.Arn"])
        assert stack.template is not None
        queue = stack.template.queues[trigger.queue]
        self.redelivery_seconds = (queue.visibility_timeout if stack.redelivery_seconds is None
                                   else stack.redelivery_seconds)
        limit = min(stack.ingest_concurrency, trigger.max_concurrency or stack.ingest_concurrency)
        self._slots = threading.Semaphore(limit)
        self._sqs = stack.client("sqs", caller=ROUTER)

    def run(self) -> None:
        stop = self.stack.stopping
        while not stop.is_set():
            # Only take messages when a worker is free, or they would sit invisible unprocessed.
            if not self._slots.acquire(timeout=0.2):
                continue
            try:
                messages = self._receive_batch()
            except Exception:
                log.exception("receiving from %s failed", self.trigger.queue)
                self._slots.release()
                stop.wait(1.0)
                continue
            if not messages:
                self._slots.release()
                continue
            self.stack.run_in_worker(functools.partial(self._process, messages),
                                     name=f"s2v-{self.runtime.function.logical_id}-batch")

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, count), WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"])
        return list(response.get("Messages", []))

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Long-poll, then keep collecting until BatchSize or the batching window closes."""
        messages = self._receive(self.trigger.batch_size, 1)
        if not messages:
            return []
        window_ends = time.monotonic() + self.trigger.batching_window_seconds
        stop = self.stack.stopping
        while len(messages) < self.trigger.batch_size and time.monotonic() < window_ends and not stop.is_set():
            more = self._receive(self.trigger.batch_size - len(messages), 0)
            messages += more
            if not more:
                stop.wait(min(0.1, max(0.0, window_ends - time.monotonic())))
        return messages

    def _process(self, messages: list[dict[str, Any]]) -> None:
        try:
            event = {"Records": [sqs_record(m, self.queue_arn, self.stack.pseudo.region) for m in messages]}
            ids = [m["MessageId"] for m in messages]
            try:
                response = self.runtime.invoke(event, source=f"sqs {self.trigger.queue} ({len(messages)})")
                failed = failed_message_ids(response, ids) if self.trigger.report_batch_item_failures else set()
            except Exception:
                log.exception("%s failed on a batch of %d", self.runtime.function.logical_id, len(messages))
                failed = set(ids)
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start:start + 10])])
            # Failed records stay in the queue; moto's redrive moves them to the DLQ after
            # maxReceiveCount receives, as SQS does.
            for message in messages:
                if message["MessageId"] in failed:
                    self._sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                        VisibilityTimeout=self.redelivery_seconds)
        except Exception:
            log.exception("could not settle a batch from %s", self.trigger.queue)
        finally:
            self._slots.release()


# --------------------------------------------------------------------------- schedule → function

def scheduled_event(rule_arn: str, region: str, account_id: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class ScheduleTimer:
    def __init__(self, stack: LocalStack, runtime: FunctionRuntime, trigger: ScheduleTrigger) -> None:
        self.stack = stack
        self.runtime = runtime
        self.trigger = trigger
        interval = stack.poll_interval_seconds or trigger.interval_seconds
        if not interval:
            raise TemplateError(f"{runtime.function.logical_id}.{trigger.name}: {trigger.expression} has no "
                                "fixed rate; pass poll_interval_seconds to run it locally")
        self.interval = float(interval)
        pseudo = stack.pseudo
        self.rule_arn = (f"arn:aws:events:{pseudo.region}:{pseudo.account_id}:rule/"
                         f"{pseudo.stack_name}-{runtime.function.logical_id}{trigger.name}")

    def run(self) -> None:
        pseudo = self.stack.pseudo
        while not self.stack.stopping.wait(self.interval):
            try:
                self.runtime.invoke(scheduled_event(self.rule_arn, pseudo.region, pseudo.account_id),
                                    source=f"schedule {self.trigger.expression}", scheduled=True)
            except Exception:
                log.exception("%s failed on its schedule", self.runtime.function.logical_id)


# --------------------------------------------------------------------------- HTTP → function

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded", "+json", "+xml")


def http_api_event(trigger: HttpTrigger, *, method: str, raw_path: str, raw_query: str,
                   headers: list[tuple[str, str]], body: bytes, source_ip: str,
                   path_parameters: Mapping[str, str]) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2.0 event, as Lambda receives it."""
    lowered: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    now = datetime.now(UTC)
    host = lowered.get("host", "127.0.0.1")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": trigger.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": lowered,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": lowered.get("user-agent", "")},
            "requestId": uuid.uuid4().hex,
            "routeKey": trigger.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = {k: unquote(v) for k, v in path_parameters.items()}
    if body:
        content_type = lowered.get("content-type", "text/plain").lower()
        try:
            if not any(t in content_type for t in _TEXT_TYPES):
                raise UnicodeDecodeError("utf-8", body, 0, 0, "binary content type")
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def http_api_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Lambda's result to (status, headers, body) by the payload v2.0 rules: a dict with
    statusCode is used as is; anything else is a 200 JSON response of the value."""
    if isinstance(result, Mapping) and "statusCode" in result:
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        headers += [("set-cookie", str(cookie)) for cookie in result.get("cookies") or []]
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        return int(result["statusCode"]), headers, raw
    return 200, [("content-type", "application/json")], json.dumps(result).encode()


_JSON = [("content-type", "application/json")]


class HttpApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stack: LocalStack) -> None:
        super().__init__(("127.0.0.1", 0), _HttpApiHandler)
        self.stack = stack

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _HttpApiHandler(BaseHTTPRequestHandler):
    server: HttpApiServer
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_HTTP_BODY:
            self._reply(413, _JSON, b'{"message":"Request Entity Too Large"}')
            return
        body = self.rfile.read(length) if length else b""
        for trigger, runtime in self.server.stack.http_routes():
            path_parameters = trigger.match(self.command, parts.path)
            if path_parameters is None:
                continue
            event = http_api_event(trigger, method=self.command, raw_path=parts.path, raw_query=parts.query,
                                   headers=list(self.headers.items()), body=body,
                                   source_ip=self.client_address[0], path_parameters=path_parameters)
            try:
                status, headers, payload = http_api_response(
                    runtime.invoke(event, source=f"http {trigger.route_key}"))
            except Exception:
                log.exception("%s failed on %s %s", runtime.function.logical_id, self.command, parts.path)
                status, headers, payload = 500, _JSON, b'{"message":"Internal Server Error"}'
            self._reply(status, headers, payload)
            return
        self._reply(404, _JSON, b'{"message":"Not Found"}')

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http api: " + format, *args)


# --------------------------------------------------------------------------- stream → function

def _json_safe(value: Any) -> Any:
    """boto3 hands binary attributes back as bytes; Lambda's JSON event carries base64 text."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_json_safe(v) for v in value]
    return value


def stream_record(record: Mapping[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A dynamodbstreams get_records record as Lambda's DynamoDB event source delivers it."""
    data = dict(record["dynamodb"])
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        data["ApproximateCreationDateTime"] = int(created.timestamp())
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": _json_safe(data),
        "eventSourceARN": stream_arn,
    }


def partition_lanes(records: list[dict[str, Any]], factor: int) -> list[list[dict[str, Any]]]:
    """Lambda's ParallelizationFactor: records spread over up to ``factor`` concurrent lanes by
    partition key (a DynamoDB item's key), so one item's changes stay in order in one lane."""
    lanes: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        key = json.dumps(record.get("dynamodb", {}).get("Keys", {}), sort_keys=True)
        lane = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % max(1, factor)
        lanes.setdefault(lane, []).append(record)
    return list(lanes.values()) or [[]]


class StreamReader:
    def __init__(self, stack: LocalStack, runtime: FunctionRuntime, trigger: StreamTrigger) -> None:
        self.stack = stack
        self.runtime = runtime
        self.trigger = trigger
        self.stream_arn = str(stack.physical[f"{trigger.table}.StreamArn"])
        self.on_failure_url = stack.queue_url(trigger.on_failure_queue) if trigger.on_failure_queue else None
        self._streams = stack.client("dynamodbstreams", caller=ROUTER)
        shards = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        position = "TRIM_HORIZON" if trigger.starting_position == "TRIM_HORIZON" else "LATEST"
        self._iterators = {
            s["ShardId"]: self._streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=s["ShardId"],
                                                           ShardIteratorType=position)["ShardIterator"]
            for s in shards
        }
        self._pool = ThreadPoolExecutor(trigger.parallelization_factor, thread_name_prefix=f"s2v-{trigger.name}")

    def run(self) -> None:
        try:
            self._read()
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _read(self) -> None:
        stop = self.stack.stopping
        idle_wait = 0.05
        while not stop.is_set():
            busy = False
            for shard_id, iterator in list(self._iterators.items()):
                try:
                    response = self._streams.get_records(ShardIterator=iterator, Limit=100)
                except Exception:
                    log.exception("reading the %s stream failed", self.trigger.table)
                    stop.wait(1.0)
                    continue
                self._iterators[shard_id] = response["NextShardIterator"]
                records = [stream_record(r, self.stream_arn, self.stack.pseudo.region)
                           for r in response.get("Records", [])]
                busy = busy or bool(records)
                # Filtered-out records are consumed, as Lambda drops them before batching.
                wanted = [r for r in records if patterns.matches_any(self.trigger.filter_patterns, r)]
                lanes = partition_lanes(wanted, self.trigger.parallelization_factor)
                if len(lanes) == 1:
                    self._run_lane(lanes[0], shard_id)
                else:
                    list(self._pool.map(lambda lane, shard=shard_id: self._run_lane(lane, shard), lanes))
                if stop.is_set():
                    return
            # Back off while the table is quiet: every moto get_records call leaves an iterator behind.
            idle_wait = 0.05 if busy else min(idle_wait * 2, 0.5)
            if not busy:
                stop.wait(idle_wait)

    def _run_lane(self, records: list[dict[str, Any]], shard_id: str) -> None:
        for start in range(0, len(records), self.trigger.batch_size):
            if self.stack.stopping.is_set():
                return
            self._deliver(records[start:start + self.trigger.batch_size], shard_id, self.trigger.max_retries)

    def _deliver(self, batch: list[dict[str, Any]], shard_id: str, retries_left: int) -> None:
        """In order, with Lambda's stream error handling: retry, bisect, then the on-failure queue."""
        attempts = 0
        while True:
            attempts += 1
            try:
                self.runtime.invoke({"Records": batch},
                                    source=f"stream {self.trigger.table} ({len(batch)})")
                return
            except Exception:
                log.exception("%s failed on %d stream record(s), attempt %d",
                              self.runtime.function.logical_id, len(batch), attempts)
            if self.stack.stopping.is_set():
                return
            if self.trigger.bisect_on_error and len(batch) > 1:
                middle = len(batch) // 2
                self._deliver(batch[:middle], shard_id, retries_left)
                self._deliver(batch[middle:], shard_id, retries_left)
                return
            if retries_left == 0:
                self._send_to_on_failure(batch, shard_id, attempts)
                return
            retries_left = retries_left - 1 if retries_left > 0 else retries_left
            self.stack.stopping.wait(min(0.2 * attempts, 2.0))

    def _send_to_on_failure(self, batch: list[dict[str, Any]], shard_id: str, attempts: int) -> None:
        if self.on_failure_url is None:
            log.error("%s: dropping %d stream record(s) after %d attempts (no on-failure destination)",
                      self.runtime.function.logical_id, len(batch), attempts)
            return
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        # Lambda sends the batch's coordinates, not its records: read them back from the stream.
        message = {
            "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": self.runtime.arn,
                               "condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first.get("SequenceNumber"),
                "endSequenceNumber": last.get("SequenceNumber"),
                "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime")),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        sqs = self.stack.client("sqs", caller=ROUTER)
        sqs.send_message(QueueUrl=self.on_failure_url, MessageBody=json.dumps(message))
        log.error("%s: %d stream record(s) sent to %s after %d attempts", self.runtime.function.logical_id,
                  len(batch), self.trigger.on_failure_queue, attempts)


def _iso(epoch: Any) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
