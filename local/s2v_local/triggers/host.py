"""What a trigger needs from the stack that starts it. The stack hands itself over as this
interface, so no trigger imports the stack (which imports every trigger)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from s2v_local.runtime import FunctionRuntime
from s2v_local.template import HttpTrigger, Pseudo, Template


class TriggerHost(Protocol):
    @property
    def pseudo(self) -> Pseudo: ...

    @property
    def template(self) -> Template | None: ...

    @property
    def physical(self) -> Mapping[str, Any]:
        """Physical names and ARNs by logical id (``Queue.Arn``, ``Table.StreamArn`` …)."""
        ...

    @property
    def poll_interval_seconds(self) -> float | None:
        """Replaces every schedule's rate when set."""
        ...

    @property
    def redelivery_seconds(self) -> int | None:
        """How soon a failed SQS message is visible again; None: the queue's VisibilityTimeout."""
        ...

    @property
    def ingest_concurrency(self) -> int: ...

    @property
    def stopping(self) -> threading.Event: ...

    def client(self, service: str, *, caller: str = "") -> Any:
        """A boto3 client for the stack's AWS endpoint; ``caller`` tags its requests."""
        ...

    def queue_url(self, queue_logical_id: str) -> str: ...

    def run_in_worker(self, target: Callable[[], None], name: str) -> None:
        """Run one invocation on a thread the stack waits for when it stops."""
        ...

    def http_routes(self) -> list[tuple[HttpTrigger, FunctionRuntime]]: ...
