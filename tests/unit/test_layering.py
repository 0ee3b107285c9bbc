"""The core's layers import one way: flows over adapters over the model (README, "How it works")."""

import ast
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
