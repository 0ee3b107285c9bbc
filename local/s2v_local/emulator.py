"""A WaveSpeed-compatible server on loopback: the documented API, real MP4s, injectable faults.

It speaks what s2v and the official ``wavespeed`` SDK use: submit (with ``?webhook=`` and
``enable_sync_mode``), result, list, delete, balance, binary and ticket media uploads, and the
webhook secret, in the documented ``{code, message, data}`` envelope. A task goes created →
processing → completed or failed on a small worker pool: the worker downloads the image and audio
URLs, renders the still image over the audio with ffmpeg from the imageio-ffmpeg wheel (H.264 +
AAC, up to the provider's 10 minutes), charges the balance by the provider's billing rule and POSTs
the task to the webhook, signed as WaveSpeed signs it. Videos come at the provider's frame rate with
its frame quantization (``provider_facts.output_frames``), and every frame shows its own number and
the render's tag in its pixels (``s2v_local.stamps``), so tests can tell which rendered frame each
frame of a stitched talk shows.

Like the real service, outputs come from another origin than the API: a second server, reached by
another host name (``output_host``: ``localhost`` when the API is on ``127.0.0.1``), at
``/predictions/<task id>/1.mp4`` as on the provider's CDN, so every local run crosses hosts as a
real one does. Predictions and outputs are kept ``RETENTION_SECONDS`` (7 days) by ``clock``; after
that the result is a 404, the list leaves them out and the output answers 403 as a CDN does. A few
"web" predictions of other models are mixed into the list, as the real list mixes them in.

Every model of the table (``s2v.model.models``) is served at its own path with its own fields,
validation errors, limits and price; a two-speaker model mixes or concatenates the tracks as the
task's ``order`` says, so the video is as long as the provider's rule makes it.

The provider facts come from ``s2v.model.provider_facts``; what the docs leave open is marked
"assumed" where the emulator decides it (a deleted task keeps answering with status "deleted").

    with Emulator(render_seconds=0.5) as emulator:
        client = WaveSpeedClient(emulator.base_url, emulator.api_key)
        emulator.faults = Faults(submit_429=1)   # the next submit is refused
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import mimetypes
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.utils import secure_filename, send_file
from werkzeug.wrappers import Request, Response

from s2v.adapters.providers.wavespeed import (
    MODEL,
    RESULT_PATH,
    UPLOAD_PATH,
    WEBHOOK_SECRET_PATH,
    iso_to_epoch,
    sign_webhook,
)
from s2v.model import provider_facts
from s2v.model.models import CATALOG, SEQUENCE, Catalog, Model
from s2v_local import stamps

log = logging.getLogger("s2v_local.emulator")

WEBHOOK_MODES = ("normal", "none", "twice", "late", "out_of_order")
SHORT_SIDES = {"480p": 480, "720p": 720}  # the short side of the output, at most
RESOLUTIONS = {name: SHORT_SIDES[name] for name in provider_facts.RESOLUTIONS}
SEED_RANGE = range(-1, 2147483647 + 1)
FRAMES_PER_SECOND = provider_facts.OUTPUT_FRAMES_PER_SECOND
MAX_INPUT_BYTES = provider_facts.UPLOAD_MAX_BYTES
MAX_UPLOAD_BYTES = provider_facts.UPLOAD_MAX_BYTES
LATE_WEBHOOK_SECONDS = 3.0
# Probes get this long; a render gets this plus the clip's own length (never needed on a sane box).
FFMPEG_TIMEOUT_SECONDS = 120
DEFAULT_BALANCE_USD = 100.0
# "Web" predictions the list mixes in (created on the website, other models): (model, age, status).
# The last is older than the retention window, so the list never shows it.
WEB_PREDICTIONS = (("wavespeed-ai/flux-dev", 20 * 60, "completed"),
                   ("wavespeed-ai/wan-2.2/i2v-480p", 3 * 3600, "failed"),
                   ("wavespeed-ai/flux-dev", 2 * 86400, "completed"),
                   ("wavespeed-ai/flux-dev", 8 * 86400, "completed"))
FETCH_TIMEOUT = (5.0, 30.0)
WEBHOOK_TIMEOUT = (5.0, 15.0)
DEFAULT_FAIL_MESSAGE = "task execution failed (1403): the emulator was told to fail this render"


@dataclass
class Faults:
    """What goes wrong, all off by default. Replace ``emulator.faults`` at any time. Counters
    (``submit_429`` …) count down per request; ``fail_renders``, ``fail_message``, ``nsfw`` and
    the webhook settings are taken when a task is submitted; the rest are read per request."""

    submit_429: int = 0  # the next N submits answer 429 with Retry-After
    result_429: int = 0
    result_500: int = 0
    submit_500_after_accept: int = 0  # the task is accepted, then the answer is a 500 (ambiguous)
    submit_delay_seconds: float = 0.0  # the task is accepted, then the answer comes this late
    result_delay_seconds: float = 0.0
    fail_renders: bool = False  # tasks end failed with fail_message (after fetching their inputs)
    fail_message: str = DEFAULT_FAIL_MESSAGE
    nsfw: bool = False  # outputs are flagged in has_nsfw_contents
    output_404: bool = False
    output_truncate_at: int | None = None  # serve this many bytes, with the full Content-Length
    # normal | none | twice (same webhook-id again) | late (signed at completion, sent
    # webhook_delay_seconds — default LATE_WEBHOOK_SECONDS — later) | out_of_order (a stale
    # "processing" callback after the final one)
    webhook_mode: str = "normal"
    webhook_delay_seconds: float = 0.0
    webhook_timestamp_skew_seconds: float = 0.0  # shifts the signed timestamp (negative: stale)
    retry_after_seconds: int = 1
    # List, delete and balance: the next N answer 500, or answer only after hang_seconds (longer
    # than a test client's timeout: it gives up, the server still does the work, as a real one may).
    list_429: int = 0
    list_500: int = 0
    list_timeout: int = 0
    delete_500: int = 0
    delete_timeout: int = 0
    balance_500: int = 0
    balance_timeout: int = 0
    hang_seconds: float = 3.0

    def __post_init__(self) -> None:
        if self.webhook_mode not in WEBHOOK_MODES:
            raise ValueError(f"webhook_mode must be one of {', '.join(WEBHOOK_MODES)}, not {self.webhook_mode!r}")


@dataclass(frozen=True)
class WebhookDelivery:
    url: str
    webhook_id: str
    task_id: str
    task_status: str
    status_code: int | None  # the receiver's answer; None when it could not be reached
    error: str = ""


class TaskFailed(Exception):
    """The render cannot finish; the message becomes the task's ``error``."""


@dataclass
class _Upload:
    path: Path
    content_type: str
    complete: bool = False


@dataclass(frozen=True)
class _Running:
    faults: Faults  # a copy taken at submit time
    webhook_url: str
    input: dict[str, Any]
    cancelled: threading.Event = field(default_factory=threading.Event)  # set by a delete


class _QuietHandler(WSGIRequestHandler):
    # werkzeug logs every request line to stderr by default, ?webhook= callback token and all.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("%s: " + message, type, *args)


class _Server(ThreadedWSGIServer):
    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("%s: " + message, type, *args)


class Emulator:
    def __init__(self, *, api_key: str = "local-dev-key", render_seconds: float = 1.0,
                 webhook_secret: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, concurrency: int = 2,
                 max_audio_seconds: float = provider_facts.MAX_SECONDS_PER_CALL,
                 sync_timeout_seconds: float = 60.0, reuse_renders: bool = False,
                 output_host: str | None = None, output_tls: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.time, balance: float = DEFAULT_BALANCE_USD,
                 web_predictions: bool = True, catalog: Catalog = CATALOG) -> None:
        """``concurrency`` tasks render at once (WaveSpeed's default account level allows 2);
        the rest wait as ``created``. ``render_seconds`` is the least time a task is processing.
        ``reuse_renders``: inputs rendered before (same image, audio and resolution) get a copy of
        that video instead of another ffmpeg run, so load tests measure s2v, not ffmpeg.
        ``output_host``: the name outputs are served under (default: ``localhost``, or
        ``127.0.0.1`` when the API itself is on ``localhost``); it listens on ``host``, so any other
        name must resolve there. ``output_tls``: a server context to serve outputs over https (a
        test can name the real CDN host, resolve it to loopback and trust its own CA, and deliver
        with the default allow-list). ``clock`` (Unix seconds) dates
        tasks and expires them after RETENTION_SECONDS; advance it to age them. ``balance`` (USD)
        is charged per completed render; set ``emulator.balance`` at any time. ``catalog``: the
        models served, each at its path with its own fields, orders, limits and prices."""
        self.api_key = api_key
        self.catalog = catalog
        self._models: dict[str, Model] = {}  # task id → the model it was submitted to
        self.render_seconds = render_seconds
        self.webhook_secret = webhook_secret or f"whsec_{secrets.token_hex(24)}"
        self.faults = faults or Faults()
        self.max_audio_seconds = max_audio_seconds
        self.sync_timeout_seconds = sync_timeout_seconds
        self.base_url = ""
        self.output_host = output_host or ("127.0.0.1" if host == "localhost" else "localhost")
        self._output_tls = output_tls
        self.output_base_url = ""
        self.clock = clock
        self.balance = balance
        self.charges: dict[str, float] = {}  # task id → USD charged for it
        self.submission_count = 0
        self.render_count = 0  # ffmpeg renders so far; each stamps its frames with this number (mod 256)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.web_predictions: dict[str, dict[str, Any]] = {}  # other models, made "on the website"
        self.finished_at: dict[str, float] = {}  # task id → time.time() it became completed/failed
        self.reuse_renders = reuse_renders
        self._with_web_predictions = web_predictions
        self._renders: dict[str, tuple[Path, dict[str, float]]] = {}
        self._born: dict[str, float] = {}  # prediction id → clock() at creation
        self._completed: dict[str, float] = {}  # task id → clock() at completion (outputs expire from it)
        self._order: dict[str, int] = {}  # creation order, to break ties in the list
        self.webhook_deliveries: list[WebhookDelivery] = []
        self._host, self._port, self._concurrency = host, port, concurrency
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._running: dict[str, _Running] = {}
        self._uploads: dict[str, _Upload] = {}
        self._threads: list[threading.Thread] = []
        self._server: _Server | None = None
        self._serving: threading.Thread | None = None
        self._output_server: _Server | None = None
        self._output_serving: threading.Thread | None = None
        self._ffmpeg = ""
        self._pool: ThreadPoolExecutor | None = None
        self._workdir: Path | None = None
        self._sessions = threading.local()
        self._routes = Map([
            *(Rule(f"/api/v3/{model.path}", methods=["POST"], endpoint="submit", defaults={"model_path": model.path})
              for model in self.catalog.models),
            Rule("/api/v3/<path:model>", methods=["POST"], endpoint="unknown_model"),
            Rule(RESULT_PATH.format(id="<task_id>"), methods=["GET"], endpoint="result"),
            Rule("/api/v3/predictions/<task_id>", methods=["GET"], endpoint="result"),
            Rule(provider_facts.LIST_PATH, methods=["POST"], endpoint="list"),
            Rule(provider_facts.DELETE_PATH.format(id="<task_id>"), methods=["DELETE"], endpoint="delete"),
            Rule(provider_facts.LIST_PATH + "/delete", methods=["POST"], endpoint="delete_many"),
            Rule(provider_facts.BALANCE_PATH, methods=["GET"], endpoint="balance"),
            Rule("/api/v3/balance", methods=["GET"], endpoint="balance"),  # the older docs page's path
            Rule(UPLOAD_PATH, methods=["POST"], endpoint="upload_binary"),
            Rule("/api/v3/media/uploads", methods=["POST"], endpoint="upload_ticket"),
            Rule(WEBHOOK_SECRET_PATH, methods=["GET"], endpoint="webhook_secret"),
            Rule("/uploads/<token>", methods=["PUT"], endpoint="upload_put"),
            Rule("/media/<token>/<filename>", methods=["GET"], endpoint="media"),
        ])
        # The CDN origin: another server, another host name, the CDN's path.
        self._output_routes = Map([
            Rule(provider_facts.OUTPUT_PATH.format(id="<task_id>"), methods=["GET"], endpoint="output"),
        ])

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        if self._server is not None:
            return self.base_url
        import imageio_ffmpeg

        self._ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()  # fail here, not in the first render
        self._stopping.clear()
        self._workdir = Path(tempfile.mkdtemp(prefix="s2v-emulator-"))
        for sub in ("outputs", "media", "work"):
            (self._workdir / sub).mkdir()
        self._pool = ThreadPoolExecutor(max_workers=max(1, self._concurrency), thread_name_prefix="s2v-emulator")
        self._server = _Server(self._host, self._port, self._app, _QuietHandler, False, None)
        self.base_url = f"http://{self._host}:{self._server.port}"
        self._serving = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                         name="s2v-emulator-http", daemon=True)
        self._serving.start()
        self._output_server = _Server(self._host, 0, self._output_app, _QuietHandler, False, self._output_tls)
        scheme = "https" if self._output_tls is not None else "http"
        self.output_base_url = f"{scheme}://{self.output_host}:{self._output_server.port}"
        self._output_serving = threading.Thread(target=self._output_server.serve_forever,
                                                kwargs={"poll_interval": 0.1}, name="s2v-emulator-cdn", daemon=True)
        self._output_serving.start()
        if self._with_web_predictions:
            self._add_web_predictions()
        log.info("WaveSpeed emulator on %s, outputs on %s", self.base_url, self.output_base_url)
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for server in (self._server, self._output_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._output_server = None
        for serving in (self._serving, self._output_serving):
            if serving is not None:
                serving.join(timeout=5)
        self._serving = self._output_serving = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for thread in self._threads:
            thread.join(timeout=WEBHOOK_TIMEOUT[0])
        self._threads.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests and demos

    def output_path(self, task_id: str) -> Path:
        assert self._workdir is not None, "the emulator is not running"
        return self._workdir / "outputs" / f"{task_id}.mp4"

    def output_url(self, task_id: str) -> str:
        return self.output_base_url + provider_facts.OUTPUT_PATH.format(id=task_id)

    def wait_for_task(self, task_id: str, statuses: tuple[str, ...] = ("completed", "failed", "deleted"),
                      timeout: float = 30.0) -> dict[str, Any]:
        """The task once its status is one of ``statuses``; TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.tasks.get(task_id, {}).get("status") in statuses, timeout):
                raise TimeoutError(f"task {task_id} is {self.tasks.get(task_id, {}).get('status')!r} after {timeout} s")
            return self.tasks[task_id]

    def wait_for_webhooks(self, count: int, timeout: float = 30.0) -> list[WebhookDelivery]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.webhook_deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.webhook_deliveries)} of {count} webhooks delivered after {timeout} s")
            return list(self.webhook_deliveries)

    # ------------------------------------------------------------------ HTTP

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        return self._dispatch(self._routes, environ, start_response)

    def _output_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        return self._dispatch(self._output_routes, environ, start_response)

    def _dispatch(self, routes: Map, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_UPLOAD_BYTES
        try:
            endpoint, values = routes.bind_to_environ(environ).match()
            response = getattr(self, f"_on_{endpoint}")(request, **values)
        except RequestEntityTooLarge:
            response = _envelope(413, f"payload too large (at most {MAX_UPLOAD_BYTES} bytes)")
        except HTTPException as exc:
            response = _envelope(exc.code or 500, exc.description or exc.name)
        except Exception:
            log.exception("emulator request failed")
            response = _envelope(500, "internal server error")
        return response(environ, start_response)

    def _authorized(self, request: Request) -> Response | None:
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
            return None
        return _envelope(401, "Unauthorized: invalid or missing API key")

    def _take(self, counter: str) -> bool:
        """Consume one of the ``faults.<counter>`` next-N faults, if any are left."""
        with self._lock:
            left = getattr(self.faults, counter)
            if left <= 0:
                return False
            setattr(self.faults, counter, left - 1)
            return True

    def _on_submit(self, request: Request, model_path: str = MODEL) -> Response:
        if denied := self._authorized(request):
            return denied
        faults = self.faults
        if self._take("submit_429"):
            return _envelope(429, "Too many requests: the account's concurrency limit is reached",
                             headers={"Retry-After": str(faults.retry_after_seconds)})
        body = request.get_json(silent=True)
        model = self.catalog.by_path(model_path)
        assert model is not None
        problem = submit_problem(body, model)
        if problem or not isinstance(body, dict):
            return _envelope(400, problem)
        # The documented form is ?webhook=; one docs page shows a body field instead.
        webhook = str(request.args.get("webhook") or body.get("webhook_url") or "")
        if webhook and not re.match(r"https?://", webhook):
            return _envelope(400, "invalid parameter: webhook must be an http(s) URL")
        task = self._accept(body, webhook, model)
        if body.get("enable_sync_mode") is True:
            task = self._wait_in_sync_mode(task["id"])
        if faults.submit_delay_seconds:
            self._stopping.wait(faults.submit_delay_seconds)
        if self._take("submit_500_after_accept"):
            return _envelope(500, "internal server error")
        return _envelope(200, "success", _public(task))

    def _on_unknown_model(self, request: Request, model: str) -> Response:
        return self._authorized(request) or _envelope(404, f"model {model} is not served by the WaveSpeed emulator")

    def _on_result(self, request: Request, task_id: str) -> Response:
        if denied := self._authorized(request):
            return denied
        faults = self.faults
        if faults.result_delay_seconds:
            self._stopping.wait(faults.result_delay_seconds)
        if self._take("result_429"):
            return _envelope(429, "Too many requests", headers={"Retry-After": str(faults.retry_after_seconds)})
        if self._take("result_500"):
            return _envelope(500, "internal server error")
        task = self._prediction(task_id)
        if task is None:
            return _envelope(404, f"prediction {task_id} not found")
        return _envelope(200, "success", _public(task))

    def _on_list(self, request: Request) -> Response:
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("list"):
            return slow
        body = request.get_json(silent=True)
        query, problem = list_query(body)
        if problem:
            return _envelope(400, problem)
        now = self.clock()
        with self._lock:
            everything = [*self.tasks.values(), *self.web_predictions.values()]
            born, order = dict(self._born), dict(self._order)
        matching = [task for task in everything if now - born[task["id"]] <= provider_facts.RETENTION_SECONDS
                    and query.matches(task)]
        matching.sort(key=lambda task: (born[task["id"]], order[task["id"]]), reverse=True)  # newest first
        start = (query.page - 1) * query.page_size
        items = [_listed(task, query.include_inputs) for task in matching[start:start + query.page_size]]
        return _envelope(200, "success", {"page": query.page, "total": len(matching), "items": items})

    def _on_delete(self, request: Request, task_id: str) -> Response:
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("delete"):
            return slow
        if not self.delete(task_id):
            return _envelope(404, f"prediction {task_id} not found")
        return _envelope(200, "success", {"id": task_id, "status": "deleted"})

    def _on_delete_many(self, request: Request) -> Response:
        # The docs' bulk form: {"ids": [...]}; unknown ids are ignored.
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("delete"):
            return slow
        body = request.get_json(silent=True)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _envelope(400, "invalid parameter: ids must be a list of prediction ids")
        return _envelope(200, "success", {"ids": [i for i in ids if self.delete(i)]})

    def _on_balance(self, request: Request) -> Response:
        if denied := self._authorized(request):
            return denied
        if slow := self._faulty("balance"):
            return slow
        with self._lock:
            balance = round(self.balance, 6)
        return _envelope(200, "success", {"balance": balance, "currency": provider_facts.CURRENCY})

    def _faulty(self, call: str) -> Response | None:
        """The ``<call>_429`` / ``<call>_500`` answer if one is due; waits first for ``<call>_timeout``."""
        faults = self.faults
        if self._take(f"{call}_timeout"):
            self._stopping.wait(faults.hang_seconds)
        if hasattr(faults, f"{call}_429") and self._take(f"{call}_429"):
            return _envelope(429, "Too many requests", headers={"Retry-After": str(faults.retry_after_seconds)})
        if self._take(f"{call}_500"):
            return _envelope(500, "internal server error")
        return None

    def _on_webhook_secret(self, request: Request) -> Response:
        return self._authorized(request) or _envelope(200, "success", {"secret": self.webhook_secret})

    def _on_upload_binary(self, request: Request) -> Response:
        if denied := self._authorized(request):
            return denied
        upload = request.files.get("file")
        if upload is None:
            return _envelope(400, "file is required (multipart/form-data field 'file')")
        token, name = uuid.uuid4().hex, _safe_name(upload.filename)
        path = self._media_dir / token
        upload.save(path)
        content_type = upload.mimetype or "application/octet-stream"
        with self._lock:
            self._uploads[token] = _Upload(path, content_type, complete=True)
        return _envelope(200, "success", {"type": media_type(content_type, name),
                                          "download_url": f"{self.base_url}/media/{token}/{name}",
                                          "filename": name, "size": path.stat().st_size})

    def _on_upload_ticket(self, request: Request) -> Response:
        # The SDK's upload: ask for a ticket, PUT the bytes to its URL, use its download_url.
        if denied := self._authorized(request):
            return denied
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("filename"), str) or not body["filename"]:
            return _envelope(400, "filename is required")
        token, name = uuid.uuid4().hex, _safe_name(body["filename"])
        content_type = body.get("content_type") if isinstance(body.get("content_type"), str) else None
        with self._lock:
            self._uploads[token] = _Upload(self._media_dir / token, content_type or "application/octet-stream")
        return _envelope(200, "success", {
            "type": media_type(content_type or "", name),
            "upload": {"method": "PUT", "url": f"{self.base_url}/uploads/{token}",
                       "headers": {"Content-Type": content_type} if content_type else {}},
            "download_url": f"{self.base_url}/media/{token}/{name}",
        })

    def _on_upload_put(self, request: Request, token: str) -> Response:
        upload = self._uploads.get(token)
        if upload is None or upload.complete:
            return Response("unknown or used upload URL", status=404)
        with upload.path.open("wb") as out:
            shutil.copyfileobj(request.stream, out)
        upload.complete = True
        return Response(status=200)

    def _on_media(self, request: Request, token: str, filename: str) -> Response:
        upload = self._uploads.get(token)
        if upload is None or not upload.complete:
            return Response("not found", status=404)
        return _file_response(request, upload.path, upload.content_type)

    def _on_output(self, request: Request, task_id: str) -> Response:
        faults = self.faults
        if faults.output_404:
            return Response("not found", status=404)
        path = self.output_path(task_id)
        completed = self._completed.get(task_id)
        if (completed is None or self.clock() - completed > provider_facts.RETENTION_SECONDS
                or not path.is_file()):
            # What S3 behind CloudFront answers for a key that is gone (or never was).
            return Response(ACCESS_DENIED, status=403, mimetype="application/xml")
        truncate_at = faults.output_truncate_at
        if truncate_at is None or truncate_at >= path.stat().st_size:
            return _file_response(request, path, "video/mp4")
        # A download that breaks mid-stream: the full Content-Length, then the connection closes.
        size = path.stat().st_size
        with path.open("rb") as source:
            head = source.read(truncate_at)
        return Response(iter([head]), status=200, headers={"Content-Type": "video/mp4", "Content-Length": str(size)},
                        direct_passthrough=True)

    # ------------------------------------------------------------------ tasks

    @property
    def _media_dir(self) -> Path:
        assert self._workdir is not None, "the emulator is not running"
        return self._workdir / "media"

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
            "status": "created", "created_at": _iso(born), "error": "", "timings": {"inference": 0},
        }
        with self._changed:
            self.tasks[task_id] = task
            self._born[task_id], self._order[task_id] = born, len(self._order)
            self._running[task_id] = _Running(replace(self.faults), webhook_url, task_input)
            self.submission_count += 1
            self._changed.notify_all()
        assert self._pool is not None
        self._pool.submit(self._work, task_id)
        return task

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
                    "has_nsfw_contents": [False] * len(outputs), "status": status, "created_at": _iso(now - age),
                    "error": "" if status == "completed" else "task execution failed (1403)",
                    "timings": {"inference": 2500},
                }
                self._born[task_id], self._order[task_id] = now - age, len(self._order)

    def _prediction(self, task_id: str) -> dict[str, Any] | None:
        """A task or web prediction still within the retention window."""
        task = self.tasks.get(task_id) or self.web_predictions.get(task_id)
        born = self._born.get(task_id)
        if task is None or born is None or self.clock() - born > provider_facts.RETENTION_SECONDS:
            return None
        return task

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

    def _render(self, task_id: str, running: _Running) -> dict[str, float]:
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
                    lay_out_tracks(self._ffmpeg, [track_paths[r] for r in _played(model, order)],
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

    def _http(self) -> requests.Session:
        """This thread's session (a Session is not meant to be shared between threads)."""
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
            session.trust_env = False  # loopback only: never through a proxy from the environment
        return session

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

    # ------------------------------------------------------------------ webhooks

    def _send_webhooks_later(self, task_id: str, running: _Running) -> None:
        if not running.webhook_url or running.faults.webhook_mode == "none":
            return
        finished_at = time.time()
        thread = threading.Thread(target=self._send_webhooks, args=(task_id, running, finished_at),
                                  name="s2v-emulator-webhook", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _send_webhooks(self, task_id: str, running: _Running, finished_at: float) -> None:
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


# ---------------------------------------------------------------------- validation and rendering

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


def _played(model: Model, order: str) -> list[str]:
    """The audio roles in the order they play ("right_left" puts the right speaker first)."""
    roles = list(model.audio_roles)
    return list(reversed(roles)) if order.startswith("right") else roles


def lay_out_tracks(ffmpeg: str, tracks: list[Path], *, sequence: bool, target: Path) -> None:
    """One soundtrack from the speakers' tracks: concatenated (one after the other) or mixed."""
    inputs = [arg for path in tracks for arg in ("-i", str(path))]
    labels = "".join(f"[{i}:a]" for i in range(len(tracks)))
    graph = (f"{labels}concat=n={len(tracks)}:v=0:a=1[out]" if sequence
             else f"{labels}amix=inputs={len(tracks)}:duration=longest:normalize=0[out]")
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *inputs,
               "-filter_complex", graph, "-map", "[out]", "-ac", "1", "-ar", "16000", "-f", "wav", str(target)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise TaskFailed("task execution failed (1403): the audio tracks could not be decoded")


def write_still_frame(image: bytes, target: Path, short_side: int) -> None:
    """The image as an RGB PNG no larger than the resolution asks, with even dimensions (yuv420p)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as opened:
            frame = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise TaskFailed("task execution failed (1403): the image could not be decoded") from exc
    width, height = frame.size
    scale = min(1.0, short_side / min(width, height), round(short_side * 16 / 9) / max(width, height))
    size = (max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2))
    if size != frame.size:
        frame = frame.resize(size, Image.Resampling.BILINEAR)
    frame.save(target, format="PNG", compress_level=1)


def audio_seconds(ffmpeg: str, path: Path) -> float:
    # ffmpeg -i without an output prints the streams and exits non-zero; that is expected.
    probe = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                           text=True, timeout=FFMPEG_TIMEOUT_SECONDS, check=False).stderr
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", probe)
    if not re.search(r"Stream #.*Audio:", probe) or not duration:
        raise TaskFailed("task execution failed (1403): the audio could not be decoded")
    hours, minutes, seconds = duration.groups()
    total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if total <= 0:
        raise TaskFailed("task execution failed (1403): the audio is empty")
    return total


def render_video(ffmpeg: str, frame: Path, audio: Path, seconds: float, target: Path, *,
                 cancelled: threading.Event | None = None, tag: int = 0) -> None:
    """H.264 (yuv420p) of the still frame at the provider's frame rate, ``output_frames(seconds)``
    frames each stamped (``tag``, its number), + AAC of the audio. The frame is converted once and
    looped, and the fast AAC coder is used, so a 10-minute render at 16 fps takes seconds (the H.264
    encode dominates; bench/README.md). Setting ``cancelled`` stops ffmpeg (TaskFailed)."""
    fps = FRAMES_PER_SECOND
    frames = provider_facts.output_frames(seconds)
    video = (f"[0:v]format=yuv420p,loop=loop=-1:size=1,settb=1/{fps},setpts=N,{stamps.drawbox_filter(tag)},"
             f"trim=end_frame={frames}[v]")
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-i", str(frame), "-i", str(audio), "-filter_complex", video,
        "-map", "[v]", "-map", "1:a:0", "-r", str(fps),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k", "-movflags", "+faststart",
        "-f", "mp4", str(target),
    ]
    deadline = time.monotonic() + FFMPEG_TIMEOUT_SECONDS + seconds
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        while True:
            try:
                _, stderr = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                stop = "deleted while rendering" if cancelled is not None and cancelled.is_set() else (
                    "the render timed out" if time.monotonic() > deadline else "")
                if stop:
                    proc.kill()
                    proc.communicate()
                    raise TaskFailed(f"task execution failed (1403): {stop}") from None
    if proc.returncode != 0:
        reason = (stderr.strip().splitlines() or ["ffmpeg failed"])[-1][:200]
        raise TaskFailed(f"task execution failed (1403): {reason}")


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


def media_type(content_type: str, filename: str) -> str:
    """The upload answer's ``type``: image, video or audio (documented values), else "file"."""
    guessed = content_type if "/" in content_type and content_type != "application/octet-stream" else (
        mimetypes.guess_type(filename)[0] or "")
    kind = guessed.split("/", 1)[0]
    return kind if kind in provider_facts.UPLOAD_TYPES else "file"


# ---------------------------------------------------------------------- small pieces

FINAL_STATUSES = ("completed", "failed", "deleted")
ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message></Error>")

def _public(task: Mapping[str, Any]) -> dict[str, Any]:
    """The task as the result endpoint shows it (the webhook body also carries ``input``)."""
    return {name: value for name, value in task.items() if name != "input"}


def _listed(task: Mapping[str, Any], include_inputs: bool) -> dict[str, Any]:
    """A list item: the task, with the docs example's ``executionTime`` (ms) and, when asked, its input."""
    item = dict(task) if include_inputs else _public(task)
    timings = task.get("timings")
    item["executionTime"] = timings.get("inference", 0) if isinstance(timings, Mapping) else 0
    return item


def _envelope(code: int, message: str, data: Any = None, *, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps({"code": code, "message": message, "data": data}), status=code,
                    mimetype="application/json", headers=dict(headers or {}))


def _file_response(request: Request, path: Path, content_type: str) -> Response:
    return send_file(path, request.environ, mimetype=content_type, max_age=None)


def _safe_name(filename: str | None) -> str:
    return secure_filename(filename or "") or "upload"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
