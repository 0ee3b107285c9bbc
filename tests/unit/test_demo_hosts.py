"""The demo's real-key mode downloads from the same hosts a deployment allows."""

from __future__ import annotations

import pytest

from s2v_local.demo import real_output_hosts


def test_real_key_mode_allows_the_provider_domain_and_its_one_cdn_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S2V_OUTPUT_ALLOWED_HOSTS", raising=False)
    assert real_output_hosts() == "*.wavespeed.ai,d1q70pf5vjeyhc.cloudfront.net"
    assert "*.cloudfront.net" not in real_output_hosts()


def test_real_key_mode_takes_the_hosts_from_the_environment_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2V_OUTPUT_ALLOWED_HOSTS", "cdn.example.com")
    assert real_output_hosts() == "cdn.example.com"
