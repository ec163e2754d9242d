"""`bot ask --file`: answers a JSONL file of conversations with one model load, in input order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.errors import InputError, ServicebotError
from bot.service import Service, parse_messages, reply_json


def read_requests(path: Path) -> Iterator[tuple[int, Any, Any]]:
    """Yield (line number, id, messages or an error string) for each non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServicebotError(f"Cannot read requests file {path}: {exc}.") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, None, f"line {n}: not valid JSON ({exc.msg})"
            continue
        if not isinstance(obj, dict):
            yield n, None, f"line {n}: expected a JSON object"
            continue
        yield n, obj.get("id", n), obj.get("messages")


def answer_file(service: Service, path: Path) -> Iterator[dict[str, Any]]:
    """Answer each request line; a bad line yields an object with an `error` instead of stopping the batch."""
    limit = service.settings.server.max_message_chars
    for n, request_id, messages in read_requests(path):
        if isinstance(messages, str):
            yield {"id": request_id, "error": messages}
            continue
        try:
            parsed = parse_messages(messages, limit)
        except InputError as exc:
            yield {"id": request_id, "error": f"line {n}: {exc}"}
            continue
        yield reply_json(service.ask_messages(parsed), request_id)
