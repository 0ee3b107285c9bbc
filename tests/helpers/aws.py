"""AWS resources for tests, created on moto's server from the same template.yaml that deploys."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parents[2]


class _AnyTagLoader(yaml.CSafeLoader):
    """Reads CloudFormation YAML, keeping intrinsic functions as plain values."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


_AnyTagLoader.add_multi_constructor("!", _construct_tag)


@functools.cache
def _template() -> dict[str, Any]:
    # Parsed once per test process: every flow fixture creates a jobs table from it.
    return dict(yaml.load((ROOT / "template.yaml").read_text(), Loader=_AnyTagLoader))


def template_resource(logical_id: str) -> dict[str, Any]:
    return copy.deepcopy(_template()["Resources"][logical_id])


def client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def create_jobs_table(endpoint: str, name: str) -> Any:
    """The jobs table exactly as template.yaml declares it (keys, GSI, stream)."""
    props = template_resource("JobsTable")["Properties"]
    ddb = client("dynamodb", endpoint)
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        GlobalSecondaryIndexes=props.get("GlobalSecondaryIndexes", []),
        StreamSpecification={"StreamEnabled": True,
                             "StreamViewType": props["StreamSpecification"]["StreamViewType"]},
    )
    return ddb
