"""The dashboard's web app (Flask): pages, live fragments, presigned links and the two actions.

Only the operator reaches it: it listens on 127.0.0.1, answers only to a loopback Host header (no
DNS rebinding), and wants the access key from the URL ``s2v dashboard`` prints (kept in a
same-site cookie after the first visit), so other local users and web pages cannot use it. Every
POST also carries a CSRF token from the page.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from flask import Flask, Response, abort, redirect, render_template, request, url_for
from markupsafe import Markup

from s2v.model.errors import InputError
from s2v.model.jobs import CANCELLABLE, Job, Status
from s2v_cli import views
from s2v_cli.dashboard.data import DashboardData, timeline, utc_day_bounds
from s2v_cli.queries import PAGE_SIZE
from s2v_cli.safe import shown

COOKIE = "s2v_dashboard"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LIVE_SECONDS = 3  # pages ask for fresh data this often while they are visible
SEARCH_SECONDS = 1.0  # a folder/name search reads no further chunks after this; "keep searching" goes on


def create_app(data: DashboardData, *, access_key: str | None = None) -> Flask:
    """The app over ``data``, for the holder of ``access_key`` (a fresh random one by default)."""
    app = Flask(__name__)
    key = access_key or secrets.token_urlsafe(24)
    csrf = hmac.new(key.encode(), b"csrf", "sha256").hexdigest()
    app.config.update(S2V_ACCESS_KEY=key, S2V_CSRF=csrf, MAX_CONTENT_LENGTH=16 * 1024,
                      SEND_FILE_MAX_AGE_DEFAULT=3600)
    app.jinja_env.globals.update(usd=views.usd, format_time=views.format_time, format_age=views.format_age,
                                 inputs_label=views.inputs_label, is_charged=views.is_charged,
                                 retry_possible=views.retry_possible,
                                 short=views.SHORT_ID, live_seconds=LIVE_SECONDS, csrf_token=csrf,
                                 target=data.target.description, target_bucket=data.target.bucket,
                                 STATUSES=list(Status))
    # Every value a template shows passes the one sanitizer (keys, notes and reasons are user data);
    # markup the app made itself (tojson's script data, already escaped) is left whole.
    app.jinja_env.finalize = lambda value: shown(value) if isinstance(value, str) and not isinstance(
        value, Markup) else value

    @app.before_request
    def only_the_operator() -> Any:
        host = (request.host or "").rsplit(":", 1)[0]
        if host not in LOOPBACK_HOSTS:
            abort(403, "this dashboard answers only on 127.0.0.1 (open the URL `s2v dashboard` printed)")
        if request.endpoint == "static":
            return None  # the stylesheet and script hold no data; a refused page needs them too
        given = request.args.get("key", "")
        if given and _same(given, key):
            # First visit from the printed URL: keep the key in a cookie and drop it from the address bar.
            args = {k: v for k, v in request.args.items() if k != "key"}
            response = redirect(request.path + ("?" + urlencode(args) if args else ""), code=303)
            response.set_cookie(COOKIE, key, httponly=True, samesite="Strict")
            return response
        if not _same(request.cookies.get(COOKIE, ""), key):
            abort(403, "open the URL `s2v dashboard` printed: it carries this dashboard's access key")
        if request.method == "POST":
            token = request.form.get("csrf_token", "")
            origin = request.headers.get("Origin")
            if not _same(token, csrf) or (origin and origin != request.host_url.rstrip("/")):
                abort(403, "missing or wrong CSRF token: use the buttons on the dashboard's pages")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"  # not "no-referrer": that makes a form's Origin "null"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: http: https:; media-src 'self' http: https:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
        return response

    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(400)
    def refused(error: Any) -> tuple[str, int]:
        return render_template("error.html", code=error.code, message=error.description), error.code

    @app.errorhandler(ClientError)
    def aws_refused(exc: ClientError) -> tuple[str, int]:
        error = exc.response.get("Error", {})
        message = f"AWS refused {exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
        if "index" in str(error.get("Message", "")).lower():
            message += (" — the jobs table lacks the indexes this version reads (status-index, created-index): "
                        "deploy this version's template.yaml first")
        return render_template("error.html", code=502, message=message), 502

    @app.errorhandler(EndpointConnectionError)
    @app.errorhandler(ConnectionClosedError)
    def stack_gone(exc: Exception) -> tuple[str, int]:
        if data.target.local:
            message = (f"The local stack this dashboard shows ({data.target.description}) has stopped. Stop this "
                       "dashboard (Ctrl-C) and run `s2v dashboard` again: it uses the running local stack "
                       "(`s2v local up --detach` starts one) or starts one itself with the jobs kept.")
        else:
            message = f"{data.target.description} cannot be reached ({exc}); check your network and credentials."
        return render_template("error.html", code=503, message=message), 503

    # --- pages -------------------------------------------------------------------------------------

    @app.get("/")
    def overview() -> Any:
        fragment = request.args.get("fragment") == "1"
        return render_template("_overview_live.html" if fragment else "overview.html", o=data.overview(),
                               page="overview")

    @app.get("/jobs")
    def jobs() -> Any:
        args = request.args
        state_text = args.get("state", "").upper()
        state = Status(state_text) if state_text in Status.__members__ else None
        day_from, day_to = args.get("from", ""), args.get("to", "")
        since, until = utc_day_bounds(day_from, end=False), utc_day_bounds(day_to, end=True)
        folder, name, cursor = args.get("folder", "").strip(), args.get("name", "").strip(), args.get("cursor", "")
        page = data.queries.page(status=state, since=since, until=until, folder=folder, name=name, cursor=cursor,
                                 size=PAGE_SIZE, read_seconds=SEARCH_SECONDS)
        given = (("state", str(state) if state else ""), ("folder", folder), ("name", name),
                 ("from", day_from if since else ""), ("to", day_to if until else ""))
        filters: dict[str, Any] = {k: v for k, v in given if v}
        context = {"page_": page, "filters": filters, "state": state, "first": not cursor,
                   "next_url": url_for("jobs", **filters, cursor=page.cursor) if page.cursor else "",
                   "first_url": url_for("jobs", **filters), "now": data._clock(), "page": "jobs",
                   "bad_dates": [d for d, t in ((day_from, since), (day_to, until)) if d and t is None]}
        if args.get("fragment") == "1":
            return render_template("_jobs_rows.html", **context)
        return render_template("jobs.html", **context)

    @app.get("/jobs/<job_id>")
    def job(job_id: str) -> Any:
        found = _job_or_404(job_id)
        fragment = request.args.get("fragment") == "1"
        segments = views.segment_rows(found, data.segments(found)) if found.is_parent else []
        context = {"job": found, "steps": timeline(found), "record": _record(found, data.target.bucket),
                   "page": "jobs", "notice": request.args.get("notice", ""),
                   "cancellable": found.status in CANCELLABLE, "segments": segments}
        return render_template("_job_live.html" if fragment else "job.html", **context)

    @app.get("/jobs/<job_id>/video")
    def video(job_id: str) -> Any:
        found = _job_or_404(job_id)
        if found.status is not Status.DELIVERED or not found.output_key:
            abort(404, f"job {job_id} has no video ({found.status})")
        return redirect(data.presigned(found.output_key, content_type="video/mp4"), code=302)

    @app.get("/jobs/<job_id>/<kind>")
    def input_file(job_id: str, kind: str) -> Any:
        found = _job_or_404(job_id)
        obj = {"image": found.image, "audio": found.audio}.get(kind)
        if obj is None:
            abort(404, f"job {job_id} has no {kind} input")
        return redirect(data.presigned(obj.key), code=302)

    # --- actions -----------------------------------------------------------------------------------

    @app.post("/jobs/<job_id>/retry")
    def retry(job_id: str) -> Any:
        from s2v.flows.ingest import retry_failed

        old = _job_or_404(job_id)
        try:
            new = retry_failed(old.job_id, data.target.deps())
        except InputError as exc:
            return redirect(url_for("job", job_id=old.job_id, notice=exc.reason), code=303)
        return redirect(url_for("job", job_id=new.job_id), code=303)

    @app.post("/jobs/<job_id>/cancel")
    def cancel_job(job_id: str) -> Any:
        """The CLI's `s2v cancel`: the same core flow, recorded as done by the operator through the dashboard."""
        from s2v.flows.cancel import cancel

        old = _job_or_404(job_id)
        try:
            outcome = cancel(old.job_id, data.target.deps(), by=f"{operator()} (s2v dashboard)")
        except InputError as exc:
            return redirect(url_for("job", job_id=old.job_id, notice=exc.reason), code=303)
        lines = views.cancel_lines(outcome.job, was=outcome.was, bucket=data.target.bucket)
        return redirect(url_for("job", job_id=old.job_id, notice="\n".join(lines)), code=303)

    @functools.cache
    def operator() -> str:
        return data.target.who()

    def _job_or_404(job_id: str) -> Job:
        found = data.job(job_id)
        if found is None:
            abort(404, f"no job {job_id}")
        return found

    return app


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison of what the browser sent (any text: non-ASCII is simply wrong)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _record(job: Job, bucket: str) -> list[tuple[str, str]]:
    """The CLI's record lines (`s2v show`), with what the job is taken to have cost once it ended."""
    rows = views.record_rows(job, bucket)
    if job.final_cost_usd is not None:
        at = next((i + 1 for i, (name, _) in enumerate(rows) if name == "estimated cost"), len(rows))
        rows.insert(at, ("final cost", views.usd(job.final_cost_usd)))
    return rows
