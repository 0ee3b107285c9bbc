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
# --- the module graph is one-way (issue: flows as a one-way graph) ---------------------------------

ROOT = PACKAGE.parents[2]
GRAPHS = {"s2v": PACKAGE, "s2v_local": ROOT / "local/s2v_local"}
# An import inside a function is only for a heavy dependency whose cold-start cost was measured.
# Each entry: (importing module, imported module) -> why. Everything else is imported at the top.


def _dotted(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST, own: str, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import run at some point (annotation-only
    imports under ``if TYPE_CHECKING`` aside), resolved to the package's own modules."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(own.split(".")[: -node.level] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                targets = [a.name for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != own:
                    found.append((target, node.lineno, in_function))
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def _graph(package: str) -> dict[str, list[tuple[str, int, bool]]]:
    root = GRAPHS[package]
    paths = {_dotted(package, root, p): p for p in root.rglob("*.py")}
    modules = set(paths)
    return {name: _runtime_imports(ast.parse(path.read_text()), name, modules) for name, path in paths.items()}


def _cycle(graph: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    """One import cycle (as a path of modules), or [] when the graph is one-way."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(module: str) -> list[str]:
        state[module] = 1
        stack.append(module)
        for target, _, _ in graph.get(module, []):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state and (found := walk(target)):
                return found
        stack.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (found := walk(module)):
            return found
    return []


@pytest.mark.parametrize("package", sorted(GRAPHS))
def test_no_import_cycle_counting_imports_inside_functions(package: str) -> None:
    # Given every import a module of the package runs, at its top or inside a function
    graph = _graph(package)
    # Then following them never leads back to where it started
    assert _cycle(graph) == []


# Imports inside functions that are deliberate: a heavy dependency kept off the cold start of the
# functions that never use it (python -X importtime on this machine; bench figure 4 for the handlers).
LAZY_OK = {
    "s2v.adapters.ffmpeg",  # 117 ms: only the long-form function's steps run ffmpeg
    "s2v.adapters.delivery",  # 86 ms (requests, urllib3, s3transfer): only the deliver function copies videos
    "s2v.adapters.providers.wavespeed",  # 200 ms with requests: built on first use of deps.provider
}


def test_imports_inside_functions_are_only_for_measured_heavy_dependencies() -> None:
    graph = _graph("s2v")
    lazy = sorted(f"{module}:{line} imports {target}" for module, imports in graph.items()
                  for target, line, in_function in imports if in_function and target not in LAZY_OK)
    assert lazy == []


def test_no_module_imports_another_modules_private_name() -> None:
    offenders = []
    for package, root in GRAPHS.items():
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package):
                    offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                                  if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []
