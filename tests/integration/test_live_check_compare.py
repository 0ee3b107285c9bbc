"""The live check's comparison against the emulator: the emulator agrees with itself, and each
kind of difference the real service could show (a renamed field, a changed type, a new status
name, another output host) is reported."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from s2v.adapters.providers.wavespeed import MODEL
from s2v.model import provider_facts
from s2v_local import live_check, samples
from s2v_local.live_check import Exchange

INPUTS = (samples.portrait_png(256, 320), samples.speech_wav(1.0))


@pytest.fixture(scope="module")
def reference() -> list[Exchange]:
    return live_check.emulator_reference(INPUTS)


@pytest.fixture(scope="module")
def second_opinion() -> Iterator[list[Exchange]]:
    yield live_check.emulator_reference(INPUTS)  # another emulator: other ids, times and URLs


def test_the_reference_run_makes_every_call_the_live_run_makes(reference: list[Exchange]) -> None:
    calls = {exchange.call for exchange in reference}
    assert set(live_check.CALLS) <= calls
    assert all(200 <= exchange.status < 300 for exchange in reference)


def test_the_emulator_agrees_with_itself(reference: list[Exchange], second_opinion: list[Exchange]) -> None:
    assert live_check.compare(second_opinion, reference, model=MODEL) == []


def changed(exchanges: list[Exchange], call: str, change: Any) -> list[Exchange]:
    out = []
    for exchange in exchanges:
        payload = copy.deepcopy(exchange.payload)
        if exchange.call == call:
            change(payload)
        out.append(Exchange(exchange.call, exchange.method, exchange.path, exchange.status, payload))
    return out


def test_a_renamed_field_is_reported_both_ways(reference: list[Exchange], second_opinion: list[Exchange]) -> None:
    def rename(payload: dict[str, Any]) -> None:
        payload["data"]["download_link"] = payload["data"].pop("download_url")

    problems = live_check.compare(changed(second_opinion, "upload", rename), reference, model=MODEL)
    assert "upload data: the real answer has no 'download_url' (the emulator sends it)" in problems
    assert "upload data: the real answer has 'download_link' (string), the emulator does not" in problems


def test_a_changed_type_and_a_missing_list_field_are_reported(reference: list[Exchange],
                                                              second_opinion: list[Exchange]) -> None:
    def balance_as_text(payload: dict[str, Any]) -> None:
        payload["data"]["balance"] = str(payload["data"]["balance"])

    def no_inputs(payload: dict[str, Any]) -> None:
        for item in payload["data"]["items"]:
            item.pop("input", None)
        payload["data"].pop("total")

    real = changed(changed(second_opinion, "balance", balance_as_text), "list", no_inputs)
    problems = live_check.compare(real, reference, model=MODEL)
    assert "balance data: 'balance' is string in the real answer, number in the emulator's" in problems
    assert "list data: the real answer has no 'total' (the emulator sends it)" in problems
    assert "list item: the real answer has no 'input' (the emulator sends it)" in problems


def test_an_error_code_inside_a_200_and_a_missing_call_are_reported(reference: list[Exchange],
                                                                     second_opinion: list[Exchange]) -> None:
    def code_as_text(payload: dict[str, Any]) -> None:
        payload["code"] = "200"

    real = [e for e in changed(second_opinion, "submit", code_as_text) if e.call != "balance"]
    problems = live_check.compare(real, reference, model=MODEL)
    assert "balance: no successful real answer was seen" in problems
    assert "submit: HTTP 200 with envelope code '200' (expected 200)" in problems
    assert "submit envelope: 'code' is string in the real answer, number in the emulator's" in problems


def test_the_verdict_reports_a_new_status_name_and_another_output_host(reference: list[Exchange],
                                                                        second_opinion: list[Exchange]) -> None:
    [task_id] = {e.payload["data"]["id"] for e in second_opinion if e.call == "submit"}

    def succeeded(payload: dict[str, Any]) -> None:
        if payload["data"]["status"] == "completed":
            payload["data"]["status"] = "succeeded"

    run = live_check.Run(exchanges=changed(second_opinion, "result", succeeded), task_id=task_id,
                         outputs=(f"https://d2other.cloudfront.net/predictions/{task_id}/1.mp4",),
                         listed_on_page=1, listed_input={"prompt": ""}, job={"status": "DELIVERED"})
    problems = live_check.verdict(run, reference)
    assert "status 'succeeded' is not one the emulator or the SDK knows" in problems
    assert any(p.startswith("output host d2other.cloudfront.net is not on the default allow-list") for p in problems)
    same_host = live_check.Run(exchanges=second_opinion, task_id=task_id,
                               outputs=(f"https://{provider_facts.CDN_HOST}/predictions/{task_id}/1.mp4",),
                               listed_on_page=1, listed_input={"prompt": ""}, job={"status": "DELIVERED"})
    assert live_check.verdict(same_host, reference) == []
