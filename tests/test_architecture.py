"""Layering and registration: bot imports no other package; built-ins register through entry points."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bot.registry import installed, plugin_class

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "bot").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_plugin_knowledge_or_finetune_module(path: Path) -> None:
    assert not imported_packages(path) & {"plugins", "knowledge", "finetune"}


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(ROOT))
        for pkg in ("bot", "plugins", "knowledge", "finetune")
        for p in (ROOT / pkg).rglob("*.py")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("guard", "max_length"),
        ("guard", "instruction_override"),
        ("responder", "hf"),
        ("responder", "extractive"),
        ("retriever", "chroma"),
        ("embedder", "minilm"),
    ],
)
def test_builtins_are_registered_as_entry_points_with_strict_config(kind: str, name: str) -> None:
    assert name in installed(kind)
    config = plugin_class(kind, name).Config
    assert config.model_config.get("extra") == "forbid"
