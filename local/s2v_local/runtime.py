"""The local Lambda runtime: a template function's handler module, loaded into warm "containers"."""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from s2v_local.template import Function

# Not "s2v…": Powertools filters every logger whose name contains its service name out of the root handlers.
log = logging.getLogger("local_router")


class HandlerMissing(RuntimeError):
    """A function in template.yaml has no handler file (or no handler in it) under the root."""


@dataclass
class LambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float  # time.monotonic() when the invocation would time out
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


_import_lock = threading.Lock()


class FunctionRuntime:
    """One template function and its warm "containers" (module instances).

    Like Lambda, a container serves one invocation at a time and a new one cold-starts when all
    are busy, so module-level state in a handler (a Powertools BatchProcessor, say) is never
    shared by concurrent invocations.
    """

    def __init__(self, function: Function, root: Path, *, name: str, arn: str) -> None:
        self.function = function
        self.name = name
        self.arn = arn
        self.module_file = root / function.module_path
        self._idle: list[ModuleType] = []
        self._loaded: list[str] = []
        self._lock = threading.Lock()
        # Seconds per invocation, for bench/'s cost model: those a schedule made cost the same at
        # any load; those events made (uploads, webhooks, stream records) are a cost per job.
        self.event_durations: list[float] = []
        self.scheduled_durations: list[float] = []

    def check_handler(self) -> str | None:
        """Why this function cannot run, or None."""
        if not self.module_file.is_file():
            return (f"{self.function.logical_id}: {self.module_file} not found "
                    f"(CodeUri {self.function.code_uri}, Handler {self.function.handler})")
        return None

    def warm(self) -> None:
        self._idle.append(self._cold_start())

    def _cold_start(self) -> ModuleType:
        with _import_lock:
            module_name = f"s2v_fn_{self.function.logical_id}_{len(self._loaded)}"
            spec = importlib.util.spec_from_file_location(module_name, self.module_file)
            if spec is None or spec.loader is None:
                raise HandlerMissing(f"{self.function.logical_id}: cannot import {self.module_file}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            # The code directory is on sys.path as /var/task is on Lambda, for sibling modules.
            code_dir = str(self.module_file.parent)
            sys.path.insert(0, code_dir)
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            finally:
                sys.path.remove(code_dir)
            self._loaded.append(module_name)
        if not callable(getattr(module, self.function.handler_name, None)):
            raise HandlerMissing(f"{self.function.logical_id}: {self.module_file} has no callable "
                                 f"{self.function.handler_name!r} (Handler {self.function.handler})")
        return module

    def invoke(self, event: Any, *, source: str = "invoke", scheduled: bool = False) -> Any:
        with self._lock:
            module = self._idle.pop() if self._idle else None
        cold = module is None
        if module is None:
            module = self._cold_start()
        context = LambdaContext(
            function_name=self.name,
            invoked_function_arn=self.arn,
            memory_limit_in_mb=self.function.memory_size,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{self.name}",
            log_stream_name=f"local/{threading.current_thread().name}",
            deadline=time.monotonic() + self.function.timeout,
        )
        started = time.monotonic()
        outcome = "error"
        try:
            result = getattr(module, self.function.handler_name)(event, context)
            outcome = "ok"
            return result
        finally:
            elapsed = time.monotonic() - started
            with self._lock:
                self._idle.append(module)
                (self.scheduled_durations if scheduled else self.event_durations).append(elapsed)
            overtime = " — longer than its timeout on AWS" if elapsed > self.function.timeout else ""
            log.info("%s ← %s: %s in %d ms%s%s", self.function.logical_id, source, outcome,
                     elapsed * 1000, " (cold start)" if cold else "", overtime)

    def unload(self) -> None:
        for name in self._loaded:
            sys.modules.pop(name, None)
        self._idle.clear()
        self._loaded.clear()

