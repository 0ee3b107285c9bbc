"""Each checkout's local stack is its own: state, data and bucket name, one stack per data folder,
in the background (`s2v local up --detach`, `s2v local down`); and a dashboard whose stack stops
says so (headless Chromium). Two "checkouts" are two S2V_LOCAL_HOME folders, as two clones get
two `.s2v/` folders."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.browser import chromium, wait_until
from s2v_local import samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
S2V = Path(sys.executable).with_name("s2v")


def checkout_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_ENDPOINT_URL", "S2V_LOCAL_"))}
    return {**env, "S2V_LOCAL_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1", **extra}


def s2v(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(S2V), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def up(env: dict[str, str]) -> None:
    started = s2v("local", "up", "--detach", "--render-seconds", "0.3", "--poll-seconds", "1", "--queue-delay", "1",
                  env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "s2v local down" in started.stdout


def down(env: dict[str, str]) -> None:
    stopped = s2v("local", "down", env=env)
    assert stopped.returncode == 0 and "local stack stopped" in stopped.stdout, stopped.stdout + stopped.stderr


def as_json(*args: str, env: dict[str, str]) -> Any:
    answer = s2v(*args, "--json", env=env)
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    image, audio = tmp_path / "alice.png", tmp_path / "alice.wav"
    image.write_bytes(samples.portrait_png(128, 160))
    audio.write_bytes(samples.speech_wav(1.0))
    return image, audio


def test_two_checkouts_run_their_own_stacks_at_once_without_seeing_each_others_jobs_or_data(
    tmp_path: Path, pair: tuple[Path, Path],
) -> None:
    a, b = checkout_env(tmp_path / "a" / ".s2v"), checkout_env(tmp_path / "b" / ".s2v")
    up(a)
    try:
        up(b)
        try:
            first_a, first_b = as_json("status", env=a), as_json("status", env=b)
            assert first_a["bucket"] != first_b["bucket"] and first_a["target"] != first_b["target"]
            dropped = s2v("drop", *map(str, pair), "--folder", "talks", "--wait", env=a)
            assert dropped.returncode == 0, dropped.stdout + dropped.stderr
            jobs_a, jobs_b = as_json("jobs", env=a)["jobs"], as_json("jobs", env=b)["jobs"]
            assert [j["status"] for j in jobs_a] == ["DELIVERED"] and jobs_b == []
            assert jobs_a[0]["output"] == f"s3://{first_a['bucket']}/outputs/talks/alice.mp4"
            assert as_json("cost", env=a)["jobs"] == 1 and as_json("cost", env=b)["jobs"] == 0
            # This checkout's stack already runs: said, not started twice.
            again = s2v("local", "up", "--detach", env=a)
            assert again.returncode == 2 and "already running" in again.stderr and "s2v local down" in again.stderr
            # A stack with its own state file but this checkout's data folder is refused: one writer per folder.
            second = s2v("local", "up", env={**a, "S2V_LOCAL_STATE": str(tmp_path / "other.json")})
            assert second.returncode == 2 and "another local stack is running on" in second.stderr, second.stderr
        finally:
            down(b)
    finally:
        down(a)
    assert (tmp_path / "a" / ".s2v" / "local-data" / "manifest.json").is_file()
    assert (tmp_path / "b" / ".s2v" / "local-data" / "manifest.json").is_file()
    assert "no local stack" in s2v("local", "down", env=a).stdout
    # The next stack of checkout a: the same bucket name, its job back; b's still none.
    up(a)
    try:
        assert as_json("status", env=a)["bucket"] == first_a["bucket"]
        assert [j["job_id"] for j in as_json("jobs", env=a)["jobs"]] == [jobs_a[0]["job_id"]]
    finally:
        down(a)


def test_the_dashboard_says_its_stack_stopped_and_what_to_run(tmp_path: Path) -> None:
    env = checkout_env(tmp_path / ".s2v")
    up(env)
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        dashboard = subprocess.Popen([str(S2V), "dashboard", "--no-open"], env=env, stdout=out,
                                     stderr=subprocess.STDOUT)
    stack_running = True
    try:
        url = wait_until(lambda: re.search(r"open (http://127\.0\.0\.1:\d+/\?key=\S+)", log.read_text()),
                         timeout=60, what=f"the dashboard's URL in {log}").group(1)
        base = url.split("/?", 1)[0]
        with chromium(tmp_path / "profile") as browser:
            browser.get(url)
            wait_until(lambda: browser.find_element("id", "state-counts"), what="the overview")
            down(env)
            stack_running = False
            # The open page's live refresh says what happened, in words ...
            wait_until(lambda: "has stopped" in browser.find_element("id", "live-note").text, timeout=30,
                       what="the live note saying the stack stopped")
            # ... and so does any page asked for now: a clear page, not a bare 500.
            browser.get(base + "/jobs")
            assert "503" in browser.find_element("tag name", "h1").text
            message = browser.find_element("id", "error-message").text
            assert "has stopped" in message and "s2v local up --detach" in message and "s2v dashboard" in message
    finally:
        if stack_running:
            down(env)
        dashboard.send_signal(signal.SIGINT)
        try:
            dashboard.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dashboard.kill()
            dashboard.wait()
    assert "Traceback" not in log.read_text() and "Internal Server Error" not in log.read_text(), log.read_text()
