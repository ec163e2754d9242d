"""SQLite records kept beside the index: the human-handoff queue and the audit log of operator changes."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS handoffs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    session_id TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    transcript TEXT NOT NULL,
    verdicts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Records:
    """A small SQLite store (WAL mode, one short connection per operation, safe across threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def add_handoff(
        self,
        session_id: str,
        turn_id: str,
        reason: str,
        transcript: list[dict[str, str]],
        verdicts: list[dict[str, Any]],
    ) -> int:
        """Queue a conversation for a human, with its (redacted) transcript and the verdicts that sent it."""
        with self._lock, self._connect() as db:
            cur = db.execute(
                "INSERT INTO handoffs (created, session_id, turn_id, reason, transcript, verdicts) "
                "VALUES (?,?,?,?,?,?)",
                (
                    _now(),
                    session_id,
                    turn_id,
                    reason,
                    json.dumps(transcript, ensure_ascii=False),
                    json.dumps(verdicts, ensure_ascii=False),
                ),
            )
            return int(cur.lastrowid or 0)

    def handoffs(self, status: str | None = "open") -> list[dict[str, Any]]:
        """Queued handoffs, oldest first."""
        query = "SELECT * FROM handoffs" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        with self._connect() as db:
            rows = db.execute(query, (status,) if status else ()).fetchall()
        return [
            {**dict(r), "transcript": json.loads(r["transcript"]), "verdicts": json.loads(r["verdicts"])} for r in rows
        ]

    def audit(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        """Record an operator-visible change."""
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?,?,?,?)",
                (_now(), actor, action, json.dumps(detail, ensure_ascii=False, default=str)),
            )

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit entries first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]
