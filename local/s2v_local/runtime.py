"""The local Lambda runtime: a template function's handler module, loaded into warm "containers"."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from importlib.machinery import ModuleSpec, PathFinder
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


_import_lock = threading.Lock()  # one cold start at a time, as before: handler imports run in order
_module_numbers = itertools.count()


class _CodeFolders(importlib.abc.MetaPathFinder):
    """The modules beside each loaded handler, importable by their own names.

    Lambda puts a function's code folder (/var/task) on sys.path, so a handler imports the modules
    beside it as ``import util``. Locally every function shares one interpreter, whose sys.path
    every thread reads: putting a folder on it for a cold start and taking it off again made an
    import walking sys.path in another thread at that moment skip an entry, a ModuleNotFoundError
    for an installed package. This finder is put on sys.meta_path once, never taken off, and
    resolves the top-level names found in the code folders of loaded functions; sys.path is never
    touched. It comes before the path finder, as /var/task comes first on sys.path.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, tuple[Path, dict[int, str]]] = {}  # name → (folder, users: id → function)
        self._installed = False

    def add(self, user: int, function: str, folder: Path, names: set[str]) -> None:
        with self._lock:
            taken = sorted(f"{name} (in {folder} and in {other}, {', '.join(users.values())}'s)"
                           for name in names if name in self._names
                           for other, users in [self._names[name]] if other != folder)
            if taken:
                # One interpreter holds one module per name: the second would silently get the first's.
                raise HandlerMissing(f"{function}: modules of another function's code folder have the same "
                                     f"names locally: {'; '.join(taken)}; rename one of them")
            for name in names:
                self._names.setdefault(name, (folder, {}))[1][user] = function
            if not self._installed:
                finders = sys.meta_path
                at = finders.index(PathFinder) if PathFinder in finders else len(finders)
                finders.insert(at, self)  # an insert only makes a concurrent walk see an entry twice
                self._installed = True

    def remove(self, user: int, names: set[str]) -> list[str]:
        """Forget ``user``'s names; those no function uses any more, returned."""
        dropped = []
        with self._lock:
            for name in names:
                entry = self._names.get(name)
                if entry is None:
                    continue
                entry[1].pop(user, None)
                if not entry[1]:
                    del self._names[name]
                    dropped.append(name)
        return dropped

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if path is not None:  # a submodule: its package's __path__ leads to it
            return None
        entry = self._names.get(fullname)
        return PathFinder.find_spec(fullname, [str(entry[0])]) if entry else None


_code_folders = _CodeFolders()


def _module_names(folder: Path) -> set[str]:
    """Top-level names of the modules and packages in ``folder``. Folders without an __init__.py
    (namespace packages on sys.path) are left out: here their names would be resolved for every
    import in the process, and a data folder could hide an installed package of the same name."""
    suffixes = tuple(importlib.machinery.all_suffixes())
    names = set()
    for entry in folder.iterdir():
        if entry.is_dir():
            if entry.name.isidentifier() and (entry / "__init__.py").is_file():
                names.add(entry.name)
        elif entry.name.endswith(suffixes) and (name := entry.name.split(".", 1)[0]).isidentifier():
            names.add(name)
    return names


def _inside(module: ModuleType, folder: Path) -> bool:
    spec = getattr(module, "__spec__", None)
    places = [spec.origin] if spec is not None and spec.origin else []
    places += list(getattr(spec, "submodule_search_locations", None) or [])
    return any(Path(place).is_relative_to(folder) for place in places)


class FunctionRuntime:
    """One template function and its warm "containers" (module instances).

    Like Lambda, a container serves one invocation at a time and a new one cold-starts when all
    are busy, so module-level state in a handler (a Powertools BatchProcessor, say) is never
    shared by concurrent invocations. Each container's handler module has a name of its own; the
    modules beside it are shared by its containers, as one interpreter holds one module per name.
    """

    def __init__(self, function: Function, root: Path, *, name: str, arn: str) -> None:
        self.function = function
        self.name = name
        self.arn = arn
        self.module_file = root / function.module_path
        self.code_folder = root / function.code_uri  # /var/task on Lambda
        self._idle: list[ModuleType] = []
        self._loaded: list[str] = []
        self._siblings: set[str] | None = None  # names registered with _code_folders
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
        module = self._cold_start()
        with self._lock:
            self._idle.append(module)

    def _cold_start(self) -> ModuleType:
        with _import_lock:
            if self._siblings is None:
                names = _module_names(self.code_folder)
                if "." not in self.function.handler.rsplit(".", 1)[0]:
                    names.discard(self.module_file.stem)  # the handler is loaded under a name of its own
                _code_folders.add(id(self), self.function.logical_id, self.code_folder.resolve(), names)
                self._siblings = names
            module_name = f"s2v_fn_{self.function.logical_id}_{next(_module_numbers)}"
            spec = importlib.util.spec_from_file_location(module_name, self.module_file)
            if spec is None or spec.loader is None:
                raise HandlerMissing(f"{self.function.logical_id}: cannot import {self.module_file}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
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
        if self._siblings is not None:
            folder = self.code_folder.resolve()
            for name in _code_folders.remove(id(self), self._siblings):
                for loaded in [m for m in list(sys.modules) if m == name or m.startswith(name + ".")]:
                    module = sys.modules.get(loaded)
                    if module is not None and _inside(module, folder):
                        sys.modules.pop(loaded, None)
            self._siblings = None
