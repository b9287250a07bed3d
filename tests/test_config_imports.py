"""``config/`` is the bottom layer: it imports only itself and the standard library, so that
policy/, portal/, outbound/ and inventory/ can all depend on it and nothing circles back."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import energyhubd.config

CONFIG_DIR = Path(energyhubd.config.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; use energyhubd.config.…"
            names.add(node.module or "")
    return names


def test_config_imports_only_config_and_stdlib() -> None:
    files = sorted(CONFIG_DIR.rglob("*.py"))
    assert len(files) >= 8
    outside = {
        f"{path.relative_to(CONFIG_DIR)}: {name}"
        for path in files
        for name in imported_modules(path)
        if not (
            name == "energyhubd.config"
            or name.startswith("energyhubd.config.")
            or name.split(".")[0] in sys.stdlib_module_names
        )
    }
    assert outside == set()
