"""``s2v drop MANIFEST`` follows a batch: a manifest the stack rejects as a whole (its rows then never
get jobs) ends the wait at once with the stack's reason, instead of waiting out ``--timeout``."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from s2v_cli import main


class Store:
    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch
        self.reads = 0

    def get_many(self, job_ids: list[str]) -> dict[str, Any]:
        self.reads += 1
        return {}

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self.batch


def test_a_rejected_manifest_ends_the_wait_with_its_reason() -> None:
    store = Store({"state": "rejected", "error": {"reason": "the manifest has 12 rows; this stack takes at most 10"}})
    target = SimpleNamespace(store=store)
    started = time.monotonic()
    jobs = main._follow_many(target, ["a", "b"], timeout=60, batch_id="b1")  # type: ignore[arg-type]
    assert jobs == {} and time.monotonic() - started < 30 and store.reads == 1
    assert main._rejection(target, "b1") == "the manifest has 12 rows; this stack takes at most 10"  # type: ignore[arg-type]


def test_an_accepted_manifest_is_not_a_rejection() -> None:
    target = SimpleNamespace(store=Store({"state": "waiting"}))
    assert main._rejection(target, "b1") == ""  # type: ignore[arg-type]
