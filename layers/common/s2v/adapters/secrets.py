"""Secrets, read once per cold start and cached. Values never reach logs, errors or job records."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import Callable
from typing import Any

from s2v.config import Settings
from s2v.model.errors import ConfigError

WHSEC_PREFIX = "whsec_"
# After a callback with a valid per-job token fails its signature, the provider is asked for its
# secret again (it may have rotated it), at most this often per container: a caller holding a
# token cannot turn bad signatures into a flood of provider calls.
SIGNING_REFETCH_SECONDS = 60.0
# After a rotation the previous secret still verifies this long: callbacks the provider signed just
# before rotating are still arriving. Short, because a rotation may be a response to a leak.
SIGNING_GRACE_SECONDS = 3600.0

logger = logging.getLogger(__name__)


class Secrets:
    def __init__(self, settings: Settings, secretsmanager: Callable[[], Any]) -> None:
        self._settings = settings
        self._client = secretsmanager
        self._signing_secret = ""
        self._previous_secret = ""
        self._previous_until = 0.0
        self._refetched_at = -math.inf
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

    def webhook_signing_secrets(self, fetch_from_provider: Callable[[], str], now: float) -> tuple[str, ...]:
        """Every secret a callback may be signed with now: the current one, and the one it replaced
        while that is within its grace period."""
        current = self.webhook_signing_secret(fetch_from_provider)
        return (current, self._previous_secret) if self._previous_secret and now < self._previous_until else (current,)

    def refresh_signing_secret(self, fetch_from_provider: Callable[[], str], now: float) -> bool:
        """Ask the provider for its secret again, bypassing every cache, at most once per
        SIGNING_REFETCH_SECONDS. True when it changed: the new one is kept (and stored in Secrets
        Manager), the old one verifies for SIGNING_GRACE_SECONDS more."""
        if 0 <= now - self._refetched_at < SIGNING_REFETCH_SECONDS:
            return False
        self._refetched_at = now
        try:
            fresh = fetch_from_provider()
        except Exception as exc:  # the provider is unreachable: the callback stays refused, the poller covers it
            logger.warning("could not re-read the webhook signing secret: %s", type(exc).__name__)
            return False
        old = self.webhook_signing_secret(lambda: fresh)
        if not fresh or fresh == old:
            return False
        if self._settings.webhook_secret_id:
            self._client().put_secret_value(SecretId=self._settings.webhook_secret_id, SecretString=fresh)
        self._previous_secret, self._previous_until = old, now + SIGNING_GRACE_SECONDS
        self._signing_secret = fresh
        logger.warning("the provider rotated its webhook signing secret; the previous one verifies for %d s more",
                       int(SIGNING_GRACE_SECONDS))
        return True

    def forget_signing_secret(self) -> None:
        """Drop the cached secret (e.g. after the account rotated it)."""
        self._signing_secret = ""
