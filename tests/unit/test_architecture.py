"""The layering of ARCHITECTURE.md, checked on the imports of every module."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _modules(package: str) -> dict[Path, set[str]]:
    return {p: _imports(p) for p in (SERVICE / package).rglob("*.py")}


def test_domain_imports_nothing_of_ours() -> None:
    for path, imports in _modules("domain").items():
        assert not {i for i in imports if i.startswith("service.") and not i.startswith("service.domain")}, path


def test_fhir_and_rules_never_import_each_other() -> None:
    for path, imports in _modules("fhir").items():
        assert not [i for i in imports if i.startswith("service.rules")], path
    for path, imports in _modules("rules").items():
        assert not [i for i in imports if i.startswith("service.fhir")], path


def test_only_the_engine_module_imports_durable_rules() -> None:
    users = {
        p.relative_to(SERVICE).as_posix() for p, i in _modules("").items() if any(x.startswith("durable") for x in i)
    }
    assert users == {"rules/engine.py"}


def test_only_api_imports_fastapi() -> None:
    users = {
        p.relative_to(SERVICE).parts[0]
        for p, i in _modules("").items()
        if any(x.startswith(("fastapi", "starlette")) for x in i)
    }
    assert users == {"api"}
