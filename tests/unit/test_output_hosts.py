"""The default output allow-list admits the provider's one CDN host and nothing else on CloudFront.

Outputs of this model come from ``d1q70pf5vjeyhc.cloudfront.net`` (provider_facts); any other
``*.cloudfront.net`` host belongs to some other CloudFront customer (or another model's bucket), so
delivery must refuse it by name before resolving or fetching anything.
"""

from __future__ import annotations

import socket

import pytest

from s2v.adapters.delivery import check_url
from s2v.config import Settings
from s2v.flows.deliver import delivery_policy
from s2v.model import provider_facts
from s2v.model.errors import DeliveryError

SETTINGS = Settings.from_env({"S2V_BUCKET": "b", "S2V_JOBS_TABLE": "t"})
PUBLIC = "13.224.0.10"


def public(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port))]


def never_resolved(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
    raise AssertionError(f"{host} was resolved although its name is refused")


@pytest.mark.parametrize("url", [
    f"https://{provider_facts.CDN_HOST}/predictions/7f0c1a2b3c4d/1.mp4",
    "https://D1Q70PF5VJEYHC.cloudfront.net/predictions/7f0c1a2b3c4d/1.mp4",
    "https://cdn.wavespeed.ai/predictions/7f0c1a2b3c4d/1.mp4",
])
def test_with_the_defaults_the_provider_cdn_output_is_allowed(url: str) -> None:
    check_url(url, delivery_policy(SETTINGS), resolve=public)


@pytest.mark.parametrize("host", [
    provider_facts.OTHER_MODEL_CDN_HOST,  # the provider's own, but another model's distribution
    "d1q70pf5vjeyhd.cloudfront.net",
    "attacker.cloudfront.net",
    "d1q70pf5vjeyhc.cloudfront.net.evil.com",
    "x.d1q70pf5vjeyhc.cloudfront.net",  # an exact host admits no subdomains
    "cloudfront.net",
])
def test_with_the_defaults_any_other_cloudfront_host_is_refused_by_name(host: str) -> None:
    with pytest.raises(DeliveryError) as refused:
        check_url(f"https://{host}/predictions/t/1.mp4", delivery_policy(SETTINGS), resolve=never_resolved)
    assert f"host {host} is not on the allow-list S2V_OUTPUT_ALLOWED_HOSTS" in refused.value.reason
    assert not refused.value.retryable


def test_the_default_policy_is_https_only() -> None:
    with pytest.raises(DeliveryError, match="https"):
        check_url(f"http://{provider_facts.CDN_HOST}/predictions/t/1.mp4", delivery_policy(SETTINGS), resolve=public)
