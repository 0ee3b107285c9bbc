"""template.yaml as CloudFormation deploys it: transformed by samtranslator, the library the SAM CLI uses.

SAM adds to what the template says: execution roles, managed policies for event sources, X-Ray
policies, destination grants. Least privilege is only worth asserting on what is really deployed,
so the IAM tests read the transformed template and expand each managed policy it attaches.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2v_local.template import Pseudo, Resolver, Template, load, load_yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
ARTIFACTS = "s3://s2v-artifacts/"  # what `sam package` puts in place of local CodeUri/ContentUri

# Symbolic names, so resolved ARNs read as what they point to.
BUCKET_ARN = "arn:aws:s3:::BUCKET"
TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/JOBS"
STREAM_ARN = f"{TABLE_ARN}/stream/1"
DEFAULT_BUS = "arn:aws:events:us-east-1:123456789012:event-bus/default"
FUNCTIONS = ("Ingest", "Webhook", "Poll", "Deliver", "Longform")
SYMBOLS = {
    "MediaBucket": "BUCKET", "MediaBucket.Arn": BUCKET_ARN,
    "JobsTable": "JOBS", "JobsTable.Arn": TABLE_ARN, "JobsTable.StreamArn": STREAM_ARN,
    "ApiKeySecret": "SECRET:ApiKey", "WebhookTokenSecret": "SECRET:WebhookToken",
    "WebhookSigningSecret": "SECRET:WebhookSigning", "HttpApi": "API", "CommonLayer": "LAYER",
    "IngestQueue.Arn": "QUEUE:Ingest", "IngestDLQ.Arn": "QUEUE:IngestDLQ", "DeliverDLQ.Arn": "QUEUE:DeliverDLQ",
    "PollDLQ.Arn": "QUEUE:PollDLQ", "LongformDLQ.Arn": "QUEUE:LongformDLQ",
    "IngestQueue": "URL:Ingest", "IngestDLQ": "URL:IngestDLQ", "DeliverDLQ": "URL:DeliverDLQ", "PollDLQ": "URL:PollDLQ",
    "AlertsTopic": "TOPIC", "OperationsDashboard": "DASHBOARD",
    "IngestDLQ.QueueName": "IngestDLQ", "DeliverDLQ.QueueName": "DeliverDLQ", "PollDLQ.QueueName": "PollDLQ",
    "LongformDLQ.QueueName": "LongformDLQ",
    **{f"{name}Function": f"FN:{name}" for name in FUNCTIONS},
    **{f"{name}Function.Arn": f"FNARN:{name}" for name in FUNCTIONS},
    **{f"{name}Role.Arn": f"ROLE:{name}" for name in FUNCTIONS},
    **{f"{name}LogGroup": f"LOGS:{name}" for name in FUNCTIONS},
    # !GetAtt LogGroup.Arn ends in ":*", which covers the group's log streams.
    **{f"{name}LogGroup.Arn": f"LOGS:{name}:*" for name in FUNCTIONS},
    "JobEventsRule.Arn": "RULE", "HttpApiAccessLogs.Arn": "LOGS:HttpApi",
}

# What the AWS managed policies SAM may attach grant (as AWS documents them; all on "*").
_LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
_XRAY = ("xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
         "xray:GetSamplingStatisticSummaries")
MANAGED_POLICIES: dict[str, tuple[str, ...]] = {
    "service-role/AWSLambdaBasicExecutionRole": _LOGS,
    "service-role/AWSLambdaSQSQueueExecutionRole": (
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS),
    "service-role/AWSLambdaDynamoDBExecutionRole": (
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams", *_LOGS),
    "AWSXrayWriteOnlyAccess": _XRAY,
    "AWSXRayDaemonWriteAccess": _XRAY,
}


class _NoManagedPolicyNames:
    """samtranslator's ManagedPolicyLoader asks IAM for names used in Policies; this template uses none."""

    def load(self) -> dict[str, str]:
        return {}


def transform(**parameters: str) -> dict[str, Any]:
    """The CloudFormation template SAM deploys for these parameter values (defaults for the rest)."""
    from samtranslator.translator.transform import transform as sam_transform

    raw = copy.deepcopy(load_yaml(TEMPLATE))
    for resource in raw["Resources"].values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = ARTIFACTS + props[key].strip("/")
    pseudo = Pseudo()
    values = {"AWS::Region": pseudo.region, "AWS::AccountId": pseudo.account_id, "AWS::Partition": pseudo.partition,
              **parameters}
    previous = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = pseudo.region  # samtranslator asks a boto3 session for the region
    try:
        return sam_transform(raw, values, _NoManagedPolicyNames())  # type: ignore[arg-type]
    finally:
        if previous is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous


@dataclass(frozen=True)
class Grant:
    role: str  # logical id of the role
    source: str  # "inline:<PolicyName>" or "managed:<name>"
    action: str
    resource: str
    condition: Mapping[str, Any] | None


@dataclass(frozen=True)
class Deployed:
    """A transformed template with its intrinsics resolved against symbolic physical names."""

    cfn: Mapping[str, Any]
    template: Template
    resolver: Resolver

    @classmethod
    def build(cls, workdir: Path, **parameters: str) -> Deployed:
        cfn = transform(**parameters)
        path = workdir / "deployed.json"
        path.write_text(json.dumps(cfn, indent=1))
        template = load(path)
        return cls(cfn=cfn, template=template,
                   resolver=Resolver(template, parameters=parameters, physical=SYMBOLS))

    @property
    def resources(self) -> Mapping[str, Any]:
        return self.cfn["Resources"]

    def of_type(self, kind: str) -> dict[str, Mapping[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == kind
                and ("Condition" not in r or self.resolver.condition(r["Condition"]))}

    def role_of(self, function_id: str) -> str:
        role = self.resources[function_id]["Properties"]["Role"]
        assert set(role) == {"Fn::GetAtt"} and role["Fn::GetAtt"][1] == "Arn", (function_id, role)
        return str(role["Fn::GetAtt"][0])

    def managed_policies(self, role_id: str) -> list[str]:
        arns = self.resolver.value(self.resources[role_id]["Properties"].get("ManagedPolicyArns") or [])
        return [str(arn).split(":policy/", 1)[1] for arn in arns]

    def grants(self, role_id: str) -> Iterator[Grant]:
        """Every (action, resource) the role is allowed, from inline, attached and managed policies."""
        props = self.resolver.value(self.resources[role_id]["Properties"])
        documents = [(f"inline:{p['PolicyName']}", p["PolicyDocument"]) for p in props.get("Policies") or []]
        for lid, policy in self.of_type("AWS::IAM::Policy").items():
            if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                documents.append((f"inline:{lid}", self.resolver.value(policy["Properties"]["PolicyDocument"])))
        for source, document in documents:
            for statement in as_list(document["Statement"]):
                assert statement["Effect"] == "Allow", (role_id, statement)
                assert "NotAction" not in statement and "NotResource" not in statement, (role_id, statement)
                for action in as_list(statement["Action"]):
                    for resource in as_list(statement["Resource"]):
                        yield Grant(role_id, source, action, resource, statement.get("Condition"))
        for name in self.managed_policies(role_id):
            assert name in MANAGED_POLICIES, f"{role_id}: unknown managed policy {name}; add what it grants"
            for action in MANAGED_POLICIES[name]:
                yield Grant(role_id, f"managed:{name}", action, "*", None)

    def granted(self, function_id: str) -> dict[str, set[str]]:
        actions: dict[str, set[str]] = {}
        for grant in self.grants(self.role_of(function_id)):
            actions.setdefault(grant.action, set()).add(grant.resource)
        return actions


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
