"""Headless Chromium from Debian's packages, driven by Selenium: no browser download, ever."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver",)
INSTALL = "make browser   (that is: apt-get update && apt-get install -y chromium chromium-driver, as root)"
T = TypeVar("T")


def _first(paths: tuple[str, ...], name: str) -> str:
    found = next((p for p in paths if Path(p).is_file() and os.access(p, os.X_OK)), None) or shutil.which(name)
    if not found:
        # Never a silent skip: the browser tests are part of `make test`.
        pytest.fail(f"{name} is missing, so the dashboard's browser tests cannot run; install it with:\n  {INSTALL}",
                    pytrace=False)
    return found


@contextmanager
def chromium(profile: Path, *, width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium session with a fresh profile; closed on exit."""
    binary, driver_path = _first(CHROMIUM, "chromium"), _first(CHROMEDRIVER, "chromedriver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look anything up
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--mute-audio", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(check: Callable[[], T], *, timeout: float = 10.0, what: str = "the page") -> T:
    """Poll ``check`` until it returns something truthy; fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # an element not there yet, a stale reference
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not so after {timeout} s (last: {last!r})")
