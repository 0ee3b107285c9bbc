"""Schedule → function: an EventBridge rule's fixed rate, as scheduled events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from s2v_local.runtime import FunctionRuntime
from s2v_local.template import ScheduleTrigger, TemplateError
from s2v_local.triggers import log
from s2v_local.triggers.host import TriggerHost


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
    def __init__(self, stack: TriggerHost, runtime: FunctionRuntime, trigger: ScheduleTrigger) -> None:
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
