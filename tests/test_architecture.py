"""Imports only go downward: tui -> sinkchat -> models; the core never loads Textual."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"models": {"sinkchat", "tui", "textual"}, "sinkchat": {"tui", "textual"}}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downward(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        bad = imported_roots(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_core_import_loads_neither_textual_nor_llama_cpp_nor_the_http_stack() -> None:
    """The server's logic (matching, pool) needs no HTTP stack; only serve.app and serve.server load it."""
    code = (
        "import sys, sinkchat.chat, sinkchat.cli, sinkchat.plain, sinkchat.serve.pool, sinkchat.serve.matching\n"
        "bad = sorted(m for m in ('textual', 'tui', 'llama_cpp', 'starlette', 'uvicorn') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_every_package_is_in_the_wheel() -> None:
    """A package left out of ``[tool.setuptools] packages`` works in a checkout and is missing from the wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("sinkchat", "models", "tui")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"missing from pyproject.toml: {sorted(found - listed)}"
