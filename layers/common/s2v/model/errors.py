"""The error hierarchy every handler maps to an outcome.

- ``InputError``: the user's input is wrong. The job ends FAILED with an actionable reason;
  retrying cannot help, so nothing is retried.
- ``ProviderError``: the provider answered with a failure. ``retryable`` says whether trying
  again later can help (5xx, 429) or not (1xxx task errors, 4xx).
- ``TransientError``: infrastructure hiccup; let the platform retry the event.
"""

from __future__ import annotations


class S2VError(Exception):
    """Base class for all s2v errors."""


class ConfigError(S2VError):
    """Configuration is missing or invalid; raised at cold start."""


class InputError(S2VError):
    """The user's input cannot be processed. ``reason`` is what to tell them."""

    def __init__(self, reason: str, *, code: str = "invalid_input") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class TransientError(S2VError):
    """A temporary failure: the event should be retried by the platform."""


class ProviderError(S2VError):
    """The provider reported a failure."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.provider_code = provider_code
        self.retryable = retryable
        self.retry_after = retry_after


class SubmitNotAccepted(ProviderError):
    """The provider certainly did not accept the submission (refused connection, 429, 503
    answered before acceptance). Safe to submit again later."""

    def __init__(self, message: str, *, status_code: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status_code=status_code, retryable=True,
                         retry_after=retry_after)


class SubmitOutcomeUnknown(ProviderError):
    """The submission was sent but no usable answer came back (timeout, dropped connection,
    unparseable 2xx). The provider may have accepted it and may charge: never resend blindly."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class DeliveryError(S2VError):
    """The output could not be copied safely; nothing was left under ``outputs/``."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
