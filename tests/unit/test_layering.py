"""The core's layers import one way: flows over adapters over the model (README, "How it works")."""

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers/common/s2v"
# What each layer may import from the package besides itself.
ALLOWED = {
    "model": {"model"},
    "adapters": {"model", "adapters", "config"},
    "flows": {"model", "adapters", "flows", "config", "deps", "tracing"},
}


def _imported_layers(source: Path) -> set[str]:
    layers: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "s2v" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_the_layers_below_it(layer: str) -> None:
    # Given every module of one layer
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, f"no modules under s2v/{layer}"
    # When their imports of the s2v package are read
    offending = {str(m.relative_to(PACKAGE)): sorted(_imported_layers(m) - ALLOWED[layer]) for m in modules}
    # Then none reaches up a layer
    assert {m: bad for m, bad in offending.items() if bad} == {}


LOCAL = Path(__file__).resolve().parents[2] / "local/s2v_local"


def _module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root`` → the package's modules it imports, wherever the
    import is written (top level, inside a function, under ``if TYPE_CHECKING:``)."""
    package = root.name
    modules = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from pkg import sub" imports the submodule sub when there is one
                edges |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {e for e in edges if e in modules and e != name and e.split(".")[0] == package}
    return graph


def test_the_local_stack_has_no_import_cycle() -> None:
    # Given every import in s2v_local, inside functions and annotation-only ones included
    graph = import_graph(LOCAL)
    assert "s2v_local.triggers.sqs" in graph["s2v_local.stack"]
    # When the modules are ordered so that each comes after what it imports
    # Then there is such an order (a cycle would make graphlib name it)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle in s2v_local: {' -> '.join(cycle.args[1])}")
