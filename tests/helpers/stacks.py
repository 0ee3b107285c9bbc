"""The whole local stack with its provider emulator, as the e2e modules start it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


@contextmanager
def emulated_stack(api_key: str = "local-dev-key", *, render_seconds: float = 0.3,
                   env: Mapping[str, str] | None = None, **stack_options: Any) -> Iterator[Any]:
    """A LocalStack wired to a running Emulator (``stack.emulator``), polling every second and
    with a one-second queue delay unless ``stack_options`` say otherwise; ``env`` is the
    functions' environment overrides."""
    from s2v_local.emulator import Emulator
    from s2v_local.stack import LocalStack

    options: dict[str, Any] = {"poll_interval_seconds": 1, "queue_delay_seconds": 1, **stack_options}
    with Emulator(api_key=api_key, render_seconds=render_seconds) as emulator, LocalStack(
        emulator=emulator, provider_base_url=emulator.base_url, api_key=api_key,
        env_overrides=dict(env or {}), **options,
    ) as local:
        yield local
