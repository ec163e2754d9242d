"""The adapter directory: `<data_dir>/adapters/<name>/` (PEFT files plus card.json), written crash-safely."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.responders import adapters as responder_adapters


def adapters_root(data_dir: Path) -> Path:
    """Where trained adapters are saved; the responder finds them there by name (`adapters.resolve`)."""
    root = responder_adapters.adapters_root(data_dir)
    assert root is not None
    return root


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
