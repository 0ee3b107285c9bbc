"""`make live-check` without a key: it says what it needs, exits 2 and touches nothing. And the
pieces of its verdict that need no server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2v.model import provider_facts
from s2v_local import live_check

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_key_it_prints_what_it_needs_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> int:
        raise AssertionError("the check ran without a key")

    monkeypatch.setattr(live_check, "check", never)
    out = io.StringIO()
    assert live_check.main(env={"WAVESPEED_API_KEY": "  "}, out=out) == 2
    said = out.getvalue()
    assert "WAVESPEED_API_KEY" in said and "$0.09" in said and "Nothing was started, sent or written." in said


def test_without_a_key_the_module_run_writes_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WAVESPEED_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("local", "layers/common"))
    done = subprocess.run([sys.executable, "-m", "s2v_local.live_check"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "WAVESPEED_API_KEY" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no output directory, no files


@pytest.mark.parametrize(("method", "path", "call"), [
    ("POST", "/api/v3/media/upload/binary", "upload"),
    ("POST", "/api/v3/wavespeed-ai/wan-2.2/speech-to-video", "submit"),
    ("GET", "/api/v3/predictions/abc/result", "result"), ("GET", "/api/v3/predictions/abc", "result"),
    ("POST", "/api/v3/predictions", "list"), ("GET", "/api/v3/account/balance", "balance"),
    ("DELETE", "/api/v3/predictions/abc", "delete"), ("GET", "/api/v3/webhook/secret", "other"),
])
def test_calls_are_told_apart_by_method_and_path(method: str, path: str, call: str) -> None:
    assert live_check.classify(method, path) == call


def test_the_output_must_come_from_an_allowed_host_at_the_cdn_path() -> None:
    good = f"https://{provider_facts.CDN_HOST}/predictions/t1/1.mp4"
    assert live_check.output_problems([good], "t1", provider_facts.OUTPUT_HOSTS) == []
    [other_host] = live_check.output_problems(
        [f"https://{provider_facts.OTHER_MODEL_CDN_HOST}/predictions/t1/1.mp4"], "t1", provider_facts.OUTPUT_HOSTS)
    assert f"output host {provider_facts.OTHER_MODEL_CDN_HOST} is not on the default allow-list" in other_host
    [other_path] = live_check.output_problems([f"https://{provider_facts.CDN_HOST}/output/t1.mp4"], "t1",
                                              provider_facts.OUTPUT_HOSTS)
    assert "output path is /output/t1.mp4" in other_path
    assert live_check.output_problems([], "t1", provider_facts.OUTPUT_HOSTS) == ["the completed task has no output URL"]


def test_unknown_statuses_and_a_task_that_never_completes_are_differences() -> None:
    assert live_check.status_problems(["created", "processing", "completed"]) == []
    problems = live_check.status_problems(["queued", "succeeded"])
    assert any("'queued'" in p for p in problems) and any("'succeeded'" in p for p in problems)
    assert any("never reported 'completed'" in p for p in problems)
