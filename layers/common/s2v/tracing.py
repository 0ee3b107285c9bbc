"""X-Ray tracing through Powertools' Tracer, built only when tracing is on.

Creating a Tracer sets up aws-xray-sdk's recorder even when tracing is disabled: about 120 ms of
every cold start (bench/, figure 4), more than the rest of a handler's imports. So the Tracer is
built only when ``POWERTOOLS_TRACE_DISABLED`` is false inside Lambda (the template's ``Tracing``
parameter set to ``Active``); otherwise the decorators hand the function back unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_FALSE = ("0", "false", "no", "off", "n", "f")


def tracing_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Powertools' rule: on in Lambda unless POWERTOOLS_TRACE_DISABLED is true, off under SAM local."""
    disabled = env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() not in _FALSE
    in_lambda = bool(env.get("LAMBDA_TASK_ROOT")) and not env.get("AWS_SAM_LOCAL")
    return in_lambda and not disabled


class LazyTracer:
    """The two Tracer decorators the handlers use; a real Tracer only when tracing is enabled."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self.tracer: Any = None
        if tracing_enabled(env):
            from aws_lambda_powertools import Tracer

            self.tracer = Tracer()

    def capture_lambda_handler(self, handler: F) -> F:
        return handler if self.tracer is None else self.tracer.capture_lambda_handler(handler)

    def capture_method(self, method: F) -> F:
        return method if self.tracer is None else self.tracer.capture_method(method)
