"""Everything the core needs from the outside world, built once per cold start."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from s2v.adapters.notify import EventPublisher
from s2v.adapters.objects import ObjectStore
from s2v.adapters.secrets import Secrets
from s2v.adapters.store import JobStore, Limits
from s2v.config import Settings


def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    # Standard retry mode: AWS calls are retried with backoff on throttling by botocore itself.
    return boto3.client(service, config=Config(retries={"mode": "standard", "max_attempts": 5}))


@dataclass
class Deps:
    settings: Settings
    clock: Callable[[], float] = time.time
    client_factory: Callable[[str], Any] = field(default=_client)

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.client_factory("dynamodb"), self.settings.jobs_table, clock=self.clock,
                        ttl_days=self.settings.job_ttl_days)

    @cached_property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.client_factory("s3"), self.settings.bucket,
                           protected_prefix=self.settings.output_prefix)

    @cached_property
    def events(self) -> EventPublisher:
        return EventPublisher(self.client_factory("events"), bus=self.settings.event_bus,
                              source=self.settings.event_source)

    @cached_property
    def sqs(self) -> Any:
        return self.client_factory("sqs")

    @cached_property
    def secrets(self) -> Secrets:
        return Secrets(self.settings, lambda: self.client_factory("secretsmanager"))

    @cached_property
    def provider(self) -> Any:
        from s2v.adapters.providers.wavespeed import WaveSpeedClient

        return WaveSpeedClient(self.settings.provider_base_url, self.secrets.api_key,
                               timeout=self.settings.provider_timeout_seconds)

    @property
    def limits(self) -> Limits:
        return Limits(max_in_flight=self.settings.max_in_flight_jobs,
                      daily_budget_usd=self.settings.daily_budget_usd)
