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


# Releases with published vulnerabilities that Lookbook's use reaches: libwebp in pillow < 10.3, multipart
# parsing in werkzeug < 3.0.6, request smuggling in gunicorn < 23 and waitress < 3.0.1, and torch.load's
# weights_only bypass in torch < 2.6.
VULNERABLE = {"pillow": "10.2.0", "werkzeug": "3.0.5", "gunicorn": "22.0.0", "waitress": "3.0.0", "torch": "2.5.1"}


def test_dependency_floors_leave_out_releases_with_known_vulnerabilities():
    import tomllib

    from packaging.requirements import Requirement

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {requirement.name.lower(): requirement for requirement in map(Requirement, declared)}
    for name, version in VULNERABLE.items():
        assert name in requirements, f"pyproject.toml should name {name} with a floor above {version}"
        assert not requirements[name].specifier.contains(version), f"{name} {version} is still allowed"
