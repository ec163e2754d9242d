"""The adapter directory: `<data_dir>/adapters/<name>/` (PEFT files plus card.json), and adapters we ship."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.errors import ServicebotError

PACKAGED = Path(__file__).with_name("adapters")  # adapters shipped with servicebot, usable by name


def adapters_root(data_dir: Path) -> Path:
    """Where trained adapters are saved and found by name."""
    return data_dir / "adapters"


def resolve_adapter(name_or_path: str, data_dir: Path) -> Path:
    """An adapter folder from a name (`<data_dir>/adapters/<name>`, then the packaged ones) or a path.

    Raises:
        ServicebotError: nothing by that name or path holds an adapter_config.json.
    """
    for candidate in (adapters_root(data_dir) / name_or_path, PACKAGED / name_or_path, Path(name_or_path)):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    known = sorted(p.parent.name for root in (adapters_root(data_dir), PACKAGED) for p in root.glob("*/card.json"))
    raise ServicebotError(
        f"No adapter named or at '{name_or_path}'" + (f"; known adapters: {', '.join(known)}." if known else ".")
    )


def save_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a temporary folder, then put it in place of `target` in one rename.

    A crash at any moment leaves either the old folder or the new one, never a half-written adapter.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    old = target.with_name(f".{target.name}-old")
    try:
        write(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_adapter(model: Any, card: dict[str, Any], target: Path) -> Path:
    """Save a PEFT model's adapter and its card (created now) into `target`."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        stamped = {**card, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        (folder / "card.json").write_text(json.dumps(stamped, indent=2, default=str) + "\n", encoding="utf-8")

    return save_atomically(target, write)
