"""The emulator: its two servers (the API and the CDN origin), routes, worker pool and lifecycle."""

from __future__ import annotations

import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request

from s2v.adapters.providers.wavespeed import (
    RESULT_PATH,
    UPLOAD_PATH,
    WEBHOOK_SECRET_PATH,
)
from s2v.model import provider_facts
from s2v.model.models import CATALOG, Catalog
from s2v_local.emulator.account import DEFAULT_BALANCE_USD, Account
from s2v_local.emulator.cdn import Cdn
from s2v_local.emulator.faults import Faults
from s2v_local.emulator.media import Media
from s2v_local.emulator.predictions import Predictions
from s2v_local.emulator.webhooks import WEBHOOK_TIMEOUT
from s2v_local.emulator.wsgi import QuietHandler, Server, envelope, log

MAX_UPLOAD_BYTES = provider_facts.UPLOAD_MAX_BYTES


class Emulator(Predictions, Account, Media, Cdn):
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
        self._models = {}
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
        self.charges = {}
        self.submission_count = 0
        self.render_count = 0  # ffmpeg renders so far; each stamps its frames with this number (mod 256)
        self.tasks = {}
        self.web_predictions = {}
        self.finished_at = {}
        self.reuse_renders = reuse_renders
        self._with_web_predictions = web_predictions
        self._renders = {}
        self._born = {}
        self._completed = {}
        self._order = {}
        self.webhook_deliveries = []
        self._host, self._port, self._concurrency = host, port, concurrency
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._running = {}
        self._uploads = {}
        self._threads = []
        self._server: Server | None = None
        self._serving: threading.Thread | None = None
        self._output_server: Server | None = None
        self._output_serving: threading.Thread | None = None
        self._ffmpeg = ""
        self._pool = None
        self._workdir = None
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
        self._server = Server(self._host, self._port, self._app, QuietHandler, False, None)
        self.base_url = f"http://{self._host}:{self._server.port}"
        self._serving = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                         name="s2v-emulator-http", daemon=True)
        self._serving.start()
        self._output_server = Server(self._host, 0, self._output_app, QuietHandler, False, self._output_tls)
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
            response = envelope(413, f"payload too large (at most {MAX_UPLOAD_BYTES} bytes)")
        except HTTPException as exc:
            response = envelope(exc.code or 500, exc.description or exc.name)
        except Exception:
            log.exception("emulator request failed")
            response = envelope(500, "internal server error")
        return response(environ, start_response)
