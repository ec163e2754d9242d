"""One SQL database behind the records: SQLite (WAL) by default, or PostgreSQL for several instances."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.errors import ConfigError

# Written once for both engines: `{id}` is the auto-increment key, `?` the parameter mark.
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS handoffs (
        id {id}, created TEXT NOT NULL, session_id TEXT NOT NULL, turn_id TEXT NOT NULL, reason TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open', transcript TEXT NOT NULL, verdicts TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit (
        id {id}, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY, created TEXT NOT NULL, updated TEXT NOT NULL, channel TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'bot', title TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS messages (
        id {id}, conversation_id TEXT NOT NULL, at TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
        turn_id TEXT NOT NULL DEFAULT '', author TEXT NOT NULL DEFAULT '', refused INTEGER NOT NULL DEFAULT 0,
        handoff INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '', sources TEXT NOT NULL DEFAULT '[]',
        verdicts TEXT NOT NULL DEFAULT '[]', latency TEXT NOT NULL DEFAULT '{{}}')""",
    "CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id)",
    "CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations (updated)",
    """CREATE TABLE IF NOT EXISTS feedback (
        id {id}, at TEXT NOT NULL, conversation_id TEXT NOT NULL, message_id INTEGER NOT NULL,
        rating INTEGER NOT NULL, comment TEXT NOT NULL DEFAULT '')""",
]
# Columns added after the first release; added to older databases on open.
ADDED_COLUMNS = {"handoffs": [("claimed_by", "TEXT NOT NULL DEFAULT ''"), ("updated", "TEXT NOT NULL DEFAULT ''")]}


class Database:
    """A thread-safe handle: short SQLite connections, or a small pool of PostgreSQL connections.

    Args:
        url: a SQLite file path (or `sqlite:///path`) or a `postgresql://` URL.
    """

    def __init__(self, url: str | Path) -> None:
        text = str(url)
        self.postgres = text.startswith(("postgresql://", "postgres://"))
        self.url = text
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        if not self.postgres:
            self.path = Path(text.removeprefix("sqlite:///"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create()

    def _create(self) -> None:
        key = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        if not self.postgres:  # WAL is a property of the file, set once outside any transaction
            with contextlib.closing(sqlite3.connect(self.path, timeout=15)) as db:
                db.execute("PRAGMA journal_mode=WAL")
        with self.connect() as db:
            if self.postgres:  # several instances may start at once: one creates, the others wait
                db.execute("SELECT pg_advisory_xact_lock(72657)")
            for statement in SCHEMA:
                db.execute(statement.format(id=key))
            for table, columns in ADDED_COLUMNS.items():
                have = self._columns(db, table)
                for name, kind in columns:
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def _columns(self, db: Any, table: str) -> set[str]:
        if self.postgres:
            rows = db.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = current_schema()",
                (table,),
            ).fetchall()
            return {r[0] for r in rows}
        return {r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall()}

    @contextmanager
    def connect(self, write: bool = True) -> Iterator[Any]:
        """A connection inside one transaction (committed on success, rolled back on error)."""
        if self.postgres:
            with self._pg() as db:
                yield db
            return
        db = sqlite3.connect(self.path, timeout=15, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # WAL stays crash-safe; commits skip the fsync
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")  # writers queue up front, never deadlock
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()

    @contextmanager
    def _pg(self) -> Iterator[Any]:
        try:
            import psycopg
        except ImportError:
            raise ConfigError("A PostgreSQL database_url needs psycopg: pip install 'servicebot[postgres]'.") from None
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(self.url)
            except psycopg.Error as exc:
                raise ConfigError(f"Cannot connect to the PostgreSQL database: {str(exc).strip()}.") from None
        try:
            with conn.transaction():
                yield conn
        except BaseException:
            conn.close()
            raise
        with self._lock:
            if len(self._idle) < 8:
                self._idle.append(conn)
                return
        conn.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts."""
        with self.connect(write=False) as db:
            return self._rows(db.execute(self._sql(sql), tuple(params)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self.connect() as db:
            return int(db.execute(self._sql(sql), tuple(params)).rowcount)

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one INSERT into a table with an `id` key; returns the new id."""
        with self.connect() as db:
            return self.insert_in(db, sql, params)

    def insert_in(self, db: Any, sql: str, params: Sequence[Any] = ()) -> int:
        """`insert` inside an open transaction from `connect`."""
        if self.postgres:
            return int(db.execute(self._sql(sql) + " RETURNING id", tuple(params)).fetchone()[0])
        return int(db.execute(sql, tuple(params)).lastrowid or 0)

    def execute_in(self, db: Any, sql: str, params: Sequence[Any] = ()) -> int:
        """`execute` inside an open transaction from `connect`."""
        return int(db.execute(self._sql(sql), tuple(params)).rowcount)

    def query_in(self, db: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """`query` inside an open transaction from `connect`."""
        return self._rows(db.execute(self._sql(sql), tuple(params)))

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s").replace(" LIKE ", " ILIKE ") if self.postgres else sql

    @staticmethod
    def _rows(cursor: Any) -> list[dict[str, Any]]:
        if cursor.description is None:
            return []
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        """Close pooled connections (SQLite keeps none open)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
