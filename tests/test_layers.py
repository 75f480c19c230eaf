"""The core's layering: imports run one way, faces -> cores -> store and providers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "copilot"


def _imported_modules(path: Path) -> set[str]:
    """Every copilot module ``path`` imports, as ``copilot.x`` names (TYPE_CHECKING too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = "copilot" + (f".{node.module}" if node.module else "")
                if node.module is None:
                    names.update(f"copilot.{alias.name}" for alias in node.names)
                else:
                    names.add(base)
            elif node.module and node.module.startswith("copilot"):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("copilot"))
    return names


@pytest.mark.parametrize(
    "module",
    ["session.py", "_services.py", "turn.py", "context.py", "history.py", "_loop.py"],
)
def test_the_session_core_never_imports_the_client(module):
    assert "copilot.client" not in _imported_modules(PACKAGE / module)


@pytest.mark.parametrize("module", ["store.py", "routing.py", "turn.py", "context.py"])
def test_lower_layers_import_no_face(module):
    imported = _imported_modules(PACKAGE / module)
    assert not imported & {"copilot.client", "copilot.session"}


def test_the_import_scan_sees_relative_and_absolute_imports(tmp_path):
    # the checker itself: a planted back-import, in every spelling, is seen
    planted = tmp_path / "m.py"
    for line in (
        "from .client import ClientCore",
        "from copilot.client import ClientCore",
        "import copilot.client",
        "from . import client",
        "if TYPE_CHECKING:\n    from .client import ClientCore",
    ):
        planted.write_text(line + "\n")
        assert "copilot.client" in _imported_modules(planted), line
