"""The embedded local stack: moto's server plus an event router driven by template.yaml.

``LocalStack.start()`` creates the template's queues, table, secrets and bucket in moto, loads each
function's handler, and delivers the triggers the template declares: S3 → SQS (moto itself sends
the bucket notifications) → ingest, schedule → poll, HTTP → webhook (API Gateway payload v2.0),
table stream → deliver (with the template's filter, retries and on-failure queue). Nothing here
names a particular function: add an event to template.yaml and it runs locally too.

The function runtime is in ``runtime``, each kind of trigger in ``triggers/``; this module creates
the resources and starts the triggers.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import string
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from s2v_local import home
from s2v_local.runtime import FunctionRuntime, HandlerMissing, LambdaContext, log
from s2v_local.template import (
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
from s2v_local.triggers.http_api import HttpApiServer
from s2v_local.triggers.schedule import ScheduleTimer
from s2v_local.triggers.sqs import SqsPoller
from s2v_local.triggers.stream import StreamConsumer, StreamReader, partition_lanes

__all__ = ["FunctionRuntime", "HandlerMissing", "LambdaContext", "LocalStack", "ProviderEndpoint",
           "partition_lanes"]

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "s2v-local"
API_KEY_SECRET_ENV = "WAVESPEED_API_KEY_SECRET_ID"  # the secret that holds the provider key
STOP_GRACE_SECONDS = 3.0
_SESSIONS: dict[str, Any] = {}  # region → the boto3 session stack clients are made from
_SESSIONS_LOCK = threading.Lock()


class ProviderEndpoint(Protocol):
    """What the stack needs from a provider emulator: where it listens. Its owner starts and stops it."""

    @property
    def base_url(self) -> str: ...


class LocalStack:
    """moto + the template's triggers, on 127.0.0.1. Use as a context manager or start()/stop()."""

    _running: ClassVar[LocalStack | None] = None

    def __init__(self, root: Path = REPO_ROOT, *, emulator: ProviderEndpoint | None = None,
                 provider_base_url: str | None = None, api_key: str = "local-dev-key",
                 parameters: Mapping[str, str] | None = None, env_overrides: Mapping[str, str] | None = None,
                 webhooks: bool = True, poll_interval_seconds: float | None = None,
                 queue_delay_seconds: int | None = None, ingest_concurrency: int = 4,
                 redelivery_seconds: int | None = None, data_dir: Path | None = None,
                 stack_name: str | None = None) -> None:
        """``redelivery_seconds``: how soon a failed SQS message is visible again (default: the
        queue's VisibilityTimeout, as on AWS; tests use 0). ``poll_interval_seconds`` replaces
        every schedule's rate and ``queue_delay_seconds`` every queue's DelaySeconds.
        ``data_dir``: restore the table and bucket saved there at start, save them there at stop
        (see ``snapshot``), held by this stack alone while it runs (``home.claim``); without it
        the stack's data lives only as long as the stack. ``stack_name``: a stable name (so a stable
        bucket name, ``home.stack_name``); by default a fresh one per stack."""
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
        self.data_dir = data_dir
        self.restored: tuple[int, int] = (0, 0)  # items, objects restored from data_dir
        self._started = False
        # moto's backends are process-wide and may hold other tests' resources: never reset
        # them, use names no other stack in this process has.
        self.pseudo = Pseudo(stack_name=stack_name or f"{STACK_NAME}-{secrets.token_hex(3)}")
        self._data_claim: home.Claim | None = None

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
            if self.data_dir is not None:
                self._data_claim = home.claim(self.data_dir)
            self._start_moto()
            if self._data_claim is not None:
                self._data_claim.note(endpoint_url=self.endpoint_url)
            self._create_resources()
            self._start_http_api()
            self._configure_functions()
            self._start_routers()
        except BaseException:
            self.stop()
            raise
        self._started = True
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
        if self._started and self.data_dir is not None and self._moto is not None:
            self._save_data()
        if self._data_claim is not None:
            self._data_claim.release()
            self._data_claim = None
        self._started = False
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

        # One session per region for every stack: a new session parses botocore's JSON models again
        # (0.4 s of CPU per client); a session is not thread-safe, so clients are made one at a time.
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(self.pseudo.region)
            if session is None:
                session = _SESSIONS[self.pseudo.region] = boto3.session.Session(
                    aws_access_key_id="testing", aws_secret_access_key="testing", region_name=self.pseudo.region)
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

    # -- the data kept between runs (snapshot)

    def _save_data(self) -> None:
        from s2v_local import snapshot

        assert self.data_dir is not None
        try:
            saved = snapshot.save(self.data_dir, dynamodb=self.client("dynamodb"), table=self.table_name,
                                  s3=self.client("s3"), bucket=self.bucket)
        except Exception:  # the stack stops either way; say the data was not kept
            log.exception("could not save the local stack's data to %s", self.data_dir)
            return
        log.info("local stack data saved to %s: %d item(s), %d object(s)", self.data_dir, saved["items"],
                 len(saved["objects"]))

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
        if self.data_dir is not None:  # before the stream readers start: restored items are not news
            from s2v_local import snapshot

            self.restored = (snapshot.restore_items(self.data_dir, dynamodb=self.client("dynamodb"),
                                                    table=self.table_name), 0)
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
            if bucket.versioning:
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": bucket.versioning})
            if bucket.ownership:
                s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={
                    "Rules": [{"ObjectOwnership": bucket.ownership}]})
            # The TLS-only bucket policy is not applied: loopback is plain http and moto does not
            # evaluate bucket policies anyway.
            if self.data_dir is not None and not self.bucket:
                # Before the notifications: restored inputs must not be ingested again.
                from s2v_local import snapshot

                self.restored = (self.restored[0], snapshot.restore_objects(self.data_dir, s3=s3, bucket=name))
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
            # With an emulator, only its output origin (another host name than its API, as on the real
            # CDN); without one (a test server, the real API), any loopback name.
            "S2V_OUTPUT_ALLOWED_HOSTS": getattr(self.emulator, "output_host", None) or "127.0.0.1,localhost",
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
        readers: dict[str, list[StreamConsumer]] = {}  # one reader per table stream, fanned out to its triggers
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
                    readers.setdefault(trigger.table, []).append(StreamConsumer(self, runtime, trigger))
                    continue
                else:
                    continue  # HttpTrigger: served by the HTTP API server
                thread = threading.Thread(target=router, name=f"s2v-{function.logical_id}-{trigger.name}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
        for table, consumers in readers.items():
            reader = StreamReader(self, table, consumers)  # iterators taken now: LATEST
            thread = threading.Thread(target=reader.run, name=f"s2v-{table}-stream", daemon=True)
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
