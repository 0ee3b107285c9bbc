"""`s2v dashboard`: a small web app on 127.0.0.1 over the operator's own access to one stack.

Flask serves server-rendered pages (templates/) with a little script and Chart.js (static/,
vendored: see static/VENDORED.md); data.py reads the jobs table through its indexes and the
bucket through presigned links made on demand. Nothing here is part of the Lambda layer, and
nothing is added to the deployed stack: it reads and acts with the caller's credentials.
"""

from __future__ import annotations

import logging
import secrets
import threading
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from s2v_cli.target import Target


@contextmanager
def running(target: Target, *, port: int = 0, access_key: str | None = None, verbose: bool = False,
            data_options: dict[str, Any] | None = None) -> Iterator[str]:
    """Serve the dashboard for ``target`` on 127.0.0.1 in a background thread; yields its URL
    (with the access key) and stops the server on exit."""
    from werkzeug.serving import make_server

    # Request lines would print the access key of the first visit; keep them for --verbose.
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.WARNING)

    from s2v_cli.dashboard.app import create_app
    from s2v_cli.dashboard.data import DashboardData

    key = access_key or secrets.token_urlsafe(24)
    app = create_app(DashboardData(target, **(data_options or {})), access_key=key)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="s2v-dashboard", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/?key={key}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def serve(target: Target, *, port: int, open_browser: bool, say: Callable[[str], None],
          wait: Callable[[], None], verbose: bool = False) -> None:
    """Run the dashboard until ``wait`` returns (Ctrl-C)."""
    with running(target, port=port, verbose=verbose) as url:
        say(f"s2v dashboard for {target.description}")
        say(f"  open {url}")
        say("  (the address carries this run's access key; it listens on 127.0.0.1 only; Ctrl-C to stop)")
        if open_browser and not webbrowser.open(url):
            say("  no browser could be opened here: open the address above yourself")
        wait()
