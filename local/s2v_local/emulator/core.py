"""The state every part of the emulator shares, and the checks every endpoint makes."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from werkzeug.wrappers import Request, Response

from s2v.model import provider_facts
from s2v.model.models import Catalog, Model
from s2v_local.emulator.faults import Faults
from s2v_local.emulator.wsgi import envelope

FINAL_STATUSES = ("completed", "failed", "deleted")


@dataclass(frozen=True)
class RunningTask:
    faults: Faults  # a copy taken at submit time
    webhook_url: str
    input: dict[str, Any]
    cancelled: threading.Event = field(default_factory=threading.Event)  # set by a delete


def public_view(task: Mapping[str, Any]) -> dict[str, Any]:
    """The task as the result endpoint shows it (the webhook body also carries ``input``)."""
    return {name: value for name, value in task.items() if name != "input"}


class EmulatorCore:
    """What every part of the emulator shares: its settings, its predictions and their clocks, the
    lock that guards them, and the checks every endpoint makes. ``Emulator`` sets it all up."""

    api_key: str
    catalog: Catalog
    render_seconds: float
    webhook_secret: str
    faults: Faults
    max_audio_seconds: float
    sync_timeout_seconds: float
    base_url: str
    output_host: str
    output_base_url: str
    clock: Callable[[], float]
    balance: float
    charges: dict[str, float]  # task id → USD charged for it
    submission_count: int
    render_count: int  # ffmpeg renders so far; each stamps its frames with this number (mod 256)
    tasks: dict[str, dict[str, Any]]
    web_predictions: dict[str, dict[str, Any]]  # other models, made "on the website"
    finished_at: dict[str, float]  # task id → time.time() it became completed/failed
    reuse_renders: bool
    _models: dict[str, Model]  # task id → the model it was submitted to
    _renders: dict[str, tuple[Path, dict[str, float]]]
    _born: dict[str, float]  # prediction id → clock() at creation
    _completed: dict[str, float]  # task id → clock() at completion (outputs expire from it)
    _order: dict[str, int]  # creation order, to break ties in the list
    _lock: threading.Lock
    _changed: threading.Condition
    _stopping: threading.Event
    _running: dict[str, RunningTask]
    _threads: list[threading.Thread]
    _ffmpeg: str
    _pool: ThreadPoolExecutor | None
    _workdir: Path | None
    _sessions: threading.local

    def _authorized(self, request: Request) -> Response | None:
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
            return None
        return envelope(401, "Unauthorized: invalid or missing API key")

    def _take(self, counter: str) -> bool:
        """Consume one of the ``faults.<counter>`` next-N faults, if any are left."""
        with self._lock:
            left = getattr(self.faults, counter)
            if left <= 0:
                return False
            setattr(self.faults, counter, left - 1)
            return True

    def _prediction(self, task_id: str) -> dict[str, Any] | None:
        """A task or web prediction still within the retention window."""
        task = self.tasks.get(task_id) or self.web_predictions.get(task_id)
        born = self._born.get(task_id)
        if task is None or born is None or self.clock() - born > provider_facts.RETENTION_SECONDS:
            return None
        return task

    def _update(self, task_id: str, **changes: Any) -> dict[str, Any]:
        with self._changed:
            return self._set(task_id, **changes)

    def _set(self, task_id: str, **changes: Any) -> dict[str, Any]:
        """``_update`` with the lock already held."""
        if self.tasks[task_id]["status"] == "deleted":  # a deleted task never comes back
            return self.tasks[task_id]
        # Replace, never mutate: a reader holding the old dict sees a consistent task.
        task = self.tasks[task_id] = {**self.tasks[task_id], **changes}
        self._changed.notify_all()
        return task

    def output_path(self, task_id: str) -> Path:
        assert self._workdir is not None, "the emulator is not running"
        return self._workdir / "outputs" / f"{task_id}.mp4"

    def output_url(self, task_id: str) -> str:
        return self.output_base_url + provider_facts.OUTPUT_PATH.format(id=task_id)

    def _http(self) -> requests.Session:
        """This thread's session (a Session is not meant to be shared between threads)."""
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
            session.trust_env = False  # loopback only: never through a proxy from the environment
        return session
