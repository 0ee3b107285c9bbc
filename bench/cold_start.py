"""Figure 4: each handler's import time in a fresh interpreter, against a handler importing only boto3.

The layer's code is measured as layers/common/Makefile ships it: with unchecked-hash bytecode,
because Lambda cannot write .pyc files to /opt (dependencies come from the venv, compiled by pip).
"""

from __future__ import annotations

import compileall
import py_compile
import shutil
import tempfile
from pathlib import Path

from bench.common import ROOT, median, run_child

IMPORT = """
import os, sys, time, importlib.util
sys.path[:0] = [{layer!r}]
os.environ.update({{"S2V_BUCKET": "b", "S2V_JOBS_TABLE": "t", "AWS_DEFAULT_REGION": "us-east-1",
                   "LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true",
                   "POWERTOOLS_SERVICE_NAME": "s2v"}})
start = time.perf_counter()
if {path!r}:
    spec = importlib.util.spec_from_file_location("handler", {path!r})
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
else:
    import boto3  # noqa: F401
print(time.perf_counter() - start)
"""


def built_layer(target: Path) -> Path:
    site = target / "python"
    shutil.copytree(ROOT / "layers" / "common" / "s2v", site / "s2v", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(str(site), quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return site


def run(runs: int) -> None:
    print(f"\n4. Cold start: import time of each handler in a fresh interpreter (median of {runs}) vs boto3 only")
    with tempfile.TemporaryDirectory(prefix="s2v-bench-layer-") as tmp:
        layer = built_layer(Path(tmp))

        def timed(path: str) -> float:
            return median([run_child(IMPORT.format(layer=str(layer), path=path))[0] for _ in range(runs)])

        baseline = timed("")
        print(f"   {'boto3 only':<10} {baseline * 1000:7.1f} ms")
        for name in ("ingest", "webhook", "poll", "deliver"):
            seconds = timed(str(ROOT / "functions" / name / "app.py"))
            print(f"   {name:<10} {seconds * 1000:7.1f} ms  ratio {seconds / baseline:.2f}  (target <= 1.5)")
