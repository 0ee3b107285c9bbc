"""Secrets, read once per cold start and cached. Values never reach logs, errors or job records."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from s2v.config import Settings
from s2v.model.errors import ConfigError

WHSEC_PREFIX = "whsec_"




class Secrets:
    def __init__(self, settings: Settings, secretsmanager: Callable[[], Any]) -> None:
        self._settings = settings
        self._client = secretsmanager
        self._signing_secret = ""
        self._provider: Any = None

    def _get_secret(self, secret_id: str) -> str:
        # Powertools caches each value for max_age seconds across warm invocations; the provider
        # uses our client, so it talks to the same endpoint as everything else.
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._provider = SecretsProvider(boto3_client=self._client())
        value = self._provider.get(secret_id, max_age=300)
        return value if isinstance(value, str) else value.decode()

    def api_key(self) -> str:
        if self._settings.api_key:
            return self._settings.api_key
        if not self._settings.api_key_secret_id:
            raise ConfigError("set WAVESPEED_API_KEY or WAVESPEED_API_KEY_SECRET_ID")
        return self._get_secret(self._settings.api_key_secret_id).strip()

    def _token_key(self) -> bytes:
        if self._settings.webhook_token_key:
            return self._settings.webhook_token_key.encode()
        if not self._settings.webhook_token_secret_id:
            raise ConfigError("set S2V_WEBHOOK_TOKEN_SECRET_ID (or S2V_WEBHOOK_TOKEN_KEY locally)")
        return self._get_secret(self._settings.webhook_token_secret_id).encode()

    def callback_token(self, job_id: str) -> str:
        """Per-job token in our callback URL: a callback can only touch the job it was issued for."""
        return self._token_digest(job_id).hex()

    def _token_digest(self, job_id: str) -> bytes:
        # Any text a path can carry (lone surrogates too) is bytes here, so nothing raises on it.
        return hmac.new(self._token_key(), job_id.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def callback_token_matches(self, job_id: str, token: str) -> bool:
        """Compared as bytes: a non-ASCII token is simply not the token."""
        given = (token or "").encode("utf-8", "surrogatepass")
        return hmac.compare_digest(self._token_digest(job_id).hex().encode(), given)

    def webhook_signing_secret(self, fetch_from_provider: Callable[[], str]) -> str:
        """The provider's ``whsec_`` secret: memory, then our Secrets Manager cache, then the
        provider (stored back to Secrets Manager so later cold starts skip the provider call)."""
        if self._signing_secret:
            return self._signing_secret
        secret_id = self._settings.webhook_secret_id
        if secret_id:
            value = self._client().get_secret_value(SecretId=secret_id).get("SecretString", "")
            if value.startswith(WHSEC_PREFIX):
                self._signing_secret = value
                return value
        value = fetch_from_provider()
        if secret_id:
            self._client().put_secret_value(SecretId=secret_id, SecretString=value)
        self._signing_secret = value
        return value

    def forget_signing_secret(self) -> None:
        """Drop the cached secret (e.g. after the account rotated it)."""
        self._signing_secret = ""
