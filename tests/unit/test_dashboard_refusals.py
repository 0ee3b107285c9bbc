"""The dashboard refuses a wrong access key, cookie or CSRF token with 403 whatever its characters
(non-ASCII text made the constant-time comparison raise: a 500), before it reads anything."""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from s2v_cli import views
from s2v_cli.dashboard.app import COOKIE, create_app
from s2v_cli.dashboard.data import DashboardData
from s2v_cli.target import Target

KEY = "k" * 32
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40).filter(lambda t: t != KEY)
# What a browser can put in a Cookie header: latin-1 text without the header's separators.
COOKIE_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=';,"\\\x7f'),
                      min_size=1, max_size=40).filter(lambda t: t != KEY)


@functools.cache
def client() -> Any:
    class NoAws:
        def __init__(self, service: str) -> None:
            self.service = service

        def __getattr__(self, call: str) -> Any:
            raise AssertionError(f"a refused request called {self.service}.{call}")

    target = Target(description="t", bucket="b", table="t", limits=views.StackLimits(None, None),
                    client_factory=NoAws)
    return create_app(DashboardData(target), access_key=KEY).test_client()


@settings(deadline=None, max_examples=60)
@given(ANY_TEXT)
def test_any_wrong_key_in_the_address_is_refused_with_403(key: str) -> None:
    assert client().get("/jobs", query_string={"key": key}).status_code == 403


@settings(deadline=None, max_examples=60)
@given(COOKIE_TEXT)
def test_any_wrong_cookie_is_refused_with_403(cookie: str) -> None:
    browser = client()
    browser.set_cookie(COOKIE, cookie)
    assert browser.get("/jobs").status_code == 403


@settings(deadline=None, max_examples=60)
@given(ANY_TEXT)
def test_any_wrong_csrf_token_is_refused_with_403(token: str) -> None:
    browser = client()
    browser.set_cookie(COOKIE, KEY)
    response = browser.post("/jobs/abc/cancel", data={"csrf_token": token})
    assert response.status_code == 403 and b"CSRF" in response.data


def test_the_refusal_page_is_styled_and_its_stylesheet_needs_no_key() -> None:
    browser = client()
    browser.delete_cookie(COOKIE)
    page = browser.get("/jobs")
    assert page.status_code == 403 and b"dashboard.css" in page.data and b"refreshes itself" not in page.data
    assert browser.get("/static/dashboard.css").status_code == 200
