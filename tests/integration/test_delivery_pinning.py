"""Delivery connects to the address it checked, not to whatever DNS answers a moment later.

Two loopback servers share a port: the checked one on 127.0.0.1 and the "rebound" one on
127.0.0.2. The host name resolves to 127.0.0.1 once, then to 127.0.0.2 (for the delivery's own
resolver and for ``socket.getaddrinfo``, so a second lookup by any library would see the change).
The https cases use a certificate authority made for the test: the connection goes to the IP,
while SNI and the certificate check use the host name.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.aws import client
from helpers.delivery_servers import MB, LocalCA, Output, VideoServer
from s2v.adapters.delivery import DeliveryPolicy, copy_url_to_s3
from s2v.model.errors import DeliveryError

KEY = "outputs/talks/pinned.mp4"
PATH = "/outputs/v.mp4"
NAME = "video.s2v.test"
_real_getaddrinfo = socket.getaddrinfo


class Rebinding:
    """A resolver whose answer for ``name`` changes after the first lookup: DNS rebinding."""

    def __init__(self, name: str, first: str, then: str) -> None:
        self.name, self.first, self.then = name, first, then
        self.lookups = 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host != self.name:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups += 1
        address = self.first if self.lookups == 1 else self.then
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return client("s3", moto_endpoint)


@pytest.fixture
def bucket(s3: Any, unique: str) -> str:
    s3.create_bucket(Bucket=f"pinning-{unique}")
    return f"pinning-{unique}"


@pytest.fixture
def local_ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path)


def servers(*, tls: Any = None) -> tuple[VideoServer, VideoServer]:
    """(checked, rebound): the same video on 127.0.0.1 and 127.0.0.2, one port."""
    checked = VideoServer(address="127.0.0.1", tls=tls)
    rebound = VideoServer(address="127.0.0.2", port=checked.port, tls=tls)
    for server in (checked, rebound):
        server.serve(Output(size=MB), path=PATH)
    return checked, rebound


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Rebinding]:
    """Makes ``name`` rebind from 127.0.0.1 to 127.0.0.2, for socket.getaddrinfo too."""
    def install(name: str) -> Rebinding:
        resolver = Rebinding(name, "127.0.0.1", "127.0.0.2")
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        return resolver
    return install


def stored(s3: Any, bucket: str) -> list[str]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys + [f"upload:{key}" for key in uploads]


def test_plain_http_goes_to_the_checked_address_when_dns_answers_differently_later(
    s3: Any, bucket: str, rebinding: Any,
) -> None:
    # Given "localhost" that resolves to 127.0.0.1 once, then to 127.0.0.2
    resolver = rebinding("localhost")
    checked, rebound = servers()
    policy = DeliveryPolicy(allowed_hosts=("localhost",), max_bytes=64 * MB, allow_loopback_http=True)
    with checked, rebound:
        # When the copy runs
        got = copy_url_to_s3(f"http://localhost:{checked.port}{PATH}", s3_client=s3, bucket=bucket, key=KEY,
                             policy=policy, resolve=resolver)

        # Then the name was resolved once, and the checked address served the whole copy
        assert resolver.lookups == 1
        assert (checked.hits(PATH), rebound.hits(PATH)) == (1, 0)
        assert checked.hosts == [f"localhost:{checked.port}"]  # the Host header names the host, not the IP
    assert got.size == MB and stored(s3, bucket) == [KEY]


def test_each_redirect_goes_to_the_address_checked_for_it(s3: Any, bucket: str, rebinding: Any) -> None:
    # Given a first URL on 127.0.0.1 that redirects to "localhost", which rebinds after its check
    resolver = rebinding("localhost")
    checked, rebound = servers()
    policy = DeliveryPolicy(allowed_hosts=("127.0.0.1", "localhost"), max_bytes=64 * MB, allow_loopback_http=True)
    with checked, rebound:
        first = checked.serve(Output(redirect_to=f"http://localhost:{checked.port}{PATH}"))

        got = copy_url_to_s3(first, s3_client=s3, bucket=bucket, key=KEY, policy=policy, resolve=resolver)

        assert resolver.lookups == 1
        assert (checked.hits(PATH), rebound.hits(PATH)) == (1, 0)
        assert checked.hosts == [f"127.0.0.1:{checked.port}", f"localhost:{checked.port}"]
    assert got.size == MB and stored(s3, bucket) == [KEY]


def test_https_connects_to_the_checked_address_with_sni_and_certificate_for_the_name(
    s3: Any, bucket: str, rebinding: Any, local_ca: LocalCA,
) -> None:
    # Given an https host whose certificate (from the test's CA) names it, and DNS that rebinds
    resolver = rebinding(NAME)
    checked, rebound = servers(tls=local_ca.server_context(NAME))
    policy = DeliveryPolicy(allowed_hosts=(NAME,), max_bytes=64 * MB, allow_loopback_http=True)
    with checked, rebound:
        # When the copy runs
        got = copy_url_to_s3(f"https://{NAME}:{checked.port}{PATH}", s3_client=s3, bucket=bucket, key=KEY,
                             policy=policy, resolve=resolver, ca_file=local_ca.ca_file)

        # Then it connected once, to the checked IP, asking for the name in SNI and in Host
        assert resolver.lookups == 1
        assert (checked.hits(PATH), rebound.hits(PATH)) == (1, 0)
        assert local_ca.sni_names == [NAME]
        assert checked.hosts == [f"{NAME}:{checked.port}"]
    assert got.size == MB and stored(s3, bucket) == [KEY]


def test_https_refuses_a_certificate_for_another_name(s3: Any, bucket: str, rebinding: Any,
                                                       local_ca: LocalCA) -> None:
    resolver = rebinding(NAME)
    with VideoServer(tls=local_ca.server_context("other.s2v.test")) as elsewhere:
        elsewhere.serve(Output(size=MB), path=PATH)
        policy = DeliveryPolicy(allowed_hosts=(NAME,), max_bytes=64 * MB, allow_loopback_http=True)

        with pytest.raises(DeliveryError) as failure:
            copy_url_to_s3(f"https://{NAME}:{elsewhere.port}{PATH}", s3_client=s3, bucket=bucket, key=KEY,
                           policy=policy, resolve=resolver, ca_file=local_ca.ca_file)

        assert elsewhere.hits(PATH) == 0  # no request was sent over the unverified connection
    assert f"the certificate of {NAME} could not be verified" in failure.value.reason
    assert "Hostname mismatch" in failure.value.reason
    assert stored(s3, bucket) == []


def test_https_refuses_a_certificate_from_an_authority_it_does_not_trust(
    s3: Any, bucket: str, rebinding: Any, local_ca: LocalCA,
) -> None:
    resolver = rebinding(NAME)
    with VideoServer(tls=local_ca.server_context(NAME)) as server:
        server.serve(Output(size=MB), path=PATH)
        policy = DeliveryPolicy(allowed_hosts=(NAME,), max_bytes=64 * MB, allow_loopback_http=True)

        with pytest.raises(DeliveryError) as failure:  # the default trust store knows nothing of the test CA
            copy_url_to_s3(f"https://{NAME}:{server.port}{PATH}", s3_client=s3, bucket=bucket, key=KEY,
                           policy=policy, resolve=resolver)

        assert server.hits(PATH) == 0
    assert f"the certificate of {NAME} could not be verified" in failure.value.reason
    assert stored(s3, bucket) == []
