"""The account's calls: list (with the website's predictions mixed in), delete, and balance."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from s2v.adapters.providers.wavespeed import (
    RESULT_PATH,
    iso_to_epoch,
)
from s2v.model import provider_facts
from s2v_local.emulator.core import EmulatorCore, public_view
from s2v_local.emulator.wsgi import envelope, iso_time

DEFAULT_BALANCE_USD = 100.0
# "Web" predictions the list mixes in (created on the website, other models): (model, age, status).
# The last is older than the retention window, so the list never shows it.
WEB_PREDICTIONS = (("wavespeed-ai/flux-dev", 20 * 60, "completed"),
                   ("wavespeed-ai/wan-2.2/i2v-480p", 3 * 3600, "failed"),
                   ("wavespeed-ai/flux-dev", 2 * 86400, "completed"),
                   ("wavespeed-ai/flux-dev", 8 * 86400, "completed"))


class Account(EmulatorCore):
    def _on_list(self, request: Request) -> Response:
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("list"):
            return slow
        body = request.get_json(silent=True)
        query, problem = list_query(body)
        if problem:
            return envelope(400, problem)
        now = self.clock()
        with self._lock:
            everything = [*self.tasks.values(), *self.web_predictions.values()]
            born, order = dict(self._born), dict(self._order)
        matching = [task for task in everything if now - born[task["id"]] <= provider_facts.RETENTION_SECONDS
                    and query.matches(task)]
        matching.sort(key=lambda task: (born[task["id"]], order[task["id"]]), reverse=True)  # newest first
        start = (query.page - 1) * query.page_size
        items = [_listed(task, query.include_inputs) for task in matching[start:start + query.page_size]]
        return envelope(200, "success", {"page": query.page, "total": len(matching), "items": items})

    def _on_delete(self, request: Request, task_id: str) -> Response:
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("delete"):
            return slow
        if not self.delete(task_id):
            return envelope(404, f"prediction {task_id} not found")
        return envelope(200, "success", {"id": task_id, "status": "deleted"})

    def _on_delete_many(self, request: Request) -> Response:
        # The docs' bulk form: {"ids": [...]}; unknown ids are ignored.
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("delete"):
            return slow
        body = request.get_json(silent=True)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return envelope(400, "invalid parameter: ids must be a list of prediction ids")
        return envelope(200, "success", {"ids": [i for i in ids if self.delete(i)]})

    def _on_balance(self, request: Request) -> Response:
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("balance"):
            return slow
        with self._lock:
            balance = round(self.balance, 6)
        return envelope(200, "success", {"balance": balance, "currency": provider_facts.CURRENCY})

    def _faulty(self, call: str) -> Response | None:
        """The ``<call>_429`` / ``<call>_500`` answer if one is due; waits first for ``<call>_timeout``."""
        faults = self.faults
        if self._take(f"{call}_timeout"):
            self._stopping.wait(faults.hang_seconds)
        if hasattr(faults, f"{call}_429") and self._take(f"{call}_429"):
            return envelope(429, "Too many requests", headers={"Retry-After": str(faults.retry_after_seconds)})
        if self._take(f"{call}_500"):
            return envelope(500, "internal server error")
        return None

    def delete(self, task_id: str) -> bool:
        """Delete a prediction as DELETE /api/v3/predictions/{id} does: it answers "deleted" from
        now on (assumed), a render in progress is stopped and never completes, its output goes and
        nothing is charged for it. Deleting twice is harmless. False for an unknown id."""
        with self._changed:
            if self._prediction(task_id) is None:
                return False
            if task_id in self.web_predictions:
                self.web_predictions[task_id] = {**self.web_predictions[task_id], "status": "deleted", "outputs": []}
                return True
            self.tasks[task_id] = {**self.tasks[task_id], "status": "deleted", "outputs": [],
                                   "has_nsfw_contents": []}
            running = self._running.get(task_id)
            self._changed.notify_all()
        if running is not None:
            running.cancelled.set()
        if self._workdir is not None:
            self.output_path(task_id).unlink(missing_ok=True)
        return True

    def _add_web_predictions(self) -> None:
        now = self.clock()
        with self._lock:
            for model, age, status in WEB_PREDICTIONS:
                task_id = uuid.uuid4().hex
                outputs = [f"https://{provider_facts.OTHER_MODEL_CDN_HOST}/output/{task_id}.jpg"] \
                    if status == "completed" else []
                self.web_predictions[task_id] = {
                    "id": task_id, "model": model, "input": {"prompt": "a lighthouse at dusk", "seed": -1},
                    "outputs": outputs, "urls": {"get": self.base_url + RESULT_PATH.format(id=task_id)},
                    "has_nsfw_contents": [False] * len(outputs), "status": status, "created_at": iso_time(now - age),
                    "error": "" if status == "completed" else "task execution failed (1403)",
                    "timings": {"inference": 2500},
                }
                self._born[task_id], self._order[task_id] = now - age, len(self._order)


@dataclass(frozen=True)
class ListQuery:
    page: int
    page_size: int
    include_inputs: bool = False
    model: str = ""
    status: str = ""
    created_after: float | None = None
    created_before: float | None = None

    def matches(self, task: Mapping[str, Any]) -> bool:
        created = iso_to_epoch(str(task.get("created_at", "")))  # as the caller sees it, to the millisecond
        return ((not self.model or task.get("model") == self.model)
                and (not self.status or task.get("status") == self.status)
                and (self.created_after is None or (created is not None and created >= self.created_after))
                and (self.created_before is None or (created is not None and created <= self.created_before)))


def list_query(body: Any) -> tuple[ListQuery, str]:
    """The list request read (page and page_size required, page_size 1..100), or why it is invalid."""
    invalid = ListQuery(1, 1)
    if not isinstance(body, dict):
        return invalid, "the request body must be a JSON object"
    for name in ("page", "page_size"):
        if name not in body:
            return invalid, f"missing required parameter: {name}"
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return invalid, f"invalid parameter: {name} must be a whole number of at least 1"
    if body["page_size"] > provider_facts.LIST_MAX_PAGE_SIZE:
        return invalid, f"invalid parameter: page_size must be at most {provider_facts.LIST_MAX_PAGE_SIZE}"
    text: dict[str, str] = {}
    for name in ("model", "status", "created_after", "created_before"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            return invalid, f"invalid parameter: {name} must be a string"
        text[name] = value or ""
    bounds: dict[str, float | None] = {}
    for name in ("created_after", "created_before"):
        bounds[name] = iso_to_epoch(text[name]) if text[name] else None
        if text[name] and bounds[name] is None:
            return invalid, f"invalid parameter: {name} must be an ISO 8601 time such as 2025-05-19T06:09:15Z"
    return ListQuery(body["page"], body["page_size"], body.get("include_inputs") is True, text["model"],
                     text["status"].lower(), bounds["created_after"], bounds["created_before"]), ""


def _listed(task: Mapping[str, Any], include_inputs: bool) -> dict[str, Any]:
    """A list item: the task, with the docs example's ``executionTime`` (ms) and, when asked, its input."""
    item = dict(task) if include_inputs else public_view(task)
    timings = task.get("timings")
    item["executionTime"] = timings.get("inference", 0) if isinstance(timings, Mapping) else 0
    return item
