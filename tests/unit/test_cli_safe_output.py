"""Whatever a user put in a key, a note or a reason, the CLI and the dashboard show it without
letting it act on the terminal (ESC/CSI/OSC, C1, bidi controls): one sanitizer, tested on the class."""

from __future__ import annotations

import functools
import io
import json
import unicodedata
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from s2v.model.jobs import Failure, InputObject, Job, Status
from s2v_cli import views
from s2v_cli.safe import SafeConsole, is_safe, json_text, shown

# Text with plenty of control characters: ESC sequences, OSC 52 (clipboard), C1 CSI, bidi overrides.
CONTROL = st.sampled_from(["\x1b", "\x1b[2J", "\x1b]52;c;aGk=\x07", "\x9b31m", "\x9d0;x\x9c", "\x07", "\x08",
                           "\r", "\x7f", "\u202e", "\u2066", "\x00", "\x85"])
HOSTILE = st.lists(st.one_of(st.text(min_size=0, max_size=8), CONTROL), max_size=12).map("".join)


def _terminal_controls(text: str) -> list[str]:
    """What could act on a terminal: any control character but newline and tab (plain layout)."""
    return [c for c in text if c not in "\n\t" and (unicodedata.category(c) == "Cc" or c in "\u202a\u202b\u202c\u202d"
                                              "\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")]


def hostile_job(stem: str, folder: str, reason: str, note: str) -> Job:
    key = f"inputs/{folder}/{stem}"
    return Job(job_id="ab" * 16, status=Status.FAILED, version=2, folder=folder, stem=stem,
               image=InputObject(key + ".png", "e1", 10), audio=InputObject(key + ".wav", "e2", 20),
               created_at=1_790_000_000.0, updated_at=1_790_000_100.0, output_name=note,
               batch_id="b1", batch_key=f"inputs/{folder}/{note}.batch.csv", batch_row=2,
               failure=Failure(stage="validate", code="bad_image", reason=reason), cancelled_by=note,
               history=({"status": "RECEIVED", "at": 1_790_000_000.0, "note": note},
                        {"status": "FAILED", "at": 1_790_000_050.0, "note": reason}))


def printed(*renderables: object) -> str:
    console = SafeConsole(file=io.StringIO(), width=120, color_system=None, highlight=False, markup=False)
    for renderable in renderables:
        console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return str(output)


@settings(deadline=None)
@given(HOSTILE)
def test_the_sanitizer_leaves_nothing_that_acts_on_a_terminal_and_changes_nothing_safe(text: str) -> None:
    cleaned = shown(text)
    assert is_safe(cleaned) and not _terminal_controls(cleaned)
    if not _terminal_controls(text):
        assert cleaned == text


@settings(max_examples=60, deadline=None)
@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE)
def test_jobs_table_detail_and_cancel_lines_print_no_control_sequence_from_user_strings(
    stem: str, folder: str, reason: str, note: str,
) -> None:
    found = hostile_job(stem or "x", folder, reason, note)
    output = printed(views.jobs_table([found], now=1_790_000_200.0), views.job_detail(found, "bucket"),
                     *views.cancel_lines(found, was=Status.QUEUED, bucket="bucket"),
                     f"failed: {reason}")  # a plain string printed by a command (e.g. _fail)
    assert not _terminal_controls(output), repr(output)


def test_an_escape_in_a_key_is_shown_not_obeyed() -> None:
    output = printed(views.jobs_table([hostile_job("evil\x1b]52;c;aGk=\x07", "t", "r", "")], now=1_790_000_200.0))
    assert "\x1b" not in output
    assert "\\x1b]52;c;aGk=" in output.replace("\n", "").replace("│", "").replace(" ", "")


@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), HOSTILE),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(HOSTILE, inner, max_size=4)), max_leaves=12))
@settings(deadline=None)
def test_json_output_is_valid_json_of_the_same_value_and_carries_no_raw_control(value: object) -> None:
    text = json_text(value)
    assert json.loads(text) == value
    assert not _terminal_controls(text)


@functools.cache
def dashboard_env() -> Any:
    from s2v_cli.dashboard.app import create_app
    from s2v_cli.dashboard.data import DashboardData
    from s2v_cli.target import Target

    target = Target(description="t", bucket="b", table="t", limits=views.StackLimits(None, None),
                    client_factory=lambda service: None)
    return create_app(DashboardData(target)).jinja_env


@settings(deadline=None)
@given(HOSTILE)
def test_every_value_a_dashboard_template_shows_passes_the_sanitizer(text: str) -> None:
    rendered = dashboard_env().from_string("{{ a }}|{{ b.c }}|{{ items|join(',') }}").render(
        a=text, b={"c": text}, items=[text])
    assert not _terminal_controls(rendered.replace("\n", ""))
