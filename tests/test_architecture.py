"""The module map in docs/architecture.md holds: the pure core does no I/O and imports no edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cds_hooks"

# The pure core, and what it may import from the package (itself and the data layer).
CORE = [
    "record.py",
    "engine.py",
    "cards.py",
    "suggestions.py",
    "terminology.py",
    "fhir/read.py",
    "fhir/status.py",
    "knowledge/__init__.py",
    *(f"services/{p.name}" for p in sorted((PACKAGE / "services").glob("*.py"))),
    *(f"clinical/{p.name}" for p in sorted((PACKAGE / "clinical").glob("*.py"))),
    *(f"rules/{p.name}" for p in sorted((PACKAGE / "rules").glob("*.py"))),
]
CORE_MODULES = {
    "cds_hooks." + path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    for path in CORE
}
# Packages whose __init__ is only a docstring, and the data layer.
ALSO_ALLOWED = {
    "cds_hooks",
    "cds_hooks.fhir",
    "cds_hooks.clinical",
    "cds_hooks.errors",
    "cds_hooks.config",
}
# Libraries that do I/O (or read the clock for you): never in the core.
FORBIDDEN = {"flask", "requests", "sqlalchemy", "socket", "urllib3", "jwt", "http", "time"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from cds_hooks import suggestions` imports the module cds_hooks.suggestions
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", CORE)
def test_the_pure_core_imports_no_io_and_no_edge(path):
    found = imports(PACKAGE / path)
    assert not {name.split(".")[0] for name in found} & FORBIDDEN, path
    ours = {name for name in found if name.startswith("cds_hooks")}
    package_modules = {
        name
        for name in ours
        if (PACKAGE.parent / (name.replace(".", "/") + ".py")).exists()
        or (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
    }
    assert package_modules <= CORE_MODULES | ALSO_ALLOWED, (path, package_modules - CORE_MODULES)


@pytest.mark.parametrize("package", ["fhir", "clinical"])
def test_core_packages_run_nothing_on_import(package):
    assert imports(PACKAGE / package / "__init__.py") <= {"__future__"}


def test_the_rule_api_imports_no_rule():
    found = imports(PACKAGE / "rules" / "context.py")
    assert not [name for name in found if name.startswith("cds_hooks.rules")]


def test_every_rule_has_the_typed_signature():
    """evaluate(ctx: RuleContext) -> list[Finding]: rules/context.py is the rule API."""
    from cds_hooks.rules import RULES

    for rule in RULES:
        annotations = rule.evaluate.__annotations__
        assert annotations == {"ctx": "RuleContext", "return": "list[Finding]"}, rule.id
