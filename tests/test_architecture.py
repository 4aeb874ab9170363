"""The house's arrows, checked on the source: which room may import which (docs/architecture.md, "Rooms").

A static check (no import runs), so it costs milliseconds and names the file and line of an arrow that must not
exist. Imports inside functions count too: a lazy import of a forbidden room is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# room -> top-level packages (ours and heavy third-party ones) it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "nas": ("pipelines", "serving", "monitoring", "mlflow", "prefect", "fastapi"),
    "monitoring": ("pipelines", "serving", "nas", "torch", "prefect"),
    "monitoring/core": ("pipelines", "serving", "nas", "torch", "prefect", "mlflow", "sklearn", "pandas"),
    "serving": ("pipelines", "prefect"),
}

# file -> packages it may import although its room may not, and why
EXCEPTIONS: dict[str, tuple[str, ...]] = {
    # the served raw-table model IS an MLflow pyfunc PythonModel: a fresh process that can import nas loads it
    "nas/table_model.py": ("mlflow",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(room: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file:line imports module`` for every import of a forbidden package under ``room``."""
    bad = []
    for path in sorted((ROOT / room).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in forbidden and top not in EXCEPTIONS.get(str(path.relative_to(ROOT)), ()):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_only_what_the_house_allows(room):
    assert violations(room, FORBIDDEN[room]) == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a file under a room that imports a forbidden package is reported with its line."""
    room = tmp_path / "monitoring"
    room.mkdir()
    (room / "bad.py").write_text("import os\n\ndef f():\n    from pipelines.errors import UserError\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert violations("monitoring", ("pipelines",)) == ["monitoring/bad.py:4 imports pipelines.errors"]
