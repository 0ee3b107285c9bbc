"""The whole live check, run against the emulator posing as the real service: the local stack
renders through it in upload mode, the answers are recorded and compared, and the verdict is
"passed". The same run judged against the real defaults fails loudly on the output host, since
the emulator's outputs come from a loopback name rather than the provider's CDN."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from s2v.adapters.providers.wavespeed import MODEL
from s2v_local import live_check, samples
from s2v_local.emulator import Emulator

pytestmark = pytest.mark.e2e
API_KEY = "live-check-emulated-key"


@pytest.fixture(scope="module")
def provider() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, render_seconds=0.3, balance=20.0) as emulator:
        yield emulator


def test_the_check_passes_against_the_emulator_and_fails_loudly_on_another_output_host(
        provider: Emulator, tmp_path: Path) -> None:
    lines: list[str] = []
    overrides = {"S2V_LOCAL_MODE": "true", "S2V_OUTPUT_ALLOWED_HOSTS": provider.output_host}
    inputs = (samples.portrait_png(), samples.speech_wav(live_check.CLIP_SECONDS))
    reference = live_check.emulator_reference(inputs)

    run = live_check.live_run(provider.base_url, API_KEY, inputs, tmp_path, env_overrides=overrides,
                              say=lines.append)

    # What it saw: the pair went through upload, submit, polling, delivery, the list and the balance
    assert run.job["status"] == "DELIVERED", run.job
    assert {e.call for e in run.exchanges} >= set(live_check.CALLS)
    assert [e.call for e in run.exchanges if e.call == "upload"] == ["upload", "upload"]  # upload mode
    assert live_check.statuses_seen(run.exchanges, run.task_id)[-1] == "completed"
    assert run.listed_on_page == 1 and run.listed_input["resolution"] == "480p"
    assert run.video is not None and run.video.stat().st_size > 1000
    assert run.balance_before == 20.0 and run.balance_after == pytest.approx(20.0 - 0.09)  # 3 s at 480p
    assert API_KEY not in "\n".join(lines)

    # Judged with the emulator's output host allowed, the real and emulated answers agree
    assert live_check.verdict(run, reference, allowed_hosts=(provider.output_host,)) == []
    # Judged against the deployment's defaults, the loopback output host is a loud difference
    problems = live_check.verdict(run, reference)
    assert any(p.startswith(f"output host {provider.output_host} is not on the default allow-list") for p in problems)
    assert any("scheme is http" in p for p in problems)
    report: list[str] = []
    live_check.report(run, problems, say=report.append)
    assert any(line.startswith("LIVE CHECK FAILED") for line in report)
    assert any("[list] data: items, page, total" in line for line in report)
    assert any(e.path == f"/api/v3/{MODEL}" for e in run.exchanges if e.call == "submit")


def test_check_returns_0_and_says_passed_when_everything_agrees(provider: Emulator, tmp_path: Path) -> None:
    lines: list[str] = []
    code = live_check.check(provider.base_url, API_KEY, tmp_path, say=lines.append,
                            env_overrides={"S2V_LOCAL_MODE": "true", "S2V_OUTPUT_ALLOWED_HOSTS": provider.output_host},
                            allowed_hosts=(provider.output_host,))
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith("LIVE CHECK PASSED")
