"""A newcomer runs `make demo`, then `s2v dashboard`, and sees the demo's job and its video.

Both run as a user runs them, in subprocesses: the demo stops its stack at the end, keeping the
stack's jobs and objects in the local data folder; `s2v dashboard`, with no stack running,
starts one from that folder. Headless Chromium (Debian's package) then opens the demo's job and
plays its video. A second dashboard run shows that stopping the first saved the data again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.browser import chromium, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
S2V = Path(sys.executable).with_name("s2v")


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A user's environment: no local stack running, the local data folder in a temporary place."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S2V_", "WAVESPEED_"))}
    env.update(S2V_LOCAL_STATE=str(tmp_path / "state" / "local.json"), S2V_DEMO_OUTPUT=str(tmp_path / "demo-output"),
               PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
    return env


@contextmanager
def dashboard(env: dict[str, str], log: Path) -> Iterator[str]:
    """`s2v dashboard --no-open`; yields the URL it prints, then stops it with Ctrl-C."""
    with log.open("wb") as out:
        process = subprocess.Popen([str(S2V), "dashboard", "--no-open"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        found = wait_until(lambda: process.poll() is None and re.search(
            r"open (http://127\.0\.0\.1:\d+/\?key=\S+)", log.read_text()), timeout=60,
            what=f"the dashboard's URL in {log}: {log.read_text()}")
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert "Traceback" not in log.read_text(), log.read_text()


def test_the_demo_s_job_and_video_are_in_the_dashboard_after_the_demo_ends(
        home: dict[str, str], tmp_path: Path) -> None:
    # Given `make demo` ran to its end (its stack is gone)
    demo = subprocess.run([sys.executable, "-m", "s2v_local.demo"], env=home, capture_output=True, text=True,
                          timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "s2v dashboard" in demo.stdout
    data = tmp_path / "state" / "local-data"
    kept = json.loads((data / "manifest.json").read_text())
    assert "outputs/demo/alice.mp4" in {o["key"] for o in kept["objects"]}

    # When the newcomer runs `s2v dashboard`
    with dashboard(home, tmp_path / "dashboard.log") as url, chromium(tmp_path / "profile") as browser:
        browser.get(url)
        base = url.split("/?", 1)[0]
        # Then the jobs page lists the demo's job, delivered
        browser.get(base + "/jobs?name=alice")
        rows = wait_until(lambda: browser.find_elements("css selector", "#jobs-table tbody tr[data-job-id]"),
                          what="the demo's job in the jobs list")
        assert len(rows) == 1 and "DELIVERED" in rows[0].text and "demo/alice" in rows[0].text, rows[0].text
        job_id = rows[0].get_attribute("data-job-id")
        # And its page plays the video (about the demo clip's 4 s)
        browser.get(f"{base}/jobs/{job_id}")
        duration = wait_until(lambda: browser.execute_script(
            "const v = document.getElementById('video'); return v.readyState >= 1 && v.duration > 0 && v.duration;"),
            timeout=30, what="the demo video's metadata")
        assert duration == pytest.approx(4.0, abs=0.5)

    # And stopping the dashboard kept the data for the next time
    with dashboard(home, tmp_path / "dashboard-again.log") as url, chromium(tmp_path / "profile-2") as browser:
        browser.get(url)
        browser.get(url.split("/?", 1)[0] + f"/jobs/{job_id}")
        assert "DELIVERED" in wait_until(lambda: browser.find_element("id", "job-state").text,
                                         what="the demo job's page, second run")
