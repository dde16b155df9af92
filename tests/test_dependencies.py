"""The architecture's one-way dependencies: search_app -> indexer; embedder -> config; indexer never torch."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "config": {"embedder", "indexer", "search_app", "torch", "torchvision", "flask", "faiss"},
    "embedder": {"indexer", "search_app", "flask"},
    "indexer": {"embedder", "search_app", "torch", "torchvision", "flask"},
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package):
    files = [ROOT / "config.py"] if package == "config" else sorted((ROOT / package).rglob("*.py"))
    assert files, package
    for path in files:
        wrong = imported_modules(path) & FORBIDDEN[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
