"""Which output URLs delivery is willing to download from."""

from __future__ import annotations

import socket

import pytest

from s2v.adapters.delivery import DeliveryPolicy, check_url, host_allowed
from s2v.model.errors import DeliveryError

POLICY = DeliveryPolicy(allowed_hosts=("*.wavespeed.ai", "static.example.com"), max_bytes=10**9)


def resolver(address: str):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return lambda host, port, **_: [(family, socket.SOCK_STREAM, 6, "", (address, port))]


PUBLIC = resolver("93.184.216.34")


@pytest.mark.parametrize(("host", "allowed"), [
    ("cdn.wavespeed.ai", True), ("a.b.wavespeed.ai", True), ("CDN.WaveSpeed.AI", True),
    ("wavespeed.ai", False), ("evilwavespeed.ai", False), ("wavespeed.ai.evil.com", False),
    ("static.example.com", True), ("x.static.example.com", False),
])
def test_allow_list_wildcards_match_on_a_dot_boundary(host: str, allowed: bool) -> None:
    assert host_allowed(host, POLICY.allowed_hosts) is allowed


@pytest.mark.parametrize(("url", "address", "message"), [
    ("http://cdn.wavespeed.ai/v.mp4", "93.184.216.34", "https"),
    ("ftp://cdn.wavespeed.ai/v.mp4", "93.184.216.34", "https"),
    ("https://evil.com/v.mp4", "93.184.216.34", "allow-list"),
    ("https://cdn.wavespeed.ai@evil.com/v.mp4", "93.184.216.34", "credentials"),
    ("https://user:pw@cdn.wavespeed.ai/v.mp4", "93.184.216.34", "credentials"),
    ("https://cdn.wavespeed.ai/v.mp4", "10.0.0.5", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "192.168.1.1", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "169.254.169.254", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "127.0.0.1", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "0.0.0.0", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "fd00::1", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "::ffff:10.0.0.1", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "fe80::1", "non-public"),
    ("https://cdn.wavespeed.ai/v.mp4", "224.0.0.1", "non-public"),
])
def test_unsafe_output_urls_are_refused_with_a_reason(url: str, address: str, message: str) -> None:
    with pytest.raises(DeliveryError, match=message) as info:
        check_url(url, POLICY, resolve=resolver(address))
    assert not info.value.retryable


def test_a_public_https_url_on_the_allow_list_passes() -> None:
    check_url("https://cdn.wavespeed.ai/outputs/v.mp4", POLICY, resolve=PUBLIC)


def test_loopback_http_is_allowed_only_in_local_mode() -> None:
    local = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=10, allow_loopback_http=True)
    check_url("http://127.0.0.1:8000/v.mp4", local, resolve=resolver("127.0.0.1"))
    strict = DeliveryPolicy(allowed_hosts=("127.0.0.1",), max_bytes=10)
    with pytest.raises(DeliveryError, match="https"):
        check_url("http://127.0.0.1:8000/v.mp4", strict, resolve=resolver("127.0.0.1"))
