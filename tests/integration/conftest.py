"""Fixtures the flow tests share: a provider emulator per module and a flow over moto wired to it.

A module configures them by overriding two small fixtures: ``emulator_options`` (the emulator's
render time, faults, limits) and ``flow_env`` (the flow's settings). A module whose tests change
``emulator.faults`` asks for ``healthy_provider`` (``pytest.mark.usefixtures``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.flow import FLOW_API_KEY, Flow, make_flow
from s2v_local.emulator import Emulator, Faults


@pytest.fixture(scope="module")
def emulator_options() -> dict[str, Any]:
    """Emulator keyword arguments for this module (renders finish as fast as ffmpeg makes them)."""
    return {"render_seconds": 0}


@pytest.fixture(scope="module")
def emulator(emulator_options: dict[str, Any]) -> Iterator[Emulator]:
    with Emulator(api_key=FLOW_API_KEY, **emulator_options) as running:
        yield running


@pytest.fixture
def healthy_provider(emulator: Emulator) -> Iterator[None]:
    """No fault before or after the test, whatever the one before left behind."""
    emulator.faults = Faults()
    yield
    emulator.faults = Faults()


@pytest.fixture
def flow_env() -> dict[str, str]:
    """The flow's settings for this module (environment variable names, as the stack sets them)."""
    return {}


@pytest.fixture
def flow(moto_endpoint: str, unique: str, emulator: Emulator, flow_env: dict[str, str]) -> Flow:
    return make_flow(moto_endpoint, unique, emulator.base_url, **flow_env)
