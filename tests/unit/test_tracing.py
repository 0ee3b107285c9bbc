"""X-Ray's recorder is built only when tracing is on: it costs ~120 ms of each cold start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2v.tracing import LazyTracer, tracing_enabled

REPO = Path(__file__).resolve().parents[2]
IN_LAMBDA = {"LAMBDA_TASK_ROOT": "/var/task"}


@pytest.mark.parametrize(("env", "enabled"), [
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "false"}, True),
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "0"}, True),
    (IN_LAMBDA, True),  # Powertools' default inside Lambda
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "true"}, False),
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "1"}, False),
    ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "false", "AWS_SAM_LOCAL": "true"}, False),
    ({"POWERTOOLS_TRACE_DISABLED": "false"}, False),  # outside Lambda there is no X-Ray daemon
])
def test_tracing_follows_powertools_rules(env: dict[str, str], enabled: bool) -> None:
    assert tracing_enabled(env) is enabled


def test_a_disabled_tracer_returns_the_function_itself() -> None:
    tracer = LazyTracer({"POWERTOOLS_TRACE_DISABLED": "true"})

    def handler(event: dict[str, str], context: object) -> str:
        return event["x"]

    assert tracer.tracer is None
    assert tracer.capture_lambda_handler(handler) is handler
    assert tracer.capture_method(handler) is handler


def test_an_enabled_tracer_wraps_with_powertools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_XRAY_CONTEXT_MISSING", "IGNORE_ERROR")
    tracer = LazyTracer({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "false"})

    def method(value: int) -> int:
        return value + 1

    wrapped = tracer.capture_method(method)
    assert tracer.tracer is not None and wrapped is not method
    assert wrapped(1) == 2


@pytest.mark.parametrize("function", ["ingest", "webhook", "poll", "deliver"])
def test_handlers_do_not_load_the_xray_sdk_when_tracing_is_off(function: str) -> None:
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('handler', {str(REPO / 'functions' / function / 'app.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aws_xray_sdk'))))\n"
    )
    env = {**os.environ, "S2V_BUCKET": "b", "S2V_JOBS_TABLE": "t", "AWS_DEFAULT_REGION": "us-east-1",
           "LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true",
           "PYTHONPATH": str(REPO / "layers" / "common")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
