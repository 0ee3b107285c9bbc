from __future__ import annotations

import pytest

from s2v.config import Settings
from s2v.model.errors import ConfigError

BASE = {"S2V_BUCKET": "b", "S2V_JOBS_TABLE": "t"}


def test_defaults_follow_the_provider_contract() -> None:
    settings = Settings.from_env(BASE)
    assert settings.default_resolution == "480p"
    assert settings.max_audio_seconds == 600  # up to 10 minutes per call (model docs page)
    assert settings.max_audio_bytes == 200 * 1024 * 1024
    assert settings.price_for("480p") == pytest.approx(0.03)
    assert settings.price_for("720p") == pytest.approx(0.06)
    assert settings.provider_base_url == "https://api.wavespeed.ai"


def test_a_ten_minute_48_khz_stereo_wav_fits_the_default_byte_limit() -> None:
    ten_minutes_of_pcm = 600 * 48_000 * 2 * 2 + 44  # ~115 MB
    assert ten_minutes_of_pcm < Settings.from_env(BASE).max_audio_bytes


def test_output_hosts_default_to_the_provider_domain_and_its_one_cdn_host() -> None:
    hosts = Settings.from_env(BASE).output_allowed_hosts
    assert hosts == ("*.wavespeed.ai", "d1q70pf5vjeyhc.cloudfront.net")
    assert not any("*" in host and "cloudfront" in host for host in hosts)


def test_the_limits_come_from_the_provider_facts() -> None:
    from s2v.model import provider_facts

    settings = Settings.from_env(BASE)
    assert settings.max_audio_seconds == provider_facts.MAX_SECONDS_PER_CALL
    assert settings.output_allowed_hosts == provider_facts.OUTPUT_HOSTS
    # No operator prices: each model's own (the default model's are the provider facts').
    assert dict(settings.price_per_second) == {}
    assert {r: settings.price_for(r) for r in provider_facts.RESOLUTIONS} == provider_facts.PRICE_PER_SECOND


@pytest.mark.parametrize(("env", "message"), [
    ({"S2V_JOBS_TABLE": "t"}, "S2V_BUCKET"),
    ({**BASE, "S2V_DEFAULT_RESOLUTION": "1080p"}, "S2V_DEFAULT_RESOLUTION"),
    ({**BASE, "S2V_POLL_MIN_SECONDS": "soon"}, "S2V_POLL_MIN_SECONDS"),
    ({**BASE, "S2V_PRICE_PER_SECOND": '{"480p": 0.03}'}, "720p"),
    ({**BASE, "S2V_OUTPUT_PREFIX": "inputs/x/"}, "overlap"),
    ({**BASE, "S2V_LOCAL_MODE": "maybe"}, "S2V_LOCAL_MODE"),
])
def test_bad_configuration_fails_at_start_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_api_key_never_appears_in_the_settings_repr() -> None:
    settings = Settings.from_env({**BASE, "WAVESPEED_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)
