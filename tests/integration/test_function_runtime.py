"""The local function runtime: cold starts load a handler and its sibling modules without touching
the interpreter's shared import path, so handlers running in other threads keep importing."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from s2v_local.runtime import FunctionRuntime, HandlerMissing
from s2v_local.template import Function

# Small installed modules nothing else imports: each is imported, dropped and imported again, so
# every import walks sys.path as a handler's first lazy `from PIL import Image` does.
LAZY_CANDIDATES = ("rfc3339_validator", "jsonpointer", "mypy_extensions")


def function(logical_id: str, code_uri: str, handler: str = "app.handler") -> Function:
    return Function(logical_id=logical_id, code_uri=code_uri, handler=handler, runtime="python3.11", timeout=30,
                    memory_size=128, environment={}, triggers=(), layers=())


def code_folder(root: Path, name: str, siblings: dict[str, str], app: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for module, source in siblings.items():
        path = folder / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    (folder / "app.py").write_text(app)


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    """Switch threads often, as a loaded machine does, so a race shows within a test's time."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_cold_starts_never_break_lazy_imports_of_installed_packages_in_other_threads(
    tmp_path: Path, fast_thread_switches: None,
) -> None:
    # Given a handler whose folder holds modules it imports, and threads importing an installed package,
    siblings = {f"helper_{i}": f"VALUE = {i}\n" for i in range(8)}
    # ...and whose cold start takes a moment, as building clients and settings does
    imports = "import time\n" + "".join(f"import helper_{i}\n" for i in range(8)) + "time.sleep(0.001)\n"
    code_folder(tmp_path, "fn", siblings, imports + "def handler(event, context):\n"
                "    return sum(m.VALUE for m in (" + ", ".join(f"helper_{i}" for i in range(8)) + "))\n")
    runtime = FunctionRuntime(function("Racer", "fn"), tmp_path, name="racer", arn="arn:racer")
    lazy = [name for name in LAZY_CANDIDATES if name not in sys.modules]
    assert lazy, f"none of {LAZY_CANDIDATES} is left to import"
    path_before = list(sys.path)
    failures: list[BaseException] = []
    stop = threading.Event()

    def import_lazily(name: str) -> None:  # one thread per module: only it drops that module
        while not stop.is_set():
            try:
                importlib.import_module(name)
            except Exception as error:
                failures.append(error)
            finally:
                sys.modules.pop(name, None)

    importers = [threading.Thread(target=import_lazily, args=(name,), daemon=True) for name in lazy]
    for thread in importers:
        thread.start()
    try:
        # When many cold starts run meanwhile
        for _ in range(1500):
            runtime.warm()
            if failures:
                break
    finally:
        stop.set()
        for thread in importers:
            thread.join(timeout=10)
        runtime.unload()

    # Then every lazy import found its package, and the import path is as it was
    assert failures == []
    assert sys.path == path_before


def test_a_handler_imports_its_sibling_modules_and_packages(tmp_path: Path) -> None:
    # Given a handler folder with a module and a package beside the handler
    code_folder(tmp_path, "fn", {"settings": "NAME = 'local'\n", "lib.__init__": "", "lib.text": "def shout(s):\n"
                                 "    return s.upper()\n"},
                "import settings\nfrom lib.text import shout\n\n"
                "def handler(event, context):\n    import lib\n    return shout(settings.NAME) + lib.__name__\n")
    runtime = FunctionRuntime(function("Sibling", "fn"), tmp_path, name="sibling", arn="arn:sibling")
    try:
        # When it is invoked, cold, then warm
        results = [runtime.invoke({}), runtime.invoke({})]
    finally:
        runtime.unload()
    # Then its imports resolved to its own folder
    assert results == ["LOCALlib", "LOCALlib"]
    assert "settings" not in sys.modules and "lib" not in sys.modules  # unload forgets them


def test_two_functions_with_same_named_sibling_modules_in_different_folders_are_refused(tmp_path: Path) -> None:
    # Given two functions whose folders both hold a util module
    for name in ("one", "two"):
        code_folder(tmp_path, name, {"util": f"WHO = {name!r}\n"},
                    "import util\n\ndef handler(event, context):\n    return util.WHO\n")
    first = FunctionRuntime(function("One", "one"), tmp_path, name="one", arn="arn:one")
    second = FunctionRuntime(function("Two", "two"), tmp_path, name="two", arn="arn:two")
    try:
        assert first.invoke({}) == "one"
        # When the second cold-starts, Then it is refused, naming the module and both folders
        # (one interpreter holds one module per name: it would silently get the first's util)
        with pytest.raises(HandlerMissing, match=r"util.*one.*two|util.*two.*one"):
            second.warm()
    finally:
        first.unload()
        second.unload()
