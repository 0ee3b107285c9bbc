"""What must hold in template.yaml: security, wiring, least privilege. Synth-style assertions."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from deployed import BUCKET_ARN, REPO, SYMBOLS, TEMPLATE

from s2v_local import patterns
from s2v_local.template import (
    HttpTrigger,
    Pseudo,
    Resolver,
    ScheduleTrigger,
    SqsTrigger,
    StreamTrigger,
    Template,
    load,
)


@pytest.fixture(scope="module")
def template() -> Template:
    return load(TEMPLATE)


def resolver(template: Template, **parameters: str) -> Resolver:
    return Resolver(template, parameters=parameters, physical=SYMBOLS)


def props(template: Template, logical_id: str) -> Mapping[str, Any]:
    return template.resources[logical_id].get("Properties", {})


# ---------------------------------------------------------------------------- lint

def test_cfn_lint_reports_nothing() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), "--format", "parseable", str(TEMPLATE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def references(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from references(item)
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield value
            elif key == "Fn::GetAtt":
                yield value[0]
            elif key == "Fn::Sub":
                text, variables = (value, {}) if isinstance(value, str) else value
                for name in re.findall(r"\$\{([^}!]+)\}", text):
                    if name not in variables:
                        yield name.split(".")[0]
                yield from references(variables)
            else:
                yield from references(value)


def test_every_reference_names_a_resource_parameter_or_pseudo_parameter(template: Template) -> None:
    # cfn-lint validates SAM resources by schema without transforming them, so check this here.
    known = set(template.resources) | set(template.parameter_defaults) | set(Pseudo().values())
    dangling = sorted({r for r in references(template.raw) if r not in known})
    assert dangling == []


# ---------------------------------------------------------------------------- storage

def test_bucket_is_private_encrypted_and_tls_only(template: Template) -> None:
    bucket = props(template, "MediaBucket")
    sse = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert [r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in sse] in (["AES256"], ["aws:kms"])
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]

    policy = resolver(template).value(props(template, "MediaBucketPolicy"))
    assert policy["Bucket"] == "BUCKET"
    [deny] = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert set(deny["Resource"]) == {BUCKET_ARN, f"{BUCKET_ARN}/*"}
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_incomplete_multipart_uploads_are_aborted_after_a_day(template: Template) -> None:
    rules = props(template, "MediaBucket")["LifecycleConfiguration"]["Rules"]
    assert {"Status": "Enabled", "Days": 1} in [
        {"Status": r["Status"], "Days": r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]}
        for r in rules if "AbortIncompleteMultipartUpload" in r]


def test_the_bucket_keeps_versions_so_the_validated_input_is_rendered_and_expires_old_ones(template: Template) -> None:
    bucket = props(template, "MediaBucket")
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert template.buckets["MediaBucket"].versioning == "Enabled"  # the local stack's bucket too
    rules = bucket["LifecycleConfiguration"]["Rules"]
    noncurrent = [r["NoncurrentVersionExpiration"]["NoncurrentDays"] for r in rules
                  if r["Status"] == "Enabled" and "NoncurrentVersionExpiration" in r and not r.get("Prefix")]
    assert noncurrent and 1 <= noncurrent[0] <= 30  # a queued job's input outlives a week's wait, not forever
    assert any(r.get("ExpiredObjectDeleteMarker") for r in rules if r["Status"] == "Enabled")


def test_only_uploads_under_inputs_notify_the_ingest_queue(template: Template) -> None:
    [notification] = template.buckets["MediaBucket"].queue_notifications
    assert notification.queue == "IngestQueue"
    assert notification.events == ("s3:ObjectCreated:*",)
    assert (notification.prefix, notification.suffix) == ("inputs/", "")


def test_the_queue_policy_admits_exactly_this_bucket_and_exists_before_it(template: Template) -> None:
    assert template.resources["MediaBucket"]["DependsOn"] == "IngestQueuePolicy"
    bucket_name = resolver(template).text(template.buckets["MediaBucket"].name)
    [statement] = resolver(template).value(props(template, "IngestQueuePolicy"))["PolicyDocument"]["Statement"]

    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == "QUEUE:Ingest"
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{bucket_name}"
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"
    # lowercase, at most 63 characters: a valid bucket name whatever the stack is called
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{2,62}", bucket_name), bucket_name


def test_ingest_queue_delays_dead_letters_and_outlasts_the_function(template: Template) -> None:
    queue = template.queues["IngestQueue"]
    ingest_timeout = template.function("IngestFunction").timeout
    assert 5 <= queue.delay_seconds <= 60
    assert queue.visibility_timeout >= 6 * ingest_timeout
    assert (queue.dead_letter_queue, queue.max_receive_count) == ("IngestDLQ", 5)
    assert template.queues["IngestDLQ"].retention_seconds == 14 * 86400
    assert template.queues["DeliverDLQ"].retention_seconds == 14 * 86400
    assert template.queues["PollDLQ"].retention_seconds == 14 * 86400
    for logical_id in template.queues:
        assert props(template, logical_id).get("SqsManagedSseEnabled") is True, logical_id


def test_jobs_table_has_the_stream_ttl_and_sparse_due_index_the_code_uses(template: Template) -> None:
    from s2v.adapters.store import DUE_INDEX

    table = template.tables["JobsTable"]
    raw = props(template, "JobsTable")
    assert table.billing_mode == "PAY_PER_REQUEST"
    assert (table.hash_key, table.range_key) == ("job_id", None)
    assert table.stream_view_type == "NEW_AND_OLD_IMAGES"
    assert table.ttl_attribute == "expires_at"
    assert raw["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert raw["SSESpecification"] == {"SSEEnabled": True}
    indexes = {i.name: (i.hash_key, i.range_key) for i in table.indexes}
    # The poller's sparse due-index, and the operator's reads (s2v jobs/status, s2v dashboard).
    assert indexes == {DUE_INDEX: ("poll_bucket", "next_check_at"), "status-index": ("status", "created_at"),
                       "created-index": ("record_type", "created_at")}
    assert all(i.projection == {"ProjectionType": "ALL"} for i in table.indexes)
    assert table.attribute_types == {"job_id": "S", "poll_bucket": "S", "next_check_at": "N", "status": "S",
                                     "created_at": "N", "record_type": "S"}


def test_no_secret_value_is_written_in_the_template(template: Template) -> None:
    for secret in template.secrets.values():
        assert secret.secret_string is None and secret.generate, secret.logical_id
    assert "put-secret-value" in template.secrets["ApiKeySecret"].description


# ---------------------------------------------------------------------------- functions

def test_the_layer_build_ships_unchecked_bytecode_for_every_module(tmp_path: Path) -> None:
    # Lambda cannot write .pyc files to /opt: without them every cold start compiles the layer.
    # (The dependencies step needs the package index; the rest of the build runs here.)
    built = subprocess.run(["make", "-C", str(REPO / "layers/common"), "bytecode", "-o", "dependencies",
                            f"ARTIFACTS_DIR={tmp_path}", f"PYTHON={sys.executable}"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    site = tmp_path / "python"
    sources = sorted(p.relative_to(site) for p in site.rglob("*.py"))
    assert Path("s2v/config.py") in sources and Path("s2v/adapters/providers/wavespeed.py") in sources
    for source in sources:
        cache = site / source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
        header = cache.read_bytes()[:8]
        assert header[:4] == importlib.util.MAGIC_NUMBER, source
        # PEP 552 flags: 0b01 = hash-based, source not checked (zip mtimes would invalidate timestamps).
        assert int.from_bytes(header[4:8], "little") == 0b01, source
    wrong_python = subprocess.run(["make", "-C", str(REPO / "layers/common"), "source", f"ARTIFACTS_DIR={tmp_path}",
                                   "PYTHON=python3 -c 'import sys; sys.exit(1)' #"],
                                  capture_output=True, text=True, timeout=60)
    assert wrong_python.returncode != 0 and "not Python 3.11" in wrong_python.stderr


def test_tracing_is_a_parameter_off_by_default_and_the_tracer_follows_it(template: Template) -> None:
    parameter = template.raw["Parameters"]["Tracing"]
    assert parameter["Default"] == "PassThrough" and set(parameter["AllowedValues"]) == {"Active", "PassThrough"}
    globals_fn = template.raw["Globals"]["Function"]
    assert globals_fn["Tracing"] == {"Ref": "Tracing"}
    assert template.raw["Conditions"]["TracingActive"] == {"Fn::Equals": [{"Ref": "Tracing"}, "Active"]}
    # Lambda's X-Ray mode and Powertools' switch must agree, or traces are half-recorded.
    assert globals_fn["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {
        "Fn::If": ["TracingActive", "false", "true"]}
    for function in template.functions.values():
        source = (REPO / props(template, function.logical_id)["CodeUri"] / "app.py").read_text()
        assert "LazyTracer()" in source and "Tracer()" not in source.replace("LazyTracer()", ""), function.logical_id


def test_functions_run_python_3_11_on_arm64_with_the_common_layer(template: Template) -> None:
    globals_fn = template.raw["Globals"]["Function"]
    assert globals_fn["Runtime"] == "python3.11"
    assert globals_fn["Architectures"] == ["arm64"]
    assert globals_fn["Layers"] == [{"Ref": "CommonLayer"}]
    layer = template.resources["CommonLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/common"
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert "build-CommonLayer:" in (REPO / "layers/common/Makefile").read_text()
    assert (REPO / "layers/common/s2v").is_dir() and (REPO / "layers/common/requirements.txt").is_file()
    for function in template.functions.values():
        for key in ("Runtime", "Architectures"):
            assert key not in props(template, function.logical_id), f"{function.logical_id} overrides {key}"


def test_each_function_has_only_its_own_triggers(template: Template) -> None:
    kinds = {f: sorted(type(t).__name__ for t in template.function(f).triggers) for f in template.functions}
    assert kinds == {"IngestFunction": ["SqsTrigger"], "WebhookFunction": ["HttpTrigger"],
                     "PollFunction": ["ScheduleTrigger"], "DeliverFunction": ["StreamTrigger"],
                     "LongformFunction": ["StreamTrigger"]}


@pytest.mark.parametrize(("function_id", "code_uri", "memory", "timeout"), [
    ("IngestFunction", "functions/ingest/", 512, 60),
    ("WebhookFunction", "functions/webhook/", 256, 15),
    ("PollFunction", "functions/poll/", 256, 120),
    ("DeliverFunction", "functions/deliver/", 512, 900),
    ("LongformFunction", "functions/longform/", 1769, 900),
])
def test_function_code_and_size(template: Template, function_id: str, code_uri: str, memory: int,
                                timeout: int) -> None:
    function = template.function(function_id)
    assert (function.code_uri, function.handler, function.memory_size, function.timeout) == (
        code_uri, "app.handler", memory, timeout)


def test_functions_use_the_roles_written_in_the_template(template: Template) -> None:
    # Least privilege is asserted on the transformed template (test_iam_as_deployed.py); here, that no
    # function lets SAM generate a role (and attach its broad managed policies) again.
    for function in template.functions.values():
        function_props = props(template, function.logical_id)
        assert "Policies" not in function_props, function.logical_id
        role = function_props["Role"]["Fn::GetAtt"][0]
        assert template.resource_type(role) == "AWS::IAM::Role", function.logical_id
        assert "ManagedPolicyArns" not in props(template, role), role


def test_every_environment_variable_is_one_the_settings_read(template: Template) -> None:
    config = (REPO / "layers/common/s2v/config.py").read_text()
    for function in template.functions.values():
        env = resolver(template).environment(function)
        assert {"S2V_BUCKET", "S2V_JOBS_TABLE", "WAVESPEED_BASE_URL"} <= set(env)
        for name in env:
            if name.startswith(("S2V_", "WAVESPEED_")):
                assert f'"{name}"' in config, f"{function.logical_id}: {name} is not read by s2v.config"


def test_function_environments_point_at_the_right_resources(template: Template) -> None:
    env = {f: resolver(template).environment(template.function(f)) for f in template.functions}
    assert env["IngestFunction"]["S2V_WEBHOOK_BASE_URL"] == "https://API.execute-api.us-east-1.amazonaws.com"
    assert env["IngestFunction"]["WAVESPEED_API_KEY_SECRET_ID"] == "SECRET:ApiKey"
    assert env["PollFunction"]["S2V_WEBHOOK_TOKEN_SECRET_ID"] == "SECRET:WebhookToken"
    # Orphaned RECEIVED jobs go back through the ingest queue, to be validated by ingest.
    assert env["PollFunction"]["S2V_INGEST_QUEUE_URL"] == env["IngestFunction"]["S2V_INGEST_QUEUE_URL"]
    assert env["WebhookFunction"]["WAVESPEED_WEBHOOK_SECRET_ID"] == "SECRET:WebhookSigning"
    assert env["DeliverFunction"]["S2V_OUTPUT_ALLOWED_HOSTS"] == "*.wavespeed.ai,d1q70pf5vjeyhc.cloudfront.net"
    assert env["DeliverFunction"]["S2V_EVENT_BUS"] == "default"
    overridden = resolver(template, DefaultResolution="720p", MaxInFlightJobs="4").environment(
        template.function("IngestFunction"))
    assert (overridden["S2V_DEFAULT_RESOLUTION"], overridden["S2V_MAX_IN_FLIGHT_JOBS"]) == ("720p", "4")
    for function_id in ("IngestFunction", "PollFunction", "WebhookFunction"):
        assert "WAVESPEED_API_KEY" not in env[function_id]  # the key itself comes from Secrets Manager


def test_audio_limits_admit_ten_minutes_of_studio_quality_wav(template: Template) -> None:
    from s2v.config import DEFAULT_MAX_AUDIO_BYTES, DEFAULT_MAX_AUDIO_SECONDS

    # The provider renders up to 10 minutes per call; 10 min of 48 kHz 16-bit stereo PCM is ~115 MB.
    seconds = template.raw["Parameters"]["MaxAudioSeconds"]
    assert (seconds["Default"], seconds["MinValue"], seconds["MaxValue"]) == (600, 1, 600) == (
        DEFAULT_MAX_AUDIO_SECONDS, 1, DEFAULT_MAX_AUDIO_SECONDS)
    assert template.raw["Parameters"]["MaxAudioBytes"]["Default"] == DEFAULT_MAX_AUDIO_BYTES
    ten_minute_wav = 44 + 600 * 48_000 * 2 * 2
    for function_id in ("IngestFunction", "PollFunction"):
        env = resolver(template).environment(template.function(function_id))
        assert float(env["S2V_MAX_AUDIO_SECONDS"]) == 600, function_id
        assert int(env["S2V_MAX_AUDIO_BYTES"]) == 200 * 1024 * 1024 >= ten_minute_wav, function_id


def test_the_incomplete_set_wait_is_a_parameter_the_ingest_and_the_poller_both_read(template: Template) -> None:
    from s2v.config import Settings

    parameter = template.raw["Parameters"]["IncompleteSetWaitSeconds"]
    default = Settings.__dataclass_fields__["incomplete_set_wait_seconds"].default
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", default, 60)
    # The ingest starts a set's wait, the poller ends it: both must read the same value.
    for function_id in ("IngestFunction", "PollFunction"):
        env = resolver(template).environment(template.function(function_id))
        assert int(env["S2V_INCOMPLETE_SET_WAIT_SECONDS"]) == 900, function_id
        changed = resolver(template, IncompleteSetWaitSeconds="120").environment(template.function(function_id))
        assert changed["S2V_INCOMPLETE_SET_WAIT_SECONDS"] == "120", function_id


def test_output_hosts_name_the_providers_cdn_exactly(template: Template) -> None:
    from s2v.adapters.delivery import host_allowed
    from s2v.config import DEFAULT_OUTPUT_HOSTS

    hosts = resolver(template).environment(template.function("DeliverFunction"))["S2V_OUTPUT_ALLOWED_HOSTS"]
    patterns_ = [h.strip() for h in hosts.split(",")]
    assert patterns_ == list(DEFAULT_OUTPUT_HOSTS)
    assert "*.cloudfront.net" not in patterns_  # any CloudFront customer could serve a "result" from there
    assert host_allowed("d1q70pf5vjeyhc.cloudfront.net", patterns_)
    assert host_allowed("cdn.wavespeed.ai", patterns_)
    assert not host_allowed("d111111abcdef8.cloudfront.net", patterns_)
    assert "cloudfront" in template.raw["Parameters"]["OutputAllowedHosts"]["Description"]


def test_the_public_webhook_has_reserved_concurrency_that_zero_turns_off(template: Template) -> None:
    parameter = template.raw["Parameters"]["WebhookReservedConcurrency"]
    assert (parameter["Default"], parameter["MinValue"]) == (10, 0)
    reserved = props(template, "WebhookFunction")["ReservedConcurrentExecutions"]
    assert resolver(template).value(reserved) == "10"
    assert resolver(template, WebhookReservedConcurrency="0").value(reserved) is None
    for function_id in ("IngestFunction", "PollFunction", "DeliverFunction"):
        assert "ReservedConcurrentExecutions" not in props(template, function_id), function_id


def test_failed_scheduled_polls_are_dead_lettered_and_alarmed(template: Template) -> None:
    dead_letter = props(template, "PollFunction")["DeadLetterQueue"]
    assert (dead_letter["Type"], resolver(template).value(dead_letter["TargetArn"])) == ("SQS", "QUEUE:PollDLQ")
    alarm = resolver(template).value(props(template, "PollDLQAlarm"))
    assert (alarm["Namespace"], alarm["Dimensions"]) == ("AWS/SQS", [{"Name": "QueueName", "Value": "PollDLQ"}])


def test_every_checkov_suppression_names_a_check_and_says_why(template: Template) -> None:
    # `make lint` fails on any finding not suppressed here, one resource and one reason at a time.
    skips = {(lid, s["id"]): s.get("comment", "") for lid, r in template.resources.items()
             for s in (r.get("Metadata") or {}).get("checkov", {}).get("skip", [])}
    assert skips
    for (logical_id, check), comment in skips.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check), (logical_id, check)
        assert 20 <= len(comment) <= 110 and "\n" not in comment, (logical_id, check)
    # Fixed, not suppressed: the webhook's concurrency and the poller's dead-letter queue.
    assert ("WebhookFunction", "CKV_AWS_115") not in skips and ("PollFunction", "CKV_AWS_116") not in skips


# ---------------------------------------------------------------------------- triggers

def test_ingest_reads_the_queue_in_batches_and_reports_partial_failures(template: Template) -> None:
    [trigger] = template.function("IngestFunction").triggers_of(SqsTrigger)
    assert trigger.queue == "IngestQueue"
    assert (trigger.batch_size, trigger.batching_window_seconds) == (10, 1.0)
    assert trigger.report_batch_item_failures
    assert trigger.max_concurrency is not None and trigger.max_concurrency <= 5


def test_webhook_route_and_throttling(template: Template) -> None:
    [trigger] = template.function("WebhookFunction").triggers_of(HttpTrigger)
    assert (trigger.api, trigger.route_key, trigger.payload_version) == ("HttpApi", "POST /webhook/{job_id}", "2.0")
    assert trigger.match("POST", "/webhook/abc123") == {"job_id": "abc123"}
    throttling = props(template, "HttpApi")["DefaultRouteSettings"]
    assert 0 < throttling["ThrottlingBurstLimit"] <= 100 and 0 < throttling["ThrottlingRateLimit"] <= 50


def test_poll_runs_every_minute(template: Template) -> None:
    [trigger] = template.function("PollFunction").triggers_of(ScheduleTrigger)
    assert (trigger.expression, trigger.interval_seconds, trigger.enabled) == ("rate(1 minute)", 60.0, True)


def test_a_slot_freed_while_a_job_waits_wakes_the_release_of_queued_jobs(template: Template) -> None:
    from s2v.flows import stream
    from s2v.model.jobs import TRANSITIONS, Status

    # The deliver function's mapping is the stream's router (flows/stream.py): what passes its filter
    # and the routing table together decide what a change wakes.
    [trigger] = template.function("DeliverFunction").triggers_of(StreamTrigger)

    def guard(old: int, new: int, queued_at: float | None) -> dict[str, Any]:
        image = {"in_flight": {"N": str(new)}, **({"queued_at": {"N": str(queued_at)}} if queued_at else {})}
        return {"eventName": "MODIFY", "dynamodb": {"Keys": {"job_id": {"S": "#guard"}}, "NewImage": image,
                                                    "OldImage": {"in_flight": {"N": str(old)}}}}

    def wakes(record: dict[str, Any]) -> tuple[str, ...]:
        if not patterns.matches_any(trigger.filter_patterns, record):
            return ()
        change = stream.guard_change_of(record) or stream.change_of(record)
        return stream.wakes(change) if change is not None else ()

    # A slot freed (the in-flight count went down) while a job waits: release; otherwise nothing.
    assert wakes(guard(3, 2, 1.7e9)) == (stream.RELEASE_FREED_SLOT,)
    assert wakes(guard(2, 3, 1.7e9)) == ()  # an admission
    assert wakes(guard(3, 2, None)) == ()  # none waits: no query for queued jobs
    assert not patterns.matches_any(trigger.filter_patterns, guard(3, 2, None))

    def job(old: Status, new: Status) -> dict[str, Any]:
        return {"eventName": "MODIFY", "dynamodb": {"Keys": {"job_id": {"S": "j1"}},
                                                    "OldImage": {"status": {"S": str(old)}},
                                                    "NewImage": {"status": {"S": str(new)}}}}

    # Every change to an ended status is delivered or reported, whatever it came from; nothing else.
    delivering = {(old, new) for (old, _), new in TRANSITIONS.items() if stream.DELIVER in wakes(job(old, new))}
    assert delivering == {(old, new) for (old, _), new in TRANSITIONS.items()
                          if new in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)}
    assert not any(stream.RELEASE_FREED_SLOT in wakes(job(old, new)) for (old, _), new in TRANSITIONS.items())
    assert stream.change_of(guard(1, 0, None)) is None


def test_deliver_gets_only_finished_jobs_from_the_stream_with_retries_and_a_dead_letter_queue(
        template: Template) -> None:
    [trigger] = template.function("DeliverFunction").triggers_of(StreamTrigger)
    assert (trigger.table, trigger.starting_position, trigger.batch_size) == ("JobsTable", "LATEST", 1)
    assert (trigger.max_retries, trigger.bisect_on_error, trigger.on_failure_queue) == (3, True, "DeliverDLQ")
    # One delivery at a time per shard would drain a burst at one download + upload after another.
    assert trigger.parallelization_factor == 10

    def record(status: str) -> dict[str, Any]:
        return {"eventName": "MODIFY", "dynamodb": {"NewImage": {"status": {"S": status}}}}

    from s2v.model.jobs import Status

    passing = [str(s) for s in Status if patterns.matches_any(trigger.filter_patterns, record(str(s)))]
    # A video to copy, a failure to report, a cancel to record under outputs/ (the CLI writes it too).
    assert passing == ["COMPLETED", "FAILED", "CANCELLED"]
    # Spend-guard counters in the same table have no status and must not wake deliver.
    assert not patterns.matches_any(trigger.filter_patterns, {"dynamodb": {"NewImage": {"in_flight": {"N": "1"}}}})


# ---------------------------------------------------------------------------- notifications and alarms

ALARMS = ("IngestDLQAlarm", "DeliverDLQAlarm", "PollDLQAlarm", "JobsFailedAlarm", "JobsStuckAlarm", "IngestErrorsAlarm",
          "WebhookErrorsAlarm", "PollErrorsAlarm", "DeliverErrorsAlarm")


def test_alarms_watch_dead_letters_failed_and_stuck_jobs_and_function_errors(template: Template) -> None:
    alarms = {a: resolver(template).value(props(template, a)) for a in ALARMS}
    assert {a["Dimensions"][0]["Value"] for a in alarms.values() if a["Namespace"] == "AWS/SQS"} == {
        "IngestDLQ", "DeliverDLQ", "PollDLQ"}
    # Powertools metrics carry a "service" dimension; an alarm without it would never fire.
    assert {(a["MetricName"], a["Dimensions"][0]["Name"], a["Dimensions"][0]["Value"]) for a in alarms.values()
            if a["Namespace"] == "s2v"} == {("JobsFailed", "service", "s2v"), ("JobsStuck", "service", "s2v")}
    assert {a["Dimensions"][0]["Value"] for a in alarms.values() if a["Namespace"] == "AWS/Lambda"} == {
        "FN:Ingest", "FN:Webhook", "FN:Poll", "FN:Deliver"}
    for alarm in alarms.values():
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert template.raw["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "s2v"
    assert template.raw["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "s2v"


def test_email_notifications_exist_only_when_an_address_is_given(template: Template) -> None:
    for logical_id in ("AlertsTopic", "AlertsSubscription", "AlertsTopicPolicy", "JobEventsRule"):
        assert template.resources[logical_id]["Condition"] == "HasNotificationEmail"
    assert resolver(template).condition("HasNotificationEmail") is False
    assert resolver(template, NotificationEmail="ops@example.com").condition("HasNotificationEmail") is True
    actions = props(template, "JobsFailedAlarm")["AlarmActions"]
    assert resolver(template).value(actions) is None
    assert resolver(template, NotificationEmail="ops@example.com").value(actions) == ["TOPIC"]

    rule = props(template, "JobEventsRule")
    from s2v.adapters.notify import (
        BALANCE_LOW,
        BATCH_FINISHED,
        BUDGET_REACHED,
        JOB_CANCELLED,
        JOB_FAILED,
        VIDEO_DELIVERED,
    )

    assert rule["EventPattern"]["source"] == ["s2v"]
    # Every event the code publishes reaches the e-mail topic.
    assert set(rule["EventPattern"]["detail-type"]) == {VIDEO_DELIVERED, JOB_FAILED, JOB_CANCELLED, BUDGET_REACHED,
                                                        BALANCE_LOW, BATCH_FINISHED}
    grants = resolver(template, NotificationEmail="ops@example.com").value(props(template, "AlertsTopicPolicy"))
    principals = {s["Principal"]["Service"] for s in grants["PolicyDocument"]["Statement"]}
    assert principals == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}


def test_outputs_tell_the_user_where_things_are(template: Template) -> None:
    outputs = resolver(template).value(template.raw["Outputs"])
    assert {"BucketName", "WebhookUrl", "JobsTableName", "ApiKeySecretArn", "IngestDLQUrl", "DeliverDLQUrl",
            "PollDLQUrl", "StackRegion"} <= set(outputs)
    assert outputs["BucketName"]["Value"] == "BUCKET"
    assert outputs["WebhookUrl"]["Value"] == "https://API.execute-api.us-east-1.amazonaws.com/webhook"
    assert outputs["ApiKeySecretArn"]["Value"] == "SECRET:ApiKey"
    assert outputs["DashboardUrl"]["Value"].endswith("region=us-east-1#dashboards:name=DASHBOARD")


# ---------------------------------------------------------------------------- the loader itself

def test_the_loader_reads_short_form_tags_and_keeps_dates_as_text(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        'AWSTemplateFormatVersion: 2010-09-09\n'
        'Parameters: {Env: {Type: String, Default: dev}}\n'
        'Conditions: {IsProd: !Equals [!Ref Env, prod]}\n'
        'Resources:\n'
        '  Q: {Type: "AWS::SQS::Queue", Properties: {QueueName: !Sub "${AWS::StackName}-${Env}-q"}}\n'
        'Outputs:\n'
        '  A: {Value: !Sub "${!Literal}-${Q.Arn}"}\n'
        '  B: {Value: !Join ["/", [!Select [1, !Split [",", "a,b,c"]], !If [IsProd, p, !Ref AWS::NoValue]]]}\n'
        '  C: {Value: !GetAtt Q.QueueName}\n')
    template = load(path)
    r = Resolver(template, physical={"Q.Arn": "arn:q", "Q.QueueName": "q-name"})

    assert template.raw["AWSTemplateFormatVersion"] == "2010-09-09"
    assert r.text(template.queues["Q"].name) == "s2v-local-dev-q"
    assert r.text(template.raw["Outputs"]["A"]["Value"]) == "${Literal}-arn:q"
    assert r.text(template.raw["Outputs"]["B"]["Value"]) == "b"
    assert r.text(template.raw["Outputs"]["C"]["Value"]) == "q-name"
    assert Resolver(template, parameters={"Env": "prod"}).condition("IsProd") is True


def test_the_poller_knows_its_own_schedule(template: Template) -> None:
    # It checks jobs due before the midpoint to its next run; a stale period would skew that.
    poller = template.function("PollFunction")
    [schedule] = poller.triggers_of(ScheduleTrigger)
    assert int(poller.environment["S2V_POLL_SCHEDULE_SECONDS"]) == schedule.interval_seconds


def _dashboard_widgets(template: Template) -> list[dict[str, Any]]:
    text, variables = props(template, "OperationsDashboard")["DashboardBody"]["Fn::Sub"]
    known = set(variables) | set(template.resources) | {"AWS::Region"}
    named = re.findall(r"\$\{([^}]+)\}", text)
    assert set(named) <= known, set(named) - known
    return json.loads(re.sub(r"\$\{([^}]+)\}", lambda m: m.group(1), text))["widgets"]


def test_the_cloudwatch_dashboard_plots_only_metrics_the_handlers_emit(template: Template) -> None:
    # Given the dashboard body as deployed (names substituted)
    widgets = _dashboard_widgets(template)
    plotted = {tuple(m[:2]) for w in widgets if w["type"] == "metric" for m in w["properties"]["metrics"]}
    # When the handlers' metric names are read from their source
    emitted = set()
    for handler in (REPO / "functions").glob("*/app.py"):
        emitted |= set(re.findall(r'add_metric\(name="(\w+)"', handler.read_text()))
    # Then every s2v metric plotted is emitted somewhere, and every emitted one is plotted
    ours = {name for namespace, name in plotted if namespace == "s2v"}
    assert ours == emitted
    assert {"JobsSubmitted", "JobsDelivered", "JobsFailed", "JobsStuck", "RenderSeconds", "EstimatedSpendUSD"} <= ours
    # Queues, every function's errors and durations, and the latest failures from every log group
    assert {n for ns, n in plotted if ns == "AWS/Lambda"} == {"Errors", "Duration"}
    queues = {m[3] for w in widgets if w["type"] == "metric" for m in w["properties"]["metrics"] if m[0] == "AWS/SQS"}
    assert queues == {"IngestQueueName", "IngestDLQName", "DeliverDLQName", "PollDLQName", "LongformDLQName"}
    functions = {m[3] for w in widgets if w["type"] == "metric" for m in w["properties"]["metrics"]
                 if m[0] == "AWS/Lambda"}
    assert functions == {"IngestFunction", "WebhookFunction", "PollFunction", "DeliverFunction", "LongformFunction"}
    [logs] = [w for w in widgets if w["type"] == "log"]
    assert set(re.findall(r"SOURCE '(\w+)'", logs["properties"]["query"])) == {
        "IngestLogGroup", "WebhookLogGroup", "PollLogGroup", "DeliverLogGroup", "LongformLogGroup"}
