"""Imports run downward only (docs/architecture.md): a room imports only rooms below it.

commands → tools/operations/local/monitor → runtime → stages → tasks → models
→ messages/records/settings/errors and the other data modules. Every import
counts, the ones inside functions too: a lazy import up the floors is still
an import up the floors.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "pipeline"

# The floor of each room; a module may import its own floor and those below.
FLOORS: dict[str, int] = {
    "cli": 6, "commands": 6,
    "tools": 5, "operations": 5, "local": 5, "monitor": 5, "client": 5,
    "runtime": 4,
    "stages": 3,
    "tasks": 2,
    "models": 1,
    "messages": 0, "records": 0, "settings": 0, "settings_env": 0, "settings_sections": 0, "errors": 0, "catalog": 0,
    "flow": 0, "topics": 0, "telemetry": 0, "security": 0, "__init__": 0,
}  # fmt: skip


def room(module: str) -> str:
    """``pipeline.runtime.runner`` → ``runtime``; ``pipeline`` itself → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    """Every ``pipeline...`` module ``path`` imports, with its line, wherever the import is."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":  # from pipeline import stages
                found += [(node.lineno, f"pipeline.{a.name}") for a in node.names]
            elif node.module.startswith("pipeline."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pipeline.")]
    return found


def upward_imports() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
        floor = FLOORS[room(module)]
        for line, target in imports(path):
            if FLOORS[room(target)] > floor:
                wrong.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports {target}")
    return wrong


def test_every_room_has_a_floor() -> None:
    rooms = {room(".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(FLOORS), f"give {sorted(rooms - set(FLOORS))} a floor here and in docs/architecture.md"


def test_imports_run_downward_only() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline.runtime.runner import StageRunner\n")
    assert imports(module) == [(2, "pipeline.runtime.runner")]


def missing_modules() -> list[str]:
    """Imports of ``pipeline`` modules that do not exist (a path left behind by a move; mypy does not see them)."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, target in imports(path):
            where = PROJECT_ROOT.joinpath(*target.split("."))
            if where.with_suffix(".py").is_file() or (where / "__init__.py").is_file():
                continue
            if _defines(where.parent, where.name):  # from pipeline import __version__
                continue
            missing.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports {target}")
    return missing


def _defines(module: Path, name: str) -> bool:
    """Whether module ``module`` (a path without suffix) binds ``name`` at its top level."""
    source = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
    if not source.is_file():
        return False
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (a.asname or a.name.split(".")[0]) == name for a in node.names
        ):
            return True
    return False


def test_every_import_of_the_package_names_a_module_that_exists() -> None:
    assert missing_modules() == []
