"""Predictions: submit (every model of the table at its path, sync mode), result, and the worker
that fetches a task's inputs, renders it, charges it and sends its webhooks."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from werkzeug.wrappers import Request, Response

from s2v.adapters.providers.wavespeed import (
    MODEL,
    RESULT_PATH,
)
from s2v.model import provider_facts
from s2v.model.models import CATALOG, SEQUENCE, Model
from s2v_local import stamps
from s2v_local.emulator.core import FINAL_STATUSES, RunningTask, public_view
from s2v_local.emulator.render import (
    RESOLUTIONS,
    TaskFailed,
    audio_seconds,
    lay_out_tracks,
    played_roles,
    render_video,
    write_still_frame,
)
from s2v_local.emulator.webhooks import Webhooks
from s2v_local.emulator.wsgi import envelope, iso_time, log

SEED_RANGE = range(-1, 2147483647 + 1)
MAX_INPUT_BYTES = provider_facts.UPLOAD_MAX_BYTES
FETCH_TIMEOUT = (5.0, 30.0)


class Predictions(Webhooks):
    def wait_for_task(self, task_id: str, statuses: tuple[str, ...] = ("completed", "failed", "deleted"),
                      timeout: float = 30.0) -> dict[str, Any]:
        """The task once its status is one of ``statuses``; TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.tasks.get(task_id, {}).get("status") in statuses, timeout):
                raise TimeoutError(f"task {task_id} is {self.tasks.get(task_id, {}).get('status')!r} after {timeout} s")
            return self.tasks[task_id]

    def _on_submit(self, request: Request, model_path: str = MODEL) -> Response:
        if denied := self._authorized(request):
            return denied
        faults = self.faults
        if self._take("submit_429"):
            return envelope(429, "Too many requests: the account's concurrency limit is reached",
                             headers={"Retry-After": str(faults.retry_after_seconds)})
        body = request.get_json(silent=True)
        model = self.catalog.by_path(model_path)
        assert model is not None
        problem = submit_problem(body, model)
        if problem or not isinstance(body, dict):
            return envelope(400, problem)
        # The documented form is ?webhook=; one docs page shows a body field instead.
        webhook = str(request.args.get("webhook") or body.get("webhook_url") or "")
        if webhook and not re.match(r"https?://", webhook):
            return envelope(400, "invalid parameter: webhook must be an http(s) URL")
        task = self._accept(body, webhook, model)
        if body.get("enable_sync_mode") is True:
            task = self._wait_in_sync_mode(task["id"])
        if faults.submit_delay_seconds:
            self._stopping.wait(faults.submit_delay_seconds)
        if self._take("submit_500_after_accept"):
            return envelope(500, "internal server error")
        return envelope(200, "success", public_view(task))

    def _on_unknown_model(self, request: Request, model: str) -> Response:
        return self._authorized(request) or envelope(404, f"model {model} is not served by the WaveSpeed emulator")

    def _on_result(self, request: Request, task_id: str) -> Response:
        if denied := self._authorized(request):
            return denied
        faults = self.faults
        if faults.result_delay_seconds:
            self._stopping.wait(faults.result_delay_seconds)
        if self._take("result_429"):
            return envelope(429, "Too many requests", headers={"Retry-After": str(faults.retry_after_seconds)})
        if self._take("result_500"):
            return envelope(500, "internal server error")
        task = self._prediction(task_id)
        if task is None:
            return envelope(404, f"prediction {task_id} not found")
        return envelope(200, "success", public_view(task))

    def _on_webhook_secret(self, request: Request) -> Response:
        return self._authorized(request) or envelope(200, "success", {"secret": self.webhook_secret})

    def _accept(self, body: dict[str, Any], webhook_url: str, model: Model | None = None) -> dict[str, Any]:
        model = model or self.catalog[MODEL]
        task_id = uuid.uuid4().hex
        task_input: dict[str, Any] = {"prompt": "", "resolution": "480p", "seed": -1}
        task_input |= {"order": model.default_order} if model.orders else {}
        task_input.update((name, body[name]) for name in (*model.fields, "prompt", "resolution", "seed", "order")
                          if name in body)
        born = self.clock()
        self._models[task_id] = model
        task = {
            "id": task_id, "model": model.path, "input": task_input, "outputs": [],
            "urls": {"get": self.base_url + RESULT_PATH.format(id=task_id)}, "has_nsfw_contents": [],
            "status": "created", "created_at": iso_time(born), "error": "", "timings": {"inference": 0},
        }
        with self._changed:
            self.tasks[task_id] = task
            self._born[task_id], self._order[task_id] = born, len(self._order)
            self._running[task_id] = RunningTask(replace(self.faults), webhook_url, task_input)
            self.submission_count += 1
            self._changed.notify_all()
        assert self._pool is not None
        self._pool.submit(self._work, task_id)
        return task

    def _wait_in_sync_mode(self, task_id: str) -> dict[str, Any]:
        with self._changed:
            done = self._changed.wait_for(
                lambda: self._stopping.is_set() or self.tasks[task_id]["status"] in FINAL_STATUSES,
                self.sync_timeout_seconds)
            task = self.tasks[task_id]
        if done and task["status"] in FINAL_STATUSES:
            return task
        # What the SDK recognises as a sync timeout: still processing, code 5004 in data.
        return {**task, "code": 5004,
                "error": f"Sync mode timed out after {self.sync_timeout_seconds:g} s; the task keeps running"}

    def _work(self, task_id: str) -> None:
        running = self._running[task_id]
        if self._stopping.is_set() or running.cancelled.is_set():
            return
        started = time.monotonic()
        self._update(task_id, status="processing")
        error, tracks = "", {}
        try:
            tracks = self._render(task_id, running)
        except TaskFailed as failure:
            error = str(failure)
        except Exception as exc:  # a bug in a render must fail the task, not strand it in "processing"
            log.exception("render of %s failed", task_id)
            error = f"task execution failed (1403): {type(exc).__name__}"
        deadline = started + self.render_seconds
        while not running.cancelled.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._stopping.wait(min(left, 0.05)):
                return
        timings = {"inference": round((time.monotonic() - started) * 1000)}
        with self._changed:
            if self.tasks[task_id]["status"] == "deleted":  # deleted meanwhile: a late result is dropped
                self.output_path(task_id).unlink(missing_ok=True)
                return
            self.finished_at[task_id] = time.time()
            if error:
                self._set(task_id, status="failed", error=error, timings=timings)
            else:
                price = self._models[task_id].price_usd(tracks, running.input["resolution"],
                                                        running.input.get("order", ""))
                self.balance -= price
                self.charges[task_id] = price
                self._completed[task_id] = self.clock()
                self._set(task_id, status="completed", timings=timings, outputs=[self.output_url(task_id)],
                          has_nsfw_contents=[running.faults.nsfw])
        self._send_webhooks_later(task_id, running)

    def _render(self, task_id: str, running: RunningTask) -> dict[str, float]:
        """Renders the task's output; returns each audio track's length in seconds, by bucket role.
        A two-speaker model's soundtrack is its tracks laid out as ``order`` says: one after the
        other, or mixed (then as long as the longer)."""
        assert self._workdir is not None
        model = self._models[task_id]
        with tempfile.TemporaryDirectory(dir=self._workdir / "work") as tmp:
            work = Path(tmp)
            fetched = {role: self._fetch(running.input[name], name) for name, role in model.fields.items()
                       if name in running.input}
            image = fetched["image"]
            track_paths = {}
            for role in model.audio_roles:
                track_paths[role] = work / role
                track_paths[role].write_bytes(fetched[role])
            if running.faults.fail_renders:
                raise TaskFailed(running.faults.fail_message)
            order = str(running.input.get("order", ""))
            inputs = hashlib.sha256(b"".join(fetched[r] for r in sorted(fetched)) + model.path.encode()
                                    + order.encode() + running.input["resolution"].encode()).hexdigest()
            earlier = self._renders.get(inputs) if self.reuse_renders else None
            rendered = work / "out.mp4"
            if earlier is not None:
                shutil.copyfile(earlier[0], rendered)
                tracks = earlier[1]
            else:
                frame = work / "frame.png"
                write_still_frame(image, frame, RESOLUTIONS[running.input["resolution"]])
                tracks = {role: audio_seconds(self._ffmpeg, path) for role, path in track_paths.items()}
                for role, seconds in tracks.items():
                    if seconds > min(self.max_audio_seconds, model.max_seconds):
                        raise TaskFailed(f"invalid parameter (1401): the {model.field_for(role)} is {seconds:.1f} s "
                                         f"long; at most {min(self.max_audio_seconds, model.max_seconds):g} s is "
                                         "supported")
                seconds = model.output_seconds(tracks, order)
                if seconds > min(self.max_audio_seconds, model.max_seconds):
                    raise TaskFailed(f"invalid parameter (1401): the video would be {seconds:.1f} s long; at most "
                                     f"{min(self.max_audio_seconds, model.max_seconds):g} s is supported")
                if len(track_paths) == 1:
                    audio_path = next(iter(track_paths.values()))
                else:
                    audio_path = work / "soundtrack.wav"
                    lay_out_tracks(self._ffmpeg, [track_paths[r] for r in played_roles(model, order)],
                                   sequence=model.orders.get(order) == SEQUENCE, target=audio_path)
                with self._lock:
                    self.render_count += 1
                    tag = self.render_count % 2**stamps.TAG_BITS
                render_video(self._ffmpeg, frame, audio_path, seconds, rendered, cancelled=running.cancelled, tag=tag)
                if self.reuse_renders:
                    kept = self._workdir / "outputs" / f"render-{inputs}.mp4"
                    shutil.copyfile(rendered, kept)
                    self._renders[inputs] = (kept, tracks)
            if running.cancelled.is_set():
                raise TaskFailed("deleted while rendering")
            rendered.replace(self.output_path(task_id))  # appears whole or not at all
            return tracks

    def _fetch(self, url: str, kind: str) -> bytes:
        if not re.match(r"https?://", url):
            raise TaskFailed(f"media access failed (1402): the {kind} is not an http(s) URL")
        try:
            with self._http().get(url, timeout=FETCH_TIMEOUT, stream=True) as response:
                if response.status_code != 200:
                    raise TaskFailed(f"media access failed (1402): fetching the {kind} answered "
                                     f"HTTP {response.status_code}")
                data = bytearray()
                for chunk in response.iter_content(1024 * 1024):
                    data += chunk
                    if len(data) > MAX_INPUT_BYTES:
                        raise TaskFailed(f"media access failed (1402): the {kind} is larger than "
                                         f"{MAX_INPUT_BYTES // (1024 * 1024)} MB")
        except requests.RequestException as exc:
            raise TaskFailed(f"media access failed (1402): could not fetch the {kind} "
                             f"({type(exc).__name__})") from None
        if not data:
            raise TaskFailed(f"media access failed (1402): the {kind} is empty")
        return bytes(data)


def submit_problem(body: Any, model: Model | None = None) -> str:
    """Why a submit body is invalid for ``model``, or "" when it is valid (the model's input
    schema: its media fields, prompt, resolution, seed and, for two speakers, order)."""
    model = model or CATALOG[MODEL]
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    for name, role in model.fields.items():
        if role in model.optional_roles and body.get(name) in (None, ""):
            continue
        if name not in body or body[name] in (None, ""):
            return f"missing required parameter: {name}"
        if not isinstance(body[name], str):
            return f"invalid parameter: {name} must be a string (a URL)"
    if not isinstance(body.get("prompt", ""), str):
        return "invalid parameter: prompt must be a string"
    if body.get("resolution", "480p") not in model.resolutions:
        return f"invalid parameter: resolution must be one of {', '.join(model.resolutions)}"
    seed = body.get("seed", -1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in SEED_RANGE:
        return f"invalid parameter: seed must be an integer from {SEED_RANGE.start} to {SEED_RANGE.stop - 1}"
    if model.orders and body.get("order", model.default_order) not in model.orders:
        return f"invalid parameter: order must be one of {', '.join(model.orders)}"
    if not isinstance(body.get("enable_sync_mode", False), bool):
        return "invalid parameter: enable_sync_mode must be a boolean"
    return ""
