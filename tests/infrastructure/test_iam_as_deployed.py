"""Least privilege as deployed: every role in the CloudFormation SAM produces, managed policies included."""

from __future__ import annotations

from collections import Counter

import pytest
from deployed import BUCKET_ARN, DEFAULT_BUS, STREAM_ARN, TABLE_ARN, Deployed, as_list

TABLE_AND_INDEX = {TABLE_ARN, f"{TABLE_ARN}/index/due-index"}
REPORTS = f"{BUCKET_ARN}/outputs/*.report.json"  # batch reports: the only outputs ingest and poll write
MANIFESTS = {f"{BUCKET_ARN}/inputs/*.batch.json", f"{BUCKET_ARN}/inputs/*.batch.csv"}
STREAM_READ = ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator")
# IAM has no resource type for these: they can only be granted on "*". ListStreams lists stream ARNs (no data);
# Lambda's stream poller needs it beside the stream actions. X-Ray's write APIs take no resource at all.
UNSCOPABLE = {"dynamodb:ListStreams", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def logs(name: str) -> dict[str, set[str]]:
    # Into its own log group only; the groups are template resources, so no CreateLogGroup.
    return {a: {f"LOGS:{name}:*"} for a in ("logs:CreateLogStream", "logs:PutLogEvents")}


def stream_reader(on_failure_queue: str) -> dict[str, set[str]]:
    return {**{a: {STREAM_ARN} for a in STREAM_READ}, "dynamodb:ListStreams": {"*"},
            "sqs:SendMessage": {on_failure_queue}}


# Every action each function may have, on exactly these resources. Nothing else.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "IngestFunction": {
        **logs("Ingest"),
        # The SQS event source mapping polls with the function's role.
        # ... and a manifest's rows are fanned out to the same queue.
        **{f"sqs:{a}": {"QUEUE:Ingest"} for a in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes",
                                                  "SendMessage")},
        "s3:GetObject": {f"{BUCKET_ARN}/inputs/*"},
        # Validation reads one version of each input, and the provider is handed that version.
        "s3:GetObjectVersion": {f"{BUCKET_ARN}/inputs/*"},
        "s3:ListBucket": {BUCKET_ARN},
        "s3:PutObject": {REPORTS},
        **{f"dynamodb:{a}": TABLE_AND_INDEX for a in ("GetItem", "PutItem", "UpdateItem", "Query")},
        "dynamodb:BatchGetItem": {TABLE_ARN},
        "secretsmanager:GetSecretValue": {"SECRET:ApiKey", "SECRET:WebhookToken"},
        "events:PutEvents": {DEFAULT_BUS},
    },
    "WebhookFunction": {
        **logs("Webhook"),
        **{f"dynamodb:{a}": {TABLE_ARN} for a in ("GetItem", "PutItem", "UpdateItem")},
        "secretsmanager:GetSecretValue": {"SECRET:ApiKey", "SECRET:WebhookToken", "SECRET:WebhookSigning"},
        "secretsmanager:PutSecretValue": {"SECRET:WebhookSigning"},
    },
    "PollFunction": {
        **logs("Poll"),
        # Failed scheduled runs go to its dead-letter queue; orphaned RECEIVED jobs go back through the
        # ingest queue (validated there, never here). No stream reads: the deliver function routes freed
        # slots to the release of queued jobs.
        "sqs:SendMessage": {"QUEUE:PollDLQ", "QUEUE:Ingest"},
        # Queued jobs are submitted with presigned input URLs: a long talk's segments are cut under work/.
        "s3:GetObject": {f"{BUCKET_ARN}/inputs/*", f"{BUCKET_ARN}/work/*"},
        "s3:GetObjectVersion": {f"{BUCKET_ARN}/inputs/*"},
        # Lists a two-speaker set still missing a track when its wait ends (inputs/ only).
        "s3:ListBucket": {BUCKET_ARN},
        "s3:PutObject": {REPORTS},
        **{f"dynamodb:{a}": TABLE_AND_INDEX for a in ("GetItem", "PutItem", "UpdateItem", "Query")},
        "dynamodb:BatchGetItem": {TABLE_ARN},
        "secretsmanager:GetSecretValue": {"SECRET:ApiKey", "SECRET:WebhookToken"},
        "events:PutEvents": {DEFAULT_BUS},
    },
    "DeliverFunction": {
        **logs("Deliver"),
        **stream_reader("QUEUE:DeliverDLQ"),
        # A long talk's segments are delivered under work/, for the long-form function to stitch.
        **{a: {f"{BUCKET_ARN}/outputs/*", f"{BUCKET_ARN}/work/*"} for a in (
            "s3:PutObject", "s3:PutObjectTagging", "s3:GetObjectTagging", "s3:AbortMultipartUpload",
            "s3:DeleteObject")},
        # Its own outputs (a talk's segments under work/); inputs/: a released queued job's presigned input
        # URLs, and the manifests whose batch reports it rewrites.
        "s3:GetObject": {f"{BUCKET_ARN}/outputs/*", f"{BUCKET_ARN}/work/*", f"{BUCKET_ARN}/inputs/*"},
        "s3:ListBucket": {BUCKET_ARN},
        # The stream's router also releases queued jobs into a freed slot (submits them, as the poller does).
        **{f"dynamodb:{a}": TABLE_AND_INDEX for a in ("GetItem", "PutItem", "UpdateItem", "Query")},
        "dynamodb:BatchGetItem": {TABLE_ARN},
        "secretsmanager:GetSecretValue": {"SECRET:ApiKey", "SECRET:WebhookToken"},
        "events:PutEvents": {DEFAULT_BUS},
    },
    "LongformFunction": {
        **logs("Longform"),
        **stream_reader("QUEUE:LongformDLQ"),
        # Reads the talk (never writes inputs/); cuts segments into work/ and stitches into outputs/.
        "s3:GetObject": {f"{BUCKET_ARN}/inputs/*", f"{BUCKET_ARN}/work/*", f"{BUCKET_ARN}/outputs/*"},
        "s3:GetObjectVersion": {f"{BUCKET_ARN}/inputs/*"},
        "s3:PutObject": {f"{BUCKET_ARN}/work/*", f"{BUCKET_ARN}/outputs/*"},
        # The stitched video is staged under work/, then placed (and stale markers moved aside) by
        # s2v.flows.outputs: copies keep tags, deletes are If-Match on what was read.
        **{a: {f"{BUCKET_ARN}/work/*", f"{BUCKET_ARN}/outputs/*"} for a in (
            "s3:AbortMultipartUpload", "s3:PutObjectTagging", "s3:GetObjectTagging", "s3:DeleteObject")},
        "s3:ListBucket": {BUCKET_ARN},
        # Creates segment jobs and submits them as ingest submits any job.
        **{f"dynamodb:{a}": TABLE_AND_INDEX for a in ("GetItem", "PutItem", "UpdateItem", "Query")},
        "secretsmanager:GetSecretValue": {"SECRET:ApiKey", "SECRET:WebhookToken"},
        "events:PutEvents": {DEFAULT_BUS},
    },
}
THIS_STACKS_QUEUES = {"QUEUE:Ingest", "QUEUE:IngestDLQ", "QUEUE:DeliverDLQ", "QUEUE:PollDLQ", "QUEUE:LongformDLQ"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    return Deployed.build(tmp_path_factory.mktemp("sam"))


@pytest.fixture(scope="module")
def deployed_traced(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    return Deployed.build(tmp_path_factory.mktemp("sam-traced"), Tracing="Active", NotificationEmail="ops@example.com")


def test_sam_deploys_exactly_these_functions_each_with_a_role_of_its_own(deployed: Deployed) -> None:
    functions = deployed.of_type("AWS::Lambda::Function")
    assert set(functions) == set(EXPECTED)
    roles = [deployed.role_of(f) for f in functions]
    assert len(set(roles)) == len(roles)
    for role in roles:
        trust = deployed.resolver.value(deployed.resources[role]["Properties"]["AssumeRolePolicyDocument"])
        [statement] = trust["Statement"]
        assert set(statement["Principal"]) == {"Service"}
        assert as_list(statement["Principal"]["Service"]) == ["lambda.amazonaws.com"], role
        assert (statement["Effect"], as_list(statement["Action"]), statement.get("Condition")) == (
            "Allow", ["sts:AssumeRole"], None)


@pytest.mark.parametrize("function_id", sorted(EXPECTED))
def test_each_function_has_exactly_the_permissions_it_needs_as_deployed(deployed: Deployed, function_id: str) -> None:
    assert deployed.granted(function_id) == EXPECTED[function_id]


def test_no_managed_policy_is_attached_to_any_role(deployed: Deployed, deployed_traced: Deployed) -> None:
    # SAM attaches AWSLambdaDynamoDBExecutionRole / AWSLambdaSQSQueueExecutionRole (every stream and queue in
    # the account) to the roles it generates for stream and queue triggers; ours grant their own, scoped.
    for stack in (deployed, deployed_traced):
        attached = {role: stack.managed_policies(role) for role in stack.of_type("AWS::IAM::Role")}
        assert attached == {role: [] for role in attached}


def test_no_role_reaches_a_table_stream_or_queue_outside_this_stack(deployed: Deployed,
                                                                     deployed_traced: Deployed) -> None:
    ours = TABLE_AND_INDEX | {STREAM_ARN} | THIS_STACKS_QUEUES
    for stack in (deployed, deployed_traced):
        for role in stack.of_type("AWS::IAM::Role"):
            for grant in stack.grants(role):
                if grant.action.split(":")[0] in ("dynamodb", "sqs") and grant.action not in UNSCOPABLE:
                    assert grant.resource in ours, grant


def test_the_only_wildcards_are_actions_iam_cannot_scope(deployed: Deployed, deployed_traced: Deployed) -> None:
    for stack in (deployed, deployed_traced):
        for role in stack.of_type("AWS::IAM::Role"):
            for grant in stack.grants(role):
                assert "*" not in grant.action, grant
                if grant.resource == "*":
                    assert grant.action in UNSCOPABLE, grant


def test_x_ray_may_be_written_only_when_tracing_is_active(deployed: Deployed, deployed_traced: Deployed) -> None:
    xray = {"xray:PutTraceSegments": {"*"}, "xray:PutTelemetryRecords": {"*"}}
    for function_id in EXPECTED:
        assert deployed_traced.granted(function_id) == {**EXPECTED[function_id], **xray}, function_id
        assert not [a for a in deployed.granted(function_id) if a.startswith("xray:")], function_id


def test_s3_access_is_scoped_to_the_right_prefix(deployed: Deployed) -> None:
    # Ingest and poll read inputs (poll: a talk's segment audio too) and write only batch reports; deliver
    # only reads inputs/ (a released queued job's presigned URLs, manifests); the long-form function reads
    # inputs/ and writes only work/ and outputs/.
    for function_id, prefixes in (("IngestFunction", ["inputs/*"]), ("PollFunction", ["inputs/*", "work/*"]),
                                  ("DeliverFunction", ["outputs/*", "work/*"]),
                                  ("LongformFunction", ["inputs/*", "outputs/*", "work/*"])):
        for grant in deployed.grants(deployed.role_of(function_id)):
            if grant.action == "s3:ListBucket":
                assert grant.resource == BUCKET_ARN
                listed = grant.condition["StringLike"]["s3:prefix"]
                assert set(as_list(listed)) <= set(prefixes), function_id
            elif grant.action == "s3:PutObject" and function_id in ("IngestFunction", "PollFunction"):
                assert grant.resource == REPORTS, function_id  # a batch report, never a video or an input
            elif grant.action == "s3:GetObject" and function_id == "DeliverFunction":
                assert grant.resource in {*(f"{BUCKET_ARN}/{p}" for p in prefixes), f"{BUCKET_ARN}/inputs/*"}, grant
            elif grant.action.startswith("s3:"):
                assert grant.resource in {f"{BUCKET_ARN}/{p}" for p in prefixes}, function_id
    writes = {"s3:DeleteObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"}
    assert not writes & set(deployed.granted("IngestFunction"))
    assert not writes & set(deployed.granted("PollFunction"))
    for action in writes & set(deployed.granted("LongformFunction")):
        assert f"{BUCKET_ARN}/inputs/*" not in deployed.granted("LongformFunction")[action]
    assert not [a for a in deployed.granted("WebhookFunction") if a.startswith("s3:")]


def test_event_source_mappings_keep_their_settings_as_deployed(deployed: Deployed) -> None:
    mappings = {deployed.resolver.text(m["Properties"]["FunctionName"]): deployed.resolver.value(m["Properties"])
                for m in deployed.of_type("AWS::Lambda::EventSourceMapping").values()}
    assert set(mappings) == {"FN:Ingest", "FN:Deliver", "FN:Longform"}
    uploads, finished = mappings["FN:Ingest"], mappings["FN:Deliver"]
    assert (uploads["EventSourceArn"], uploads["BatchSize"], uploads["MaximumBatchingWindowInSeconds"],
            uploads["FunctionResponseTypes"], uploads["ScalingConfig"]) == (
        "QUEUE:Ingest", 10, 1, ["ReportBatchItemFailures"], {"MaximumConcurrency": 5})
    assert (finished["EventSourceArn"], finished["BatchSize"], finished["ParallelizationFactor"],
            finished["MaximumRetryAttempts"], finished["BisectBatchOnFunctionError"]) == (STREAM_ARN, 1, 10, 3, True)
    assert finished["DestinationConfig"] == {"OnFailure": {"Destination": "QUEUE:DeliverDLQ"}}
    assert len(finished["FilterCriteria"]["Filters"]) == 2
    talks = mappings["FN:Longform"]
    assert (talks["EventSourceArn"], talks["BatchSize"], talks["MaximumRetryAttempts"],
            talks["BisectBatchOnFunctionError"]) == (STREAM_ARN, 1, 2, True)
    assert talks["DestinationConfig"] == {"OnFailure": {"Destination": "QUEUE:LongformDLQ"}}
    assert len(talks["FilterCriteria"]["Filters"]) == 3


def test_no_stream_has_more_than_two_event_source_mappings_as_deployed(deployed: Deployed,
                                                                        deployed_traced: Deployed) -> None:
    # DynamoDB Streams throttles a shard read by more than two processes at once (LimitExceededException).
    for stack in (deployed, deployed_traced):
        readers = Counter(deployed.resolver.text(m["Properties"]["EventSourceArn"])
                          for m in stack.of_type("AWS::Lambda::EventSourceMapping").values())
        streams = {arn: n for arn, n in readers.items() if arn.startswith("STREAM") or "stream" in arn.lower()}
        assert streams and max(streams.values()) <= 2, streams

