"""Each public package exports exactly what it defines, as httpx's ``test_exported_members``.

A package's public names are the names its ``__init__`` binds that do not start with ``_``,
leaving out the submodules Python binds as it imports them and the helpers the module imports
for its own use from elsewhere (``typing.Any``, ``from __future__ import annotations``, an
error class of another package). Every public name must be in ``__all__`` (nothing exported by
accident or forgotten) and every name in ``__all__`` must exist (``from pkg import *`` works).
"""

from __future__ import annotations
import __future__

import importlib
import sys
import types

import pytest

PACKAGES = ("copilot", "copilot_jupyter", "copilot.testing", "copilot.providers")
#: private by its name, public by convention (httpx exports it too)
INCLUDED_PRIVATE = ("__version__",)


def _defined_in(value: object, package: str) -> bool:
    """Whether ``value`` is the package's own: defined in its tree, or a plain constant."""
    if isinstance(value, types.ModuleType | __future__._Feature):
        return False
    module = getattr(value, "__module__", None)
    if isinstance(value, type) or callable(value):
        return isinstance(module, str) and (module == package or module.startswith(package + "."))
    return True  # a constant the package binds itself (a table, a default)


def public_names(package: str) -> set[str]:
    """The names ``package`` defines and does not mark private."""
    module = importlib.import_module(package)
    return {
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE) and _defined_in(value, package)
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert len(exported) == len(set(exported)), "a name is listed twice in __all__"
    assert set(exported) == public_names(package)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_exists_and_star_import_gives_exactly_them(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(module.__all__)


def test_the_rule_sees_a_forgotten_name_and_ignores_imported_helpers() -> None:
    """The check itself: a class defined in the package counts, typing helpers do not."""
    fake = types.ModuleType("copilot_fake")
    exec(
        "from __future__ import annotations\n"
        "from typing import Any\n"
        "import json\n"
        "from copilot.errors import ConfigError\n"
        "LIMIT = 3\n"
        "class Forgotten: pass\n"
        "def helper(x: Any) -> Any: return x\n"
        "def _private(): pass\n",
        fake.__dict__,
    )
    sys.modules["copilot_fake"] = fake
    try:
        assert public_names("copilot_fake") == {"LIMIT", "Forgotten", "helper"}
    finally:
        del sys.modules["copilot_fake"]


def test_the_version_is_exported() -> None:
    import copilot

    assert "__version__" in copilot.__all__
    assert isinstance(copilot.__version__, str) and copilot.__version__.count(".") == 2
