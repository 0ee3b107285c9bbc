"""template.yaml as a small typed model: what the local stack needs to wire triggers as AWS does.

Loading keeps intrinsic functions as data (``{"Ref": ...}``, ``{"Fn::Sub": ...}``); a ``Resolver``
turns them into strings once the caller knows the local physical names (queue URLs, ARNs...).
Only the SAM and CloudFormation features this template uses are modelled; anything else raises
``TemplateError`` naming the resource, rather than being silently miswired.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from s2v_local import patterns

try:  # libyaml parses template.yaml at each stack start in a tenth of the pure-Python time
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # a PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class TemplateError(ValueError):
    """The template uses something the local stack cannot reproduce, or a reference is unknown."""


# --------------------------------------------------------------------------- loading

_SHORT_FORMS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{name: f"Fn::{name}" for name in (
        "And", "Base64", "Cidr", "Equals", "FindInMap", "GetAtt", "GetAZs", "If", "ImportValue",
        "Join", "Not", "Or", "Select", "Split", "Sub", "Transform", "ToJsonString", "Length",
    )},
}


class CfnLoader(_SafeLoader):
    """SafeLoader plus CloudFormation's short-form tags (``!Ref``, ``!Sub``, ``!GetAtt``...)."""


# CloudFormation reads 2010-09-09 as a string, not a date.
CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _short_form(function: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        if function == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {function: value}

    return construct


for _tag, _long_form in _SHORT_FORMS.items():
    CfnLoader.add_constructor(f"!{_tag}", _short_form(_long_form))


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict) or "Resources" not in document:
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return document


# --------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class SqsTrigger:
    name: str
    queue: str  # logical id
    batch_size: int
    batching_window_seconds: float
    report_batch_item_failures: bool
    max_concurrency: int | None


@dataclass(frozen=True)
class ScheduleTrigger:
    name: str
    expression: str
    interval_seconds: float | None  # None for cron(...)
    enabled: bool


@dataclass(frozen=True)
class HttpTrigger:
    name: str
    api: str | None  # logical id of the HttpApi, None for the implicit one
    method: str  # upper case, or ANY
    path: str  # e.g. /webhook/{job_id}
    payload_version: str

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when this route serves ``method path``, else None."""
        if self.method not in ("ANY", method.upper()):
            return None
        found = _route_regex(self.path).fullmatch(path)
        return None if found is None else dict(found.groupdict())


@dataclass(frozen=True)
class StreamTrigger:
    name: str
    table: str  # logical id
    starting_position: str
    batch_size: int
    max_retries: int  # -1: until the record expires
    bisect_on_error: bool
    on_failure_queue: str | None  # logical id
    filter_patterns: tuple[dict[str, Any], ...]
    parallelization_factor: int = 1  # concurrent batches per shard, by partition key


Trigger = SqsTrigger | ScheduleTrigger | HttpTrigger | StreamTrigger
T = TypeVar("T", SqsTrigger, ScheduleTrigger, HttpTrigger, StreamTrigger)


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_uri: str
    handler: str  # module.function, e.g. app.handler
    runtime: str
    timeout: int
    memory_size: int
    environment: Mapping[str, Any]  # Globals merged, intrinsics unresolved
    triggers: tuple[Trigger, ...]
    layers: tuple[Any, ...]

    @property
    def module_path(self) -> Path:
        module, _ = self.handler.rsplit(".", 1)
        return Path(self.code_uri) / (module.replace(".", "/") + ".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    def triggers_of(self, kind: type[T]) -> list[T]:
        return [t for t in self.triggers if isinstance(t, kind)]


@dataclass(frozen=True)
class Queue:
    logical_id: str
    name: Any  # QueueName as written (may hold intrinsics), or None
    delay_seconds: int
    visibility_timeout: int
    retention_seconds: int
    dead_letter_queue: str | None  # logical id
    max_receive_count: int | None


@dataclass(frozen=True)
class QueueNotification:
    queue: str  # logical id
    events: tuple[str, ...]
    prefix: str
    suffix: str


@dataclass(frozen=True)
class Bucket:
    logical_id: str
    name: Any
    encryption: tuple[dict[str, Any], ...]  # ServerSideEncryptionConfiguration rules as written
    public_access_block: Mapping[str, bool]
    ownership: str | None
    queue_notifications: tuple[QueueNotification, ...]
    versioning: str = ""  # VersioningConfiguration.Status: Enabled | Suspended | "" (never versioned)


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str | None
    projection: Mapping[str, Any]


@dataclass(frozen=True)
class Table:
    logical_id: str
    name: Any
    attribute_types: Mapping[str, str]
    hash_key: str
    range_key: str | None
    indexes: tuple[Index, ...]
    stream_view_type: str | None
    ttl_attribute: str | None
    billing_mode: str


@dataclass(frozen=True)
class Secret:
    logical_id: str
    name: Any
    description: str
    secret_string: Any  # as written, or None when generated
    generate: Mapping[str, Any] | None


@dataclass(frozen=True)
class Template:
    path: Path
    raw: Mapping[str, Any]
    functions: Mapping[str, Function]
    queues: Mapping[str, Queue]
    buckets: Mapping[str, Bucket]
    tables: Mapping[str, Table]
    secrets: Mapping[str, Secret]
    http_apis: tuple[str, ...]
    parameter_defaults: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def resources(self) -> Mapping[str, Any]:
        return self.raw["Resources"]

    def resource_type(self, logical_id: str) -> str:
        return str(self.resources[logical_id]["Type"])

    def function(self, logical_id: str) -> Function:
        try:
            return self.functions[logical_id]
        except KeyError:
            raise TemplateError(f"no function {logical_id!r} in {self.path.name}; "
                                f"functions: {', '.join(self.functions)}") from None


def load(path: Path) -> Template:
    raw = load_yaml(path)
    resources: Mapping[str, Any] = raw["Resources"]
    globals_fn = raw.get("Globals", {}).get("Function", {})

    def of_type(kind: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for logical_id, resource in resources.items():
            if resource.get("Type") == kind:
                yield logical_id, resource.get("Properties", {}) or {}

    return Template(
        path=path,
        raw=raw,
        functions={lid: _function(lid, props, globals_fn) for lid, props in of_type("AWS::Serverless::Function")},
        queues={lid: _queue(lid, props) for lid, props in of_type("AWS::SQS::Queue")},
        buckets={lid: _bucket(lid, props) for lid, props in of_type("AWS::S3::Bucket")},
        tables={lid: _table(lid, props) for lid, props in of_type("AWS::DynamoDB::Table")},
        secrets={lid: _secret(lid, props) for lid, props in of_type("AWS::SecretsManager::Secret")},
        http_apis=tuple(lid for lid, _ in of_type("AWS::Serverless::HttpApi")),
        parameter_defaults={
            name: None if "Default" not in spec else _scalar_text(spec["Default"])
            for name, spec in (raw.get("Parameters") or {}).items()
        },
    )


# --------------------------------------------------------------------------- parsing helpers

def _logical_id_of(value: Any, where: str) -> str:
    """The resource behind ``!GetAtt X.Arn`` or ``!Ref X``: locally we wire by logical id."""
    if isinstance(value, Mapping):
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
        if "Ref" in value:
            return str(value["Ref"])
    raise TemplateError(f"{where}: expected !GetAtt or !Ref to a resource in this template, got {value!r}")


def _function(logical_id: str, props: Mapping[str, Any], globals_fn: Mapping[str, Any]) -> Function:
    env = {**(globals_fn.get("Environment", {}).get("Variables") or {}),
           **(props.get("Environment", {}).get("Variables") or {})}
    for required in ("CodeUri", "Handler"):
        if required not in props:
            raise TemplateError(f"{logical_id}: {required} is required locally")
    return Function(
        logical_id=logical_id,
        code_uri=str(props["CodeUri"]),
        handler=str(props["Handler"]),
        runtime=str(props.get("Runtime", globals_fn.get("Runtime", ""))),
        timeout=int(props.get("Timeout", globals_fn.get("Timeout", 3))),
        memory_size=int(props.get("MemorySize", globals_fn.get("MemorySize", 128))),
        environment=env,
        triggers=tuple(_trigger(logical_id, name, event) for name, event in (props.get("Events") or {}).items()),
        layers=tuple(globals_fn.get("Layers", [])) + tuple(props.get("Layers", [])),
    )


def _trigger(function_id: str, name: str, event: Mapping[str, Any]) -> Trigger:
    kind = event.get("Type")
    props = event.get("Properties", {}) or {}
    where = f"{function_id}.Events.{name}"
    if kind == "SQS":
        return SqsTrigger(
            name=name,
            queue=_logical_id_of(props.get("Queue"), where),
            batch_size=int(props.get("BatchSize", 10)),
            batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
            max_concurrency=(props.get("ScalingConfig") or {}).get("MaximumConcurrency"),
        )
    if kind in ("Schedule", "ScheduleV2"):
        expression = str(props.get("Schedule") or props.get("ScheduleExpression"))
        return ScheduleTrigger(name=name, expression=expression, interval_seconds=rate_seconds(expression),
                               enabled=bool(props.get("Enabled", props.get("State", "ENABLED") != "DISABLED")))
    if kind == "HttpApi":
        api = props.get("ApiId")
        return HttpTrigger(
            name=name,
            api=_logical_id_of(api, where) if api is not None else None,
            method=str(props.get("Method", "ANY")).upper(),
            path=str(props.get("Path", "$default")),
            payload_version=str(props.get("PayloadFormatVersion", "2.0")),
        )
    if kind == "DynamoDB":
        on_failure = ((props.get("DestinationConfig") or {}).get("OnFailure") or {})
        if on_failure and on_failure.get("Type", "SQS") != "SQS":
            raise TemplateError(f"{where}: only SQS on-failure destinations run locally")
        filters = (props.get("FilterCriteria") or {}).get("Filters") or []
        return StreamTrigger(
            name=name,
            table=_logical_id_of(props.get("Stream"), where),
            starting_position=str(props.get("StartingPosition", "LATEST")),
            batch_size=int(props.get("BatchSize", 100)),
            max_retries=int(props.get("MaximumRetryAttempts", -1)),
            bisect_on_error=bool(props.get("BisectBatchOnFunctionError", False)),
            on_failure_queue=_logical_id_of(on_failure["Destination"], where) if on_failure else None,
            filter_patterns=tuple(patterns.parse(f["Pattern"]) for f in filters),
            parallelization_factor=_parallelization_factor(props.get("ParallelizationFactor", 1), where),
        )
    raise TemplateError(f"{where}: event type {kind!r} is not supported by the local stack")


def _parallelization_factor(value: Any, where: str) -> int:
    factor = int(value)
    if not 1 <= factor <= 10:
        raise TemplateError(f"{where}: ParallelizationFactor must be 1-10 (Lambda's range), not {factor}")
    return factor


_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of ``rate(N unit)``; None for ``cron(...)``."""
    found = _RATE.fullmatch(expression.strip())
    if found:
        return float(int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")])
    if expression.strip().startswith("cron("):
        return None
    raise TemplateError(f"unrecognised schedule expression {expression!r}")


def _route_regex(path: str) -> re.Pattern[str]:
    parts = []
    for segment in re.split(r"(\{[^}]+\})", path):
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
            greedy = name.endswith("+")
            parts.append(f"(?P<{name.rstrip('+')}>{'.+' if greedy else '[^/]+'})")
        else:
            parts.append(re.escape(segment))
    return re.compile("".join(parts))


def _queue(logical_id: str, props: Mapping[str, Any]) -> Queue:
    redrive = props.get("RedrivePolicy") or {}
    if isinstance(redrive, str):
        redrive = json.loads(redrive)
    return Queue(
        logical_id=logical_id,
        name=props.get("QueueName"),
        delay_seconds=int(props.get("DelaySeconds", 0)),
        visibility_timeout=int(props.get("VisibilityTimeout", 30)),
        retention_seconds=int(props.get("MessageRetentionPeriod", 345600)),
        dead_letter_queue=_logical_id_of(redrive["deadLetterTargetArn"], f"{logical_id}.RedrivePolicy")
        if redrive else None,
        max_receive_count=int(redrive["maxReceiveCount"]) if redrive else None,
    )


def _bucket(logical_id: str, props: Mapping[str, Any]) -> Bucket:
    notifications = props.get("NotificationConfiguration") or {}
    unsupported = set(notifications) - {"QueueConfigurations"}
    if unsupported:
        raise TemplateError(f"{logical_id}: only QueueConfigurations run locally, not {sorted(unsupported)}")
    queue_configs = []
    for i, config in enumerate(notifications.get("QueueConfigurations", [])):
        rules = {r["Name"].lower(): r["Value"] for r in config.get("Filter", {}).get("S3Key", {}).get("Rules", [])}
        queue_configs.append(QueueNotification(
            queue=_logical_id_of(config["Queue"], f"{logical_id}.QueueConfigurations[{i}]"),
            events=(config["Event"],),
            prefix=rules.get("prefix", ""),
            suffix=rules.get("suffix", ""),
        ))
    ownership = (props.get("OwnershipControls") or {}).get("Rules", [{}])[0].get("ObjectOwnership")
    return Bucket(
        logical_id=logical_id,
        name=props.get("BucketName"),
        encryption=tuple((props.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration", [])),
        public_access_block=dict(props.get("PublicAccessBlockConfiguration") or {}),
        ownership=ownership,
        queue_notifications=tuple(queue_configs),
        versioning=str((props.get("VersioningConfiguration") or {}).get("Status") or ""),
    )


def _table(logical_id: str, props: Mapping[str, Any]) -> Table:
    def keys(schema: list[Mapping[str, str]]) -> tuple[str, str | None]:
        by_type = {k["KeyType"]: k["AttributeName"] for k in schema}
        return by_type["HASH"], by_type.get("RANGE")

    hash_key, range_key = keys(props["KeySchema"])
    indexes = []
    for gsi in props.get("GlobalSecondaryIndexes", []):
        gsi_hash, gsi_range = keys(gsi["KeySchema"])
        indexes.append(Index(name=gsi["IndexName"], hash_key=gsi_hash, range_key=gsi_range,
                             projection=dict(gsi.get("Projection") or {"ProjectionType": "ALL"})))
    ttl = props.get("TimeToLiveSpecification") or {}
    return Table(
        logical_id=logical_id,
        name=props.get("TableName"),
        attribute_types={a["AttributeName"]: a["AttributeType"] for a in props.get("AttributeDefinitions", [])},
        hash_key=hash_key,
        range_key=range_key,
        indexes=tuple(indexes),
        stream_view_type=(props.get("StreamSpecification") or {}).get("StreamViewType"),
        ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled", True) else None,
        billing_mode=str(props.get("BillingMode", "PROVISIONED")),
    )


def _secret(logical_id: str, props: Mapping[str, Any]) -> Secret:
    return Secret(
        logical_id=logical_id,
        name=props.get("Name"),
        description=str(props.get("Description", "")),
        secret_string=props.get("SecretString"),
        generate=props.get("GenerateSecretString"),
    )


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_scalar_text(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- resolving intrinsics

_NO_VALUE = object()  # AWS::NoValue: the property disappears
_SUB_VAR = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class Pseudo:
    region: str = "us-east-1"
    account_id: str = "123456789012"
    stack_name: str = "s2v-local"
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"

    @property
    def stack_id(self) -> str:
        # Deterministic per stack name, so names derived from it are stable between runs.
        guid = uuid.uuid5(uuid.NAMESPACE_URL, f"s2v-local:{self.stack_name}")
        return f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/{guid}"

    def values(self) -> dict[str, Any]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::NotificationARNs": [],
            "AWS::NoValue": _NO_VALUE,
        }


class Resolver:
    """Evaluates intrinsic functions against parameters, pseudo parameters and local names.

    ``physical`` maps ``LogicalId`` to what ``!Ref`` returns and ``LogicalId.Attr`` to what
    ``!GetAtt`` returns; a reference that is in none of them raises ``TemplateError``.
    """

    def __init__(self, template: Template, *, parameters: Mapping[str, str] | None = None,
                 physical: Mapping[str, Any] | None = None, pseudo: Pseudo | None = None) -> None:
        self.template = template
        self.pseudo = pseudo or Pseudo()
        self.physical: dict[str, Any] = dict(physical or {})
        self.parameters = self._parameters(parameters or {})

    def _parameters(self, given: Mapping[str, str]) -> dict[str, Any]:
        unknown = set(given) - set(self.template.parameter_defaults)
        if unknown:
            raise TemplateError(f"unknown template parameters: {sorted(unknown)}")
        values: dict[str, Any] = {}
        specs = self.template.raw.get("Parameters") or {}
        for name, default in self.template.parameter_defaults.items():
            value = given.get(name, default)
            if value is None:
                raise TemplateError(f"template parameter {name} has no default and no value was given")
            allowed = specs[name].get("AllowedValues")
            if allowed and str(value) not in [str(a) for a in allowed]:
                raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
            is_list = str(specs[name].get("Type", "")).startswith(("CommaDelimitedList", "List<"))
            values[name] = [v.strip() for v in str(value).split(",")] if is_list else str(value)
        return values

    # -- public

    def value(self, node: Any) -> Any:
        """``node`` with every intrinsic evaluated (``AWS::NoValue`` entries dropped)."""
        result = self._eval(node)
        return None if result is _NO_VALUE else result

    def text(self, node: Any) -> str:
        return _scalar_text(self.value(node))

    def condition(self, name: str) -> bool:
        conditions = self.template.raw.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"unknown condition {name!r}")
        return bool(self._eval(conditions[name]))

    def environment(self, function: Function) -> dict[str, str]:
        """The function's environment variables as Lambda would see them (all strings)."""
        env = {}
        for key, node in function.environment.items():
            value = self._eval(node)
            if value is not _NO_VALUE:
                env[key] = _scalar_text(value)
        return env

    # -- evaluation

    def _eval(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self._eval(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, Mapping):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self._ref(str(arg))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        evaluated = {k: self._eval(v) for k, v in node.items()}
        return {k: v for k, v in evaluated.items() if v is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        pseudo = self.pseudo.values()
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name]
        raise TemplateError(f"no local value for !Ref {name}")

    def _get_att(self, resource: str, attribute: str) -> Any:
        key = f"{resource}.{attribute}"
        if key in self.physical:
            return self.physical[key]
        raise TemplateError(f"no local value for !GetAtt {key}")

    def _function(self, name: str, arg: Any) -> Any:
        if name == "Fn::GetAtt":
            resource, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self._get_att(str(resource), self.text(attribute))
        if name == "Fn::Sub":
            return self._sub(arg)
        if name == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(_scalar_text(v) for v in self._eval(items))
        if name == "Fn::Select":
            index, items = arg
            return self._eval(items)[int(self._eval(index))]
        if name == "Fn::Split":
            delimiter, text = arg
            return self.text(text).split(str(delimiter))
        if name == "Fn::If":
            condition, when_true, when_false = arg
            return self._eval(when_true if self.condition(condition) else when_false)
        if name == "Fn::Equals":
            left, right = (self.text(v) for v in arg)
            return left == right
        if name == "Fn::Not":
            return not self._eval(arg[0])
        if name == "Fn::And":
            return all(self._eval(v) for v in arg)
        if name == "Fn::Or":
            return any(self._eval(v) for v in arg)
        if name == "Fn::FindInMap":
            table, top, second = (self.text(v) for v in arg)
            return self.template.raw["Mappings"][table][top][second]
        if name == "Fn::Base64":
            return base64.b64encode(self.text(arg).encode()).decode()
        raise TemplateError(f"{name} cannot be evaluated locally")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self._eval(v) for k, v in variables.items()}

        def replace(found: re.Match[str]) -> str:
            name = found.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} is written out as ${Literal}
            if name in local:
                return _scalar_text(local[name])
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return _scalar_text(self._get_att(resource, attribute))
            return _scalar_text(self._ref(name))

        return _SUB_VAR.sub(replace, str(text))
