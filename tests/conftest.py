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


# The files that take longest, longest first (durations of a whole run on the 2-core machine).
# `make test` runs each file on one of two workers (--dist loadfile) in collection order
# (--no-loadscope-reorder; xdist would order files by how many tests they hold, which put the
# few-but-long e2e files last and left one worker running alone at the end); starting the long
# files first lets the many short ones fill both workers up to the end.
LONGEST_FIRST = (
    "integration/test_longform_flow.py",
    "e2e/test_infinitetalk_and_two_speakers.py",
    "e2e/test_cli.py",
    "e2e/test_long_talks.py",
    "integration/test_exactly_once.py",
    "e2e/test_long_clips.py",
    "e2e/test_batch_manifest.py",
    "integration/test_spend_guard.py",
    "e2e/test_pipeline.py",
    "e2e/test_live_check_run.py",
    "e2e/test_demo_then_dashboard.py",
    "e2e/test_dashboard.py",
    "e2e/test_queue_release.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(ROOT / "tests").as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of every other file, is kept
