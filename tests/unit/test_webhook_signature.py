"""WaveSpeed callback signatures, checked against vectors computed here, not by the code under test.

The scheme (PROVIDER.md): hex HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{raw body}``,
keyed with the account secret minus its ``whsec_`` prefix (as text, not base64-decoded), sent as
``webhook-signature: v3,<hex>``; callbacks older than 300 s are replays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from s2v.adapters.providers.wavespeed import sign_webhook, verify_webhook

# The secret looks like base64 on purpose: decoding it would give a different key.
SECRET = "whsec_c2VjcmV0LWxvb2tzLWxpa2UtYmFzZTY0"
KEY = b"c2VjcmV0LWxvb2tzLWxpa2UtYmFzZTY0"
WEBHOOK_ID = "msg_2Yk9"
NOW = 1758798328
BODY = b'{"id":"0f1e2d3c","status":"completed"}'
# printf '%s' 'msg_2Yk9.1758798328.{"id":"0f1e2d3c","status":"completed"}' \
#   | openssl dgst -sha256 -hmac 'c2VjcmV0LWxvb2tzLWxpa2UtYmFzZTY0' -hex
OPENSSL_VECTOR = "07f3191b32cb98e1bc90013ea005c6b56ac6501170b75f98028915570dccee36"


def hex_signature(body: bytes, *, key: bytes = KEY, webhook_id: str = WEBHOOK_ID, timestamp: int = NOW) -> str:
    message = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def headers(overrides: dict[str, Any] | None = None, *, timestamp: int = NOW) -> dict[str, Any]:
    """Correctly signed headers for BODY, then ``overrides``."""
    signed = {"webhook-id": WEBHOOK_ID, "webhook-timestamp": str(timestamp),
              "webhook-signature": "v3," + hex_signature(BODY, timestamp=timestamp)}
    return {**signed, **(overrides or {})}


def test_the_independent_vector_matches_openssl() -> None:
    assert hex_signature(BODY) == OPENSSL_VECTOR


def test_a_correctly_signed_callback_verifies() -> None:
    assert verify_webhook({"webhook-id": WEBHOOK_ID, "webhook-timestamp": str(NOW),
                           "webhook-signature": f"v3,{OPENSSL_VECTOR}"}, BODY, SECRET, now=NOW)


def test_header_names_are_case_insensitive() -> None:
    mixed = {"Webhook-Id": WEBHOOK_ID, "WEBHOOK-TIMESTAMP": str(NOW), "Webhook-Signature": f"v3,{OPENSSL_VECTOR}"}
    assert verify_webhook(mixed, BODY, SECRET, now=NOW)


def test_sign_webhook_produces_the_documented_headers() -> None:
    assert sign_webhook(BODY, SECRET, webhook_id=WEBHOOK_ID, timestamp=NOW) == {
        "webhook-id": WEBHOOK_ID, "webhook-timestamp": str(NOW), "webhook-signature": f"v3,{OPENSSL_VECTOR}"}


def test_a_secret_without_the_whsec_prefix_gives_the_same_key() -> None:
    assert verify_webhook(headers(), BODY, SECRET.removeprefix("whsec_"), now=NOW)
    assert sign_webhook(BODY, KEY.decode(), webhook_id=WEBHOOK_ID, timestamp=NOW)["webhook-signature"] == (
        f"v3,{OPENSSL_VECTOR}")


def test_the_secret_is_not_base64_decoded() -> None:
    decoded_key = base64.b64decode(KEY)
    forged = headers({"webhook-signature": "v3," + hex_signature(BODY, key=decoded_key)})
    assert not verify_webhook(forged, BODY, SECRET, now=NOW)


def test_a_signature_made_with_another_secret_is_rejected() -> None:
    forged = headers({"webhook-signature": "v3," + hex_signature(BODY, key=b"another-secret")})
    assert not verify_webhook(forged, BODY, SECRET, now=NOW)
    assert not verify_webhook(headers(), BODY, "whsec_another-secret", now=NOW)


@pytest.mark.parametrize("tampered", [
    BODY.replace(b"completed", b"failed"),
    BODY + b"\n",
    b'{"id": "0f1e2d3c", "status": "completed"}',  # same JSON, other bytes: the raw body is signed
    b"",
])
def test_a_tampered_body_is_rejected(tampered: bytes) -> None:
    assert not verify_webhook(headers(), tampered, SECRET, now=NOW)


def test_a_changed_webhook_id_or_timestamp_is_rejected() -> None:
    assert not verify_webhook(headers({"webhook-id": "msg_other"}), BODY, SECRET, now=NOW)
    assert not verify_webhook(headers({"webhook-timestamp": str(NOW + 1)}), BODY, SECRET, now=NOW)


def test_the_replay_window_is_300_seconds_either_way() -> None:
    assert verify_webhook(headers(), BODY, SECRET, now=NOW + 300)
    assert verify_webhook(headers(), BODY, SECRET, now=NOW - 300)
    assert not verify_webhook(headers(), BODY, SECRET, now=NOW + 301)  # stale: a replay
    assert not verify_webhook(headers(), BODY, SECRET, now=NOW - 301)  # from the future


def test_a_properly_signed_but_stale_callback_is_rejected() -> None:
    old = NOW - 3600
    assert not verify_webhook(headers(timestamp=old), BODY, SECRET, now=NOW)
    assert verify_webhook(headers(timestamp=old), BODY, SECRET, now=old + 10)


def test_the_tolerance_is_configurable() -> None:
    assert not verify_webhook(headers(), BODY, SECRET, now=NOW + 61, tolerance_seconds=60)
    assert verify_webhook(headers(), BODY, SECRET, now=NOW + 59, tolerance_seconds=60)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_rejected(missing: str) -> None:
    incomplete = {name: value for name, value in headers().items() if name != missing}
    assert not verify_webhook(incomplete, BODY, SECRET, now=NOW)


def test_other_signature_versions_are_rejected() -> None:
    standard_webhooks = base64.b64encode(hmac.new(KEY, f"{WEBHOOK_ID}.{NOW}.".encode() + BODY,
                                                  hashlib.sha256).digest()).decode()
    for signature in (f"v1,{OPENSSL_VECTOR}", f"v1,{standard_webhooks}", f"v2,{OPENSSL_VECTOR}",
                      OPENSSL_VECTOR, f"v3 {OPENSSL_VECTOR}", f"v3,{standard_webhooks}"):
        assert not verify_webhook(headers({"webhook-signature": signature}), BODY, SECRET, now=NOW), signature


def test_any_of_several_space_separated_signatures_may_match() -> None:
    good = f"v3,{OPENSSL_VECTOR}"
    bad = "v3," + hex_signature(BODY, key=b"old-secret")
    assert verify_webhook(headers({"webhook-signature": f"v1,abc {bad} {good}"}), BODY, SECRET, now=NOW)
    assert not verify_webhook(headers({"webhook-signature": f"{bad} v1,{OPENSSL_VECTOR}"}), BODY, SECRET, now=NOW)


@pytest.mark.parametrize("overrides", [
    {"webhook-timestamp": "not-a-number"},
    {"webhook-timestamp": "-1"},
    {"webhook-timestamp": "1.758798328e9"},
    {"webhook-timestamp": f" {NOW}"},
    {"webhook-timestamp": "9" * 400},
    {"webhook-timestamp": "١٧٥٨٧٩٨٣٢٨"},  # Arabic-Indic digits: int() would accept them
    {"webhook-timestamp": NOW},
    {"webhook-signature": ""},
    {"webhook-signature": "v3,"},
    {"webhook-signature": ","},
    {"webhook-signature": "v3,ü" + OPENSSL_VECTOR[2:]},
    {"webhook-signature": "v3," + "a" * 100_000},
    {"webhook-signature": b"v3," + OPENSSL_VECTOR.encode()},
    {"webhook-signature": [f"v3,{OPENSSL_VECTOR}"]},
    {"webhook-signature": None},
    {"webhook-id": ""},
    {"webhook-id": 7},
])
def test_garbage_headers_are_rejected_without_raising(overrides: dict[str, Any]) -> None:
    assert verify_webhook(headers(overrides), BODY, SECRET, now=NOW) is False


@pytest.mark.parametrize(("hdrs", "body", "secret", "now"), [
    (None, BODY, SECRET, NOW),
    ("webhook-id: x", BODY, SECRET, NOW),
    ({1: 2}, BODY, SECRET, NOW),
    (headers(), None, SECRET, NOW),
    (headers(), BODY.decode(), SECRET, NOW),
    (headers(), BODY, None, NOW),
    (headers(), BODY, "", NOW),
    (headers(), BODY, "whsec_", NOW),
    (headers(), BODY, SECRET, None),
    (headers(), BODY, SECRET, "soon"),
    (headers(), BODY, SECRET, float("nan")),
])
def test_garbage_arguments_are_rejected_without_raising(hdrs: Any, body: Any, secret: Any, now: Any) -> None:
    assert verify_webhook(hdrs, body, secret, now=now) is False
