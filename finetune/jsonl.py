"""Reads JSONL training files: malformed lines are reported by number and skipped, or fail the run (strict)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.errors import ServicebotError

Check = Callable[[dict[str, Any]], str | None]  # returns what is wrong with a row, or None


def read_jsonl(
    path: Path, check: Check | None = None, strict: bool = False, problems: list[str] | None = None
) -> list[dict[str, Any]]:
    """Rows of a JSONL file; each bad line is appended to `problems` as "FILE line N: why".

    Raises:
        ServicebotError: the file cannot be read, or (strict) a line is malformed.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServicebotError(f"{path} cannot be read ({type(exc).__name__}).") from None
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            why = "not a JSON object" if not isinstance(row, dict) else (check(row) if check else None)
        except json.JSONDecodeError as exc:
            why = f"invalid JSON ({exc.msg})"
        if why:
            message = f"{path} line {n}: {why}"
            if strict:
                raise ServicebotError(f"{message} (--strict stops at the first malformed line).")
            if problems is not None:
                problems.append(message)
            continue
        rows.append(row)
    return rows
