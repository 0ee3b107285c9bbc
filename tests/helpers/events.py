"""Capture the s2v events a flow publishes: a bus of its own, a rule, and a queue the test reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from helpers.aws import client


def event_bus(endpoint: str, unique: str) -> tuple[str, Callable[[], list[dict[str, Any]]]]:
    """(bus name for S2V_EVENT_BUS, a function returning the events received since its last call)."""
    bus = f"bus-{unique}"
    eb, sqs = client("events", endpoint), client("sqs", endpoint)
    eb.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName=f"events-{unique}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    eb.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": ["s2v"]}))
    eb.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])

    def received() -> list[dict[str, Any]]:
        out = []
        while True:
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    return bus, received
