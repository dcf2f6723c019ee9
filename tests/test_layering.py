"""What may import what (docs/architecture.md), read from the source's import statements.

- `models/` (the model library) knows no gRPC and no asyncio; from `shared/` it may use only
  modules that know neither (audio I/O, limits, config);
- `shared/` (the torch-free runtime) imports no torch, transformers or model code;
- a service imports no other service's package;
- nothing that ships in an image (models, shared, services) imports tools, tests, bench or deploy.

That the gateway, registry and web images really start without torch is checked by
tests/deploy/test_images.py, which imports each image's code with torch blocked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("models", "shared", "services")
DEV_ONLY = {"tools", "tests", "bench", "deploy"}
NO_RUNTIME_IN_MODELS = {"grpc", "grpc_status", "grpc_health", "asyncio", "services"}
NO_MODELS_IN_SHARED = {"torch", "transformers", "models", "services"}


def imported_modules(path: Path) -> set[str]:
    """The absolute module names `path` imports, wherever in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def top(name: str) -> str:
    return name.split(".")[0]


def violations(paths: list[Path], forbidden) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in sorted(imported_modules(path))
        if forbidden(path, name)
    ]


def test_the_rules_see_imports():
    # The reader must find what this very file imports, or every rule below would pass vacuously.
    assert {"ast", "pathlib", "pathlib.Path", "pytest"} <= imported_modules(Path(__file__))
    assert violations([Path(__file__)], lambda path, name: top(name) == "pytest")


def test_models_know_no_grpc_or_asyncio():
    def forbidden(path, name):
        if top(name) in NO_RUNTIME_IN_MODELS:
            return True
        if top(name) == "shared" and (used := module_path(name)) is not None:
            return any(top(inner) in NO_RUNTIME_IN_MODELS for inner in imported_modules(used))
        return False

    assert violations(sources("models"), forbidden) == []


def test_shared_imports_no_torch_or_model_code():
    assert violations(sources("shared"), lambda path, name: top(name) in NO_MODELS_IN_SHARED) == []


@pytest.mark.parametrize(
    "service", sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").is_file())
)
def test_a_service_imports_no_other_service(service):
    def forbidden(path, name):
        parts = name.split(".")
        return parts[0] == "services" and len(parts) > 1 and parts[1] != service

    assert violations(sources(f"services/{service}"), forbidden) == []


def test_shipped_code_imports_no_development_tree():
    paths = [path for package in SHIPPED for path in sources(package)]
    assert violations(paths, lambda path, name: top(name) in DEV_ONLY) == []
