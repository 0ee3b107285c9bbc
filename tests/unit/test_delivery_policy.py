"""What delivery accepts: output URLs (scheme, allow-list, resolved addresses, URL tricks) and,
byte by byte, the body it streams into S3."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from s2v.adapters.delivery import STOP_MARGIN_SECONDS, CheckedBody, DeliveryPolicy, check_url, deadline_after
from s2v.model.errors import DeliveryError

POLICY = DeliveryPolicy(allowed_hosts=("*.wavespeed.ai", "static.example.com"), max_bytes=2 * 1024**3)
LOCAL = DeliveryPolicy(allowed_hosts=("127.0.0.1", "localhost", "::1"), max_bytes=2 * 1024**3,
                       allow_loopback_http=True)
PUBLIC = "93.184.216.34"


def resolving_to(*addresses: str) -> Callable[..., list[tuple]]:
    """A stand-in for socket.getaddrinfo that answers every name with ``addresses``."""
    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    return resolve


def unresolvable(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def refused(url: str, policy: DeliveryPolicy = POLICY, *addresses: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        check_url(url, policy, resolve=resolving_to(*(addresses or (PUBLIC,))))
    return info.value


@pytest.mark.parametrize("url", [
    "https://cdn.wavespeed.ai/outputs/v.mp4",
    "https://a.b.wavespeed.ai/v.mp4?X-Amz-Signature=abc&X-Amz-Expires=3600",
    "https://CDN.WaveSpeed.AI/v.mp4",
    "https://cdn.wavespeed.ai./v.mp4",
    "https://cdn.wavespeed.ai:8443/v.mp4",
    "https://static.example.com/v.mp4",
])
def test_public_https_urls_on_the_allow_list_pass(url: str) -> None:
    check_url(url, POLICY, resolve=resolving_to(PUBLIC, "2606:4700::1111"))


@pytest.mark.parametrize(("url", "reason"), [
    ("http://cdn.wavespeed.ai/v.mp4", "must use https"),
    ("ftp://cdn.wavespeed.ai/v.mp4", "scheme ftp is not allowed"),
    ("file:///etc/passwd", "scheme file is not allowed"),
    ("cdn.wavespeed.ai/v.mp4", "scheme (none) is not allowed"),
    ("", "no output URL"),
])
def test_only_https_is_accepted(url: str, reason: str) -> None:
    error = refused(url)
    assert reason in error.reason
    assert not error.retryable


@pytest.mark.parametrize("host", [
    "wavespeed.ai",  # the wildcard covers subdomains, not the apex
    "evilwavespeed.ai",
    "wavespeed.ai.evil.com",
    "cdn.wavespeed.ai.evil.com",
    "cdn-wavespeed.ai",
    "x.static.example.com",  # an exact entry allows no subdomains
    "example.com",
])
def test_hosts_off_the_allow_list_are_refused_by_name(host: str) -> None:
    error = refused(f"https://{host}/v.mp4")
    assert f"host {host} is not on the allow-list S2V_OUTPUT_ALLOWED_HOSTS" in error.reason
    assert not error.retryable


@pytest.mark.parametrize("url", [
    "https://cdn.wavespeed.ai@evil.com/v.mp4",
    "https://user:secret@cdn.wavespeed.ai/v.mp4",
    "https://cdn.wavespeed.ai:443@evil.com/v.mp4",
    "https://evil.com#@cdn.wavespeed.ai/v.mp4",
])
def test_userinfo_tricks_are_refused(url: str) -> None:
    error = refused(url)
    assert "credentials" in error.reason or "allow-list" in error.reason
    assert "cdn.wavespeed.ai is not" not in error.reason


@pytest.mark.parametrize("url", [
    "https://evil.com\\@cdn.wavespeed.ai/v.mp4",  # parsers disagree on backslashes
    "https://cdn.wavespeed.ai /v.mp4",
    "https://cdn.wavespeed.ai\t.evil.com/v.mp4",
    "https://cdn.wavespeed.\u0430i/v.mp4",  # Cyrillic "a"
    "https://cdn.wavespeed.ai%2eevil.com/v.mp4",
    "https://cdn.wavespeed.ai:99999/v.mp4",
    "https://[::1/v.mp4",
])
def test_malformed_or_ambiguous_urls_are_refused(url: str) -> None:
    assert not refused(url).retryable


@pytest.mark.parametrize(("address", "shown"), [
    ("10.0.0.5", "10.0.0.5 (private)"),
    ("172.16.3.4", "172.16.3.4 (private)"),
    ("192.168.1.1", "192.168.1.1 (private)"),
    ("169.254.169.254", "169.254.169.254 (link-local"),  # the EC2 / ECS metadata endpoint
    ("127.0.0.1", "127.0.0.1 (loopback)"),
    ("0.0.0.0", "0.0.0.0 (unspecified)"),
    ("224.0.0.1", "224.0.0.1 (multicast)"),
    ("240.0.0.1", "240.0.0.1 (reserved)"),
    ("100.64.0.1", "100.64.0.1 (not globally routable)"),  # carrier-grade NAT
    ("::1", "::1 (loopback)"),
    ("::", ":: (unspecified)"),
    ("fd00::1", "fd00::1 (private)"),  # unique local address
    ("fe80::1", "fe80::1 (link-local"),
    ("fec0::1", "fec0::1 (private)"),  # deprecated site-local, still routed inside some networks
    ("ff02::1", "ff02::1 (multicast)"),
    ("::ffff:10.0.0.1", "= 10.0.0.1 (private)"),  # IPv4-mapped: the IPv4 address is where packets go
    ("::ffff:169.254.169.254", "= 169.254.169.254 (link-local"),
    ("::ffff:127.0.0.1", "= 127.0.0.1 (loopback)"),
    ("2002:a9fe:a9fe::", "= 169.254.169.254 (link-local"),  # 6to4
    ("64:ff9b::a00:1", "= 10.0.0.1 (private)"),  # NAT64
])
def test_names_resolving_to_non_public_addresses_are_refused(address: str, shown: str) -> None:
    error = refused("https://cdn.wavespeed.ai/v.mp4", POLICY, address)
    assert "cdn.wavespeed.ai resolves to a non-public address" in error.reason
    assert shown in error.reason
    assert not error.retryable


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    error = refused("https://cdn.wavespeed.ai/v.mp4", POLICY, PUBLIC, "10.0.0.5")
    assert "10.0.0.5" in error.reason


@pytest.mark.parametrize("url", ["https://169.254.169.254/latest/meta-data/", "https://[fd00::1]/v.mp4"])
def test_ip_literals_are_held_to_the_allow_list_and_the_address_rules(url: str) -> None:
    assert "allow-list" in refused(url).reason
    literal_allowed = DeliveryPolicy(allowed_hosts=("169.254.169.254", "fd00::1"), max_bytes=1)
    assert "non-public" in refused(url, literal_allowed).reason


def test_a_name_that_does_not_resolve_is_a_retryable_failure() -> None:
    with pytest.raises(DeliveryError) as info:
        check_url("https://cdn.wavespeed.ai/v.mp4", POLICY, resolve=unresolvable)
    assert "could not resolve output URL host cdn.wavespeed.ai" in info.value.reason
    assert info.value.retryable


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/outputs/v.mp4",
    "http://localhost:8000/outputs/v.mp4",
    "http://[::1]:8000/outputs/v.mp4",
    "https://127.0.0.1:8443/outputs/v.mp4",
])
def test_local_mode_allows_loopback_over_plain_http(url: str) -> None:
    check_url(url, LOCAL, resolve=resolving_to("127.0.0.1", "::1"))


def test_outside_local_mode_loopback_is_refused_even_on_the_allow_list() -> None:
    strict = DeliveryPolicy(allowed_hosts=LOCAL.allowed_hosts, max_bytes=1)
    assert "must use https" in refused("http://127.0.0.1:8000/v.mp4", strict, "127.0.0.1").reason
    assert "(loopback)" in refused("https://localhost:8443/v.mp4", strict, "127.0.0.1").reason


def test_local_mode_still_requires_https_away_from_loopback() -> None:
    local = DeliveryPolicy(allowed_hosts=("cdn.wavespeed.ai", "10.1.2.3", "localhost"), max_bytes=1,
                           allow_loopback_http=True)
    assert "must use https" in refused("http://cdn.wavespeed.ai/v.mp4", local).reason
    assert "must use https" in refused("http://10.1.2.3/v.mp4", local).reason
    # "localhost" that resolves elsewhere is not loopback.
    assert "must use https" in refused("http://localhost/v.mp4", local, PUBLIC).reason


@pytest.mark.parametrize("pattern", ["*", "*.com", "*wavespeed.ai", "cdn.*.ai", "https://cdn.wavespeed.ai", ""])
def test_malformed_allow_list_entries_are_a_configuration_error(pattern: str) -> None:
    with pytest.raises(ValueError, match="S2V_OUTPUT_ALLOWED_HOSTS"):
        DeliveryPolicy(allowed_hosts=(pattern,), max_bytes=1)


def test_parts_smaller_than_s3_allows_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        DeliveryPolicy(allowed_hosts=(), max_bytes=1, chunk_size=1024 * 1024)


MP4 = b"\x00\x00\x00\x18ftypisom" + bytes(range(200))  # 212 bytes


def checked(pieces: list[bytes], *, expected: int | None = None, max_bytes: int = 10_000) -> CheckedBody:
    policy = DeliveryPolicy(allowed_hosts=("cdn.wavespeed.ai",), max_bytes=max_bytes)
    return CheckedBody(iter(pieces), expected=expected, policy=policy, host="cdn.wavespeed.ai")


def test_the_body_reads_exactly_the_bytes_asked_for_however_the_network_splits_them() -> None:
    body = checked([MP4[:3], MP4[3:50], MP4[50:51], MP4[51:]], expected=len(MP4))

    reads = [body.read(64) for _ in range(5)]

    assert [len(r) for r in reads] == [64, 64, 64, 20, 0]  # S3 parts before the last must be full
    assert b"".join(reads) == MP4 and body.bytes_read == len(MP4)


def test_a_body_that_ends_before_its_content_length_is_a_retryable_interruption() -> None:
    body = checked([MP4], expected=len(MP4) + 10)

    with pytest.raises(DeliveryError) as info:
        body.read(1000)

    assert info.value.reason == "download stopped after 212 bytes of 222 bytes: the provider connection was interrupted"
    assert info.value.retryable


def test_a_body_is_cut_off_as_soon_as_it_passes_the_cap() -> None:
    body = checked([MP4, MP4, b"never read"], max_bytes=300)

    with pytest.raises(DeliveryError) as info:
        body.read(1000)

    assert "larger than the cap of 300 bytes (S2V_MAX_OUTPUT_BYTES); download stopped at 424 bytes" in info.value.reason
    assert not info.value.retryable


@pytest.mark.parametrize("pieces", [[b"<html>"], [b"<htm", b"l><body>"], [b"\x00\x00\x00\x18fty", b"Pisom"]])
def test_a_body_that_does_not_start_with_an_ftyp_box_is_refused(pieces: list[bytes]) -> None:
    with pytest.raises(DeliveryError) as info:
        checked(pieces).read(1000)

    assert "not an MP4 video" in info.value.reason
    assert not info.value.retryable


def test_a_body_read_past_the_deadline_stops_with_a_retryable_reason() -> None:
    late = iter([False, True])  # the deadline passes after the first piece
    policy = DeliveryPolicy(allowed_hosts=("cdn.wavespeed.ai",), max_bytes=10_000)
    body = CheckedBody(iter([MP4[:100], MP4[100:]]), expected=len(MP4), policy=policy, host="cdn.wavespeed.ai",
                       expired=lambda: next(late))

    with pytest.raises(DeliveryError) as info:
        body.read(1000)

    assert info.value.reason == ("download stopped after 100 bytes of 212 bytes: the delivery deadline passed, "
                                 "the output from cdn.wavespeed.ai came too slowly; a later attempt may work")
    assert info.value.retryable


def test_a_connection_cut_at_the_deadline_is_reported_as_the_deadline_not_an_interruption() -> None:
    def cut_after_one_piece() -> Iterator[bytes]:
        yield MP4[:100]
        raise ConnectionResetError("shut at the deadline")

    calls = iter([False, False, True])
    policy = DeliveryPolicy(allowed_hosts=("cdn.wavespeed.ai",), max_bytes=10_000)
    body = CheckedBody(cut_after_one_piece(), expected=None, policy=policy, host="cdn.wavespeed.ai",
                       expired=lambda: next(calls))

    with pytest.raises(DeliveryError) as info:
        body.read(1000)

    assert info.value.reason.startswith("download stopped after 100 bytes: the delivery deadline passed")
    assert info.value.retryable


def test_the_deadline_keeps_the_stop_margin_of_the_function_time_left() -> None:
    before = time.monotonic()
    deadline = deadline_after(120_000)
    assert before + 120 - STOP_MARGIN_SECONDS <= deadline <= time.monotonic() + 120 - STOP_MARGIN_SECONDS
