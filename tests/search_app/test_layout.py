"""search_app reaches torch and the embedder only inside engine.py's functions (SearchEngine.from_artifacts)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "search_app"
HEAVY = {"torch", "torchvision", "embedder"}


def imported(nodes) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def is_type_checking_block(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda path: path.name)
def test_module_level_imports_stay_light(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = [node for node in tree.body if not is_type_checking_block(node)]
    assert not imported(module_level) & HEAVY, f"{path.name} imports {sorted(imported(module_level) & HEAVY)}"
    if path.name != "engine.py":
        assert not imported(ast.walk(tree)) & HEAVY, f"{path.name} should leave torch and embedder to engine.py"
