"""Shared fixtures: one moto server per test process, real boto3 clients pointed at it."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "layers" / "common", ROOT / "local", ROOT / "cli", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# Never let a test reach real AWS, whatever the developer's shell has configured.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "s2v", "POWERTOOLS_SERVICE_NAME": "s2v",
    "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_DEV": "false",
})
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from s2v_local.motoserver import MotoServer

    server = MotoServer()
    server.start()
    yield server.endpoint_url
    server.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]
