"""Webhooks: a finished task POSTed to its callback URL, signed as WaveSpeed signs it, with the
faults' modes (none, twice, late, out of order, skewed)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from s2v.adapters.providers.wavespeed import (
    sign_webhook,
)
from s2v_local.emulator.core import EmulatorCore, RunningTask
from s2v_local.emulator.faults import LATE_WEBHOOK_SECONDS

WEBHOOK_TIMEOUT = (5.0, 15.0)


@dataclass(frozen=True)
class WebhookDelivery:
    url: str
    webhook_id: str
    task_id: str
    task_status: str
    status_code: int | None  # the receiver's answer; None when it could not be reached
    error: str = ""


class Webhooks(EmulatorCore):
    webhook_deliveries: list[WebhookDelivery]

    def wait_for_webhooks(self, count: int, timeout: float = 30.0) -> list[WebhookDelivery]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.webhook_deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.webhook_deliveries)} of {count} webhooks delivered after {timeout} s")
            return list(self.webhook_deliveries)

    def _send_webhooks_later(self, task_id: str, running: RunningTask) -> None:
        if not running.webhook_url or running.faults.webhook_mode == "none":
            return
        finished_at = time.time()
        thread = threading.Thread(target=self._send_webhooks, args=(task_id, running, finished_at),
                                  name="s2v-emulator-webhook", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _send_webhooks(self, task_id: str, running: RunningTask, finished_at: float) -> None:
        faults = running.faults
        delay = faults.webhook_delay_seconds
        if faults.webhook_mode == "late":
            delay = delay or LATE_WEBHOOK_SECONDS
        if delay and self._stopping.wait(delay):
            return
        task = self.tasks[task_id]
        if task["status"] == "deleted":  # deleted before its callback went out
            return
        signed_at = finished_at if faults.webhook_mode == "late" else time.time()
        signed_at += faults.webhook_timestamp_skew_seconds
        first_id = f"msg_{uuid.uuid4().hex}"
        self._post_webhook(running.webhook_url, task, first_id, signed_at)
        if faults.webhook_mode == "twice":  # a redelivery: same webhook-id, same body
            self._post_webhook(running.webhook_url, task, first_id, signed_at)
        elif faults.webhook_mode == "out_of_order":  # an older state arriving after the final one
            stale = {**task, "status": "processing", "outputs": [], "has_nsfw_contents": [], "error": ""}
            self._post_webhook(running.webhook_url, stale, f"msg_{uuid.uuid4().hex}", time.time())

    def _post_webhook(self, url: str, task: Mapping[str, Any], webhook_id: str, signed_at: float) -> None:
        if self._stopping.is_set():
            return
        body = json.dumps(task, separators=(",", ":")).encode()  # the task object itself, not the envelope
        headers = {"Content-Type": "application/json",
                   **sign_webhook(body, self.webhook_secret, webhook_id=webhook_id, timestamp=int(signed_at))}
        status_code, error = None, ""
        try:
            status_code = self._http().post(url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT).status_code
        except requests.RequestException as exc:
            error = type(exc).__name__
        delivery = WebhookDelivery(url=url, webhook_id=webhook_id, task_id=str(task["id"]),
                                   task_status=str(task["status"]), status_code=status_code, error=error)
        with self._changed:
            self.webhook_deliveries.append(delivery)
            self._changed.notify_all()
