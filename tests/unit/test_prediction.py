"""Reading WaveSpeed task objects: result envelopes, webhook bodies, statuses and NSFW flags."""

from __future__ import annotations

import json
from typing import Any

import pytest

from s2v.adapters.providers.wavespeed import TERMINAL_FAILURE_STATUSES, Prediction, parse_webhook_task, unwrap_envelope

# The documented result response (seed page), filled in.
RESULT = {
    "code": 200,
    "message": "success",
    "data": {
        "id": "7f0c1a2b3c4d",
        "model": "wavespeed-ai/wan-2.2/speech-to-video",
        "outputs": ["https://d1q70pf5vjeyhc.cloudfront.net/predictions/7f0c1a2b3c4d/1.mp4"],
        "urls": {"get": "https://api.wavespeed.ai/api/v3/predictions/7f0c1a2b3c4d/result"},
        "has_nsfw_contents": [False],
        "status": "completed",
        "created_at": "2023-04-01T12:34:56.789Z",
        "error": "",
        "timings": {"inference": 48213},
    },
}

# The documented webhook body: the task object itself, with its input, no envelope.
WEBHOOK_FAILED = {
    "id": "9a8b7c6d",
    "model": "wavespeed-ai/wan-2.2/speech-to-video",
    "input": {"image": "https://bucket.s3.amazonaws.com/a.png?X-Amz-Signature=1", "audio": "https://b/a.wav",
              "prompt": "", "resolution": "480p", "seed": -1},
    "outputs": [],
    "urls": {"get": "https://api.wavespeed.ai/api/v3/predictions/9a8b7c6d/result"},
    "has_nsfw_contents": [],
    "status": "failed",
    "created_at": "2025-09-25T10:25:28.112Z",
    "error": "media access failed: the audio URL returned 403",
}


def test_a_completed_result_envelope_is_read_field_by_field() -> None:
    prediction = Prediction.from_api(unwrap_envelope(RESULT))
    assert prediction == Prediction(
        id="7f0c1a2b3c4d", model="wavespeed-ai/wan-2.2/speech-to-video", status="completed",
        outputs=("https://d1q70pf5vjeyhc.cloudfront.net/predictions/7f0c1a2b3c4d/1.mp4",),
        has_nsfw_contents=(False,), error="", created_at="2023-04-01T12:34:56.789Z", inference_ms=48213,
        urls_get="https://api.wavespeed.ai/api/v3/predictions/7f0c1a2b3c4d/result",
    )
    assert prediction.is_completed and prediction.is_terminal
    assert not prediction.is_failed and not prediction.nsfw


@pytest.mark.parametrize("status", ["created", "processing"])
def test_in_flight_statuses_are_not_terminal(status: str) -> None:
    prediction = Prediction.from_api({"id": "t", "status": status})
    assert not prediction.is_terminal
    assert not prediction.is_completed and not prediction.is_failed


@pytest.mark.parametrize("status", ["failed", "cancelled", "timeout", "deleted"])
def test_every_status_the_sdk_ends_a_task_with_is_a_terminal_failure(status: str) -> None:
    prediction = Prediction.from_api({"id": "t", "status": status})
    assert prediction.is_failed and prediction.is_terminal and not prediction.is_completed


def test_the_terminal_failure_statuses_are_the_sdks() -> None:
    assert set(TERMINAL_FAILURE_STATUSES) == {"failed", "cancelled", "timeout", "deleted"}


@pytest.mark.parametrize("status", ["queued", "starting", "", "succeeded?"])
def test_an_unknown_status_keeps_the_task_in_flight_as_the_sdk_does(status: str) -> None:
    prediction = Prediction.from_api({"id": "t", "status": status})
    assert not prediction.is_terminal and not prediction.is_failed


def test_statuses_are_lower_cased() -> None:
    assert Prediction.from_api({"id": "t", "status": " Completed "}).is_completed
    assert Prediction.from_api({"id": "t", "status": "FAILED"}).is_failed


def test_missing_and_null_fields_take_empty_values() -> None:
    for data in ({"id": "t"}, {"id": "t", "model": None, "status": None, "outputs": None, "has_nsfw_contents": None,
                               "error": None, "created_at": None, "timings": None, "urls": None},
                 {"id": "t", "timings": {"inference": None}, "urls": {"get": None}}):
        prediction = Prediction.from_api(data)
        assert (prediction.model, prediction.status, prediction.error, prediction.created_at) == ("", "", "", "")
        assert prediction.outputs == () and prediction.has_nsfw_contents == ()
        assert prediction.inference_ms is None and prediction.urls_get == ""
        assert not prediction.is_terminal and not prediction.nsfw


def test_odd_field_types_are_tolerated() -> None:
    prediction = Prediction.from_api({"id": 12345, "status": "completed", "outputs": ["https://o/1.mp4", None, 7, ""],
                                      "timings": {"inference": 1234.6}, "error": {"detail": "x"}})
    assert prediction.id == "12345"
    assert prediction.outputs == ("https://o/1.mp4",)
    assert prediction.inference_ms == 1235
    assert "detail" in prediction.error
    assert Prediction.from_api({"id": "t", "timings": {"inference": True}}).inference_ms is None
    assert Prediction.from_api({"id": "t", "outputs": "https://o/1.mp4"}).outputs == ("https://o/1.mp4",)


@pytest.mark.parametrize(("flags", "nsfw"), [
    ([False], False), ([], False), ([False, True], True), ([True], True), (["true", 1], False), (True, True),
])
def test_nsfw_is_any_output_flagged_true(flags: Any, nsfw: bool) -> None:
    assert Prediction.from_api({"id": "t", "status": "completed", "has_nsfw_contents": flags}).nsfw is nsfw


@pytest.mark.parametrize("data", [None, [], "completed", 3])
def test_a_task_must_be_an_object(data: Any) -> None:
    with pytest.raises(ValueError):
        Prediction.from_api(data)


def test_a_webhook_body_is_the_bare_task_object() -> None:
    prediction = parse_webhook_task(json.dumps(WEBHOOK_FAILED).encode())
    assert prediction.id == "9a8b7c6d"
    assert prediction.is_failed
    assert prediction.error == "media access failed: the audio URL returned 403"
    assert prediction.urls_get.endswith("/predictions/9a8b7c6d/result")


def test_a_webhook_body_wrapped_in_the_envelope_is_accepted_too() -> None:
    prediction = parse_webhook_task(json.dumps(RESULT).encode())
    assert prediction.id == "7f0c1a2b3c4d" and prediction.is_completed


def test_a_bare_task_that_has_a_data_field_is_not_mistaken_for_an_envelope() -> None:
    task = {**WEBHOOK_FAILED, "data": {"id": "inner", "status": "completed"}}
    assert parse_webhook_task(json.dumps(task).encode()).id == "9a8b7c6d"


@pytest.mark.parametrize("body", [
    b"", b"not json", b"\xff\xfe\x00garbage", b"[]", b'"completed"', b"null", b"42",
    b'{"status": "completed"}',            # no id
    b'{"id": "t"}',                        # no status
    b'{"code": 200, "data": {"id": ""}}',  # an envelope with no task
    b"[" * 100_000 + b"]" * 100_000,       # deep nesting
])
def test_a_webhook_body_that_is_not_a_task_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_webhook_task(body)


def test_a_webhook_body_carries_the_task_input_but_the_repr_does_not() -> None:
    prediction = parse_webhook_task(json.dumps(WEBHOOK_FAILED).encode())
    assert prediction.input == WEBHOOK_FAILED["input"]
    assert "X-Amz-Signature" not in repr(prediction)  # input URLs may be presigned
    assert Prediction.from_api(unwrap_envelope(RESULT)).input == {}
    assert Prediction.from_api({"id": "t", "input": "not an object"}).input == {}
    hash(prediction)  # still usable as a key, as before


@pytest.mark.parametrize(("created_at", "epoch"), [
    ("2025-05-19T06:09:15.948268264Z", 1747634955.948268264),  # nanoseconds, as the provider writes them
    ("2023-04-01T12:34:56.789Z", 1680352496.789),
    ("2025-05-19T06:09:15Z", 1747634955.0),
    ("2025-05-19T08:09:15.5+02:00", 1747634955.5),
    ("2025-05-19T08:09:15+0200", 1747634955.0),
    ("2025-05-19 06:09:15", 1747634955.0),  # no zone: UTC
])
def test_created_at_is_read_as_unix_seconds(created_at: str, epoch: float) -> None:
    assert Prediction.from_api({"id": "t", "created_at": created_at}).created_at_epoch == pytest.approx(epoch, abs=1e-6)


@pytest.mark.parametrize("created_at", ["", "yesterday", "2025-13-45T00:00:00Z", "1747634955", "2025-05-19"])
def test_an_unreadable_created_at_has_no_epoch(created_at: str) -> None:
    assert Prediction.from_api({"id": "t", "created_at": created_at}).created_at_epoch is None
