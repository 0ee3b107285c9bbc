from __future__ import annotations

import pytest

from s2v.config import Settings
from s2v.model.errors import ConfigError

BASE = {"S2V_BUCKET": "b", "S2V_JOBS_TABLE": "t"}


def test_defaults_follow_the_provider_contract() -> None:
    settings = Settings.from_env(BASE)
    assert settings.default_resolution == "480p"
    assert settings.max_audio_seconds == 120
    assert settings.price_for("480p") == pytest.approx(0.03)
    assert settings.price_for("720p") == pytest.approx(0.06)
    assert settings.provider_base_url == "https://api.wavespeed.ai"


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
