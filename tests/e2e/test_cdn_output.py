"""With the default allow-list, an output on the provider's CDN host is delivered.

The emulator serves its outputs over https under the real CDN host name
(``d1q70pf5vjeyhc.cloudfront.net``) with a certificate from a CA made for this test; inside this
process that name resolves to loopback and the CA is trusted, as DNS and the public PKI would do
for the real host. The stack runs with S2V_OUTPUT_ALLOWED_HOSTS unset, so the deliver function
uses the configuration's default: nothing local is added to the allow-list.
(Other CloudFront hosts are refused by name: tests/unit/test_output_hosts.py.)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import pytest

from helpers.delivery_servers import LocalCA
from helpers.pipeline import wait_for_job
from s2v.config import DEFAULT_OUTPUT_HOSTS
from s2v.model import provider_facts
from s2v_local import samples
from s2v_local.probe import probe_media

pytestmark = pytest.mark.e2e
API_KEY = "e2e-cdn-key"
CDN = provider_facts.CDN_HOST


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    directory = tmp_path_factory.mktemp("cdn-ca")
    authority = LocalCA(directory)
    bundle = directory / "bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + Path(authority.ca_file).read_bytes())
    original = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return original("127.0.0.1" if host == CDN else host, port, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", resolve)  # "DNS" for the CDN host: loopback
        patch.setattr(certifi, "where", lambda: str(bundle))  # the public CAs, and ours
        yield authority


@pytest.fixture(scope="module")
def stack(ca: LocalCA) -> Iterator[Any]:
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    with Emulator(api_key=API_KEY, render_seconds=0.2, output_host=CDN,
                  output_tls=ca.server_context(CDN)) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, api_key=API_KEY, poll_interval_seconds=1,
        queue_delay_seconds=1, env_overrides={"S2V_OUTPUT_ALLOWED_HOSTS": ""},  # unset: the default applies
    ) as local:
        local.emulator = emulator
        yield local


def test_with_the_default_allow_list_an_output_on_the_cdn_host_is_delivered(
        stack: Any, ca: LocalCA, tmp_path: Path) -> None:
    # Given the default allow-list and an output served from the provider's CDN host over https
    from s2v.config import Settings

    settings = Settings.from_env()
    assert settings.output_allowed_hosts == DEFAULT_OUTPUT_HOSTS == provider_facts.OUTPUT_HOSTS
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key="inputs/cdn/alice.png", Body=samples.portrait_png(256, 320))
    s3.put_object(Bucket=stack.bucket, Key="inputs/cdn/alice.wav", Body=samples.speech_wav(2.0))
    # When the pipeline runs
    job = wait_for_job(stack, "cdn", "alice", timeout=120)
    # Then the video is downloaded from that host, its certificate checked for that name
    assert job["status"] == "DELIVERED", job.get("failure")
    url = urlsplit(job["output_url"])
    assert (url.scheme, url.hostname, url.path) == ("https", CDN, f"/predictions/{job['provider_id']}/1.mp4")
    assert CDN in ca.sni_names
    video = tmp_path / "alice.mp4"
    s3.download_file(stack.bucket, job["output_key"], str(video))
    media = probe_media(video)
    assert media.has_video and media.has_audio and media.duration_seconds == pytest.approx(2.0, abs=0.2)
