"""Records kept beside the index: conversations and their turns, feedback, the handoff queue, the audit log."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.contracts import Reply
from bot.database import Database

JSON_FIELDS = ("transcript", "verdicts", "sources", "latency", "detail")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _load(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if k in JSON_FIELDS and isinstance(v, str) else v for k, v in row.items()}


def verdict_rows(reply: Reply) -> list[dict[str, Any]]:
    """The verdicts of a reply as plain dicts (what the consoles and the API show)."""
    return [
        {"plugin": v.plugin, "blocked": v.blocked, "score": v.score, "category": v.category, "reason": v.reason}
        for v in reply.verdicts
    ]


def redacted_question(reply: Reply, text: str) -> str:
    """The customer's newest message as it may be stored: with personal data removed when a guard redacted it."""
    return next((v.rewrite for v in reply.verdicts if v.rewrite is not None and v.category == "pii"), text)


TurnRow = tuple[str, str, str, Reply, list[Any]]  # conversation id, channel, question, reply, sources


class Records:
    """The store: SQLite in WAL mode by default, or PostgreSQL (several instances share one database).

    Args:
        url: a SQLite file path, or a `postgresql://` URL.
    """

    def __init__(self, url: str | Path) -> None:
        self.db = Database(url)

    # -- conversations -------------------------------------------------------------------------------------------

    def ensure_conversation(self, conversation_id: str, channel: str, title: str = "") -> dict[str, Any]:
        """The conversation with this id, created (for `channel`) if it does not exist yet."""
        with self.db.connect() as db:
            found = self.db.query_in(db, "SELECT * FROM conversations WHERE id = ?", (conversation_id,))
            if found:
                return found[0]
            now = _now()
            row = {"id": conversation_id, "created": now, "updated": now, "channel": channel, "status": "bot"}
            self.db.execute_in(
                db,
                "INSERT INTO conversations (id, created, updated, channel, status, title) VALUES (?,?,?,?,?,?)",
                (conversation_id, now, now, channel, "bot", title[:120]),
            )
            return {**row, "title": title[:120]}

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """One conversation's row, or None."""
        rows = self.db.query("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return rows[0] if rows else None

    def set_status(self, conversation_id: str, status: str) -> None:
        """Mark who answers the conversation now: 'bot', 'human' (waiting for or talking to a person), 'closed'."""
        self.db.execute(
            "UPDATE conversations SET status = ?, updated = ? WHERE id = ?", (status, _now(), conversation_id)
        )

    def add_turn(self, conversation_id: str, channel: str, question: str, reply: Reply, sources: list[Any]) -> int:
        """Store one answered turn: the customer's message (redacted) and the reply with its verdicts.

        Returns:
            The id of the stored answer (what feedback refers to).
        """
        return self.add_turns([(conversation_id, channel, question, reply, sources)])[0]

    def add_turns(self, turns: Sequence[TurnRow]) -> list[int]:
        """Store several turns (conversation id, channel, question, reply, sources) in one transaction: all or
        none. Returns the stored answers' ids."""
        with self.db.connect() as db:
            return [self._add_turn_in(db, *turn) for turn in turns]

    def _add_turn_in(
        self, db: Any, conversation_id: str, channel: str, question: str, reply: Reply, sources: list[Any]
    ) -> int:
        question = redacted_question(reply, question)
        now = _now()
        if not self.db.query_in(db, "SELECT id FROM conversations WHERE id = ?", (conversation_id,)):
            self.db.execute_in(
                db,
                "INSERT INTO conversations (id, created, updated, channel, status, title) VALUES (?,?,?,?,?,?)",
                (conversation_id, now, now, channel, "bot", question[:120]),
            )
        else:
            self.db.execute_in(db, "UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        insert = (
            "INSERT INTO messages (conversation_id, at, role, content, turn_id, refused, handoff, reason, "
            "sources, verdicts, latency) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        )
        self.db.insert_in(db, insert, (conversation_id, now, "user", question, "", 0, 0, "", "[]", "[]", "{}"))
        return self.db.insert_in(
            db,
            insert,
            (
                conversation_id,
                now,
                "assistant",
                reply.answer,
                "",
                int(reply.refused),
                int(reply.handoff),
                reply.reason,
                _dumps(sources),
                _dumps(verdict_rows(reply)),
                _dumps(dict(reply.latency_ms)),
            ),
        )

    def add_message(self, conversation_id: str, role: str, content: str, author: str = "") -> int:
        """Store one message outside the bot's turns: a person's reply ('human'), or a customer's ('user')."""
        now = _now()
        with self.db.connect() as db:
            self.db.execute_in(db, "UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            return self.db.insert_in(
                db,
                "INSERT INTO messages (conversation_id, at, role, content, author) VALUES (?,?,?,?,?)",
                (conversation_id, now, role, content, author),
            )

    def messages(self, conversation_id: str, after: int = 0) -> list[dict[str, Any]]:
        """A conversation's messages in order (those with an id above `after`), with sources and verdicts."""
        rows = self.db.query(
            "SELECT * FROM messages WHERE conversation_id = ? AND id > ? ORDER BY id", (conversation_id, after)
        )
        return [_load(r) for r in rows]

    def search(self, text: str = "", limit: int = 50) -> list[dict[str, Any]]:
        """Conversations whose messages contain `text` (case-insensitive), most recently active first."""
        if not text:
            return self.db.query("SELECT * FROM conversations ORDER BY updated DESC LIMIT ?", (limit,))
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self.db.query(
            "SELECT * FROM conversations WHERE id IN (SELECT conversation_id FROM messages "
            "WHERE content LIKE ? ESCAPE '\\') OR id = ? ORDER BY updated DESC LIMIT ?",
            (pattern, text, limit),
        )

    # -- feedback ------------------------------------------------------------------------------------------------

    def add_feedback(self, conversation_id: str, message_id: int, rating: int, comment: str = "") -> int:
        """Record a thumbs up (+1) or down (-1) on one answer; a later rating of the same answer replaces it."""
        with self.db.connect() as db:
            self.db.execute_in(
                db, "DELETE FROM feedback WHERE conversation_id = ? AND message_id = ?", (conversation_id, message_id)
            )
            return self.db.insert_in(
                db,
                "INSERT INTO feedback (at, conversation_id, message_id, rating, comment) VALUES (?,?,?,?,?)",
                (_now(), conversation_id, message_id, rating, comment),
            )

    def comment_feedback(self, conversation_id: str, comment: str) -> bool:
        """Attach a comment to the conversation's newest rating; False when there is none."""
        with self.db.connect() as db:
            rows = self.db.query_in(
                db, "SELECT id FROM feedback WHERE conversation_id = ? ORDER BY id DESC LIMIT 1", (conversation_id,)
            )
            if not rows:
                return False
            self.db.execute_in(db, "UPDATE feedback SET comment = ? WHERE id = ?", (comment, rows[0]["id"]))
            return True

    def feedback(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Ratings, newest first (of one conversation, or all)."""
        if conversation_id is None:
            return self.db.query("SELECT * FROM feedback ORDER BY id DESC LIMIT 500")
        return self.db.query("SELECT * FROM feedback WHERE conversation_id = ? ORDER BY id DESC", (conversation_id,))

    # -- handoffs ------------------------------------------------------------------------------------------------

    def add_handoff(
        self,
        session_id: str,
        turn_id: str,
        reason: str,
        transcript: list[dict[str, str]],
        verdicts: list[dict[str, Any]],
    ) -> int:
        """Queue a conversation for a human, with its (redacted) transcript and the verdicts that sent it.

        A conversation already waiting for a person keeps its one open entry (the newest reason is kept).
        """
        now = _now()
        with self.db.connect() as db:
            if session_id:
                self.db.execute_in(
                    db, "UPDATE conversations SET status = 'human', updated = ? WHERE id = ?", (now, session_id)
                )
                open_ = self.db.query_in(
                    db,
                    "SELECT id FROM handoffs WHERE session_id = ? AND status IN ('open', 'claimed')",
                    (session_id,),
                )
                if open_:
                    self.db.execute_in(
                        db,
                        "UPDATE handoffs SET reason = ?, transcript = ?, verdicts = ?, updated = ? WHERE id = ?",
                        (reason, _dumps(transcript), _dumps(verdicts), now, open_[0]["id"]),
                    )
                    return int(open_[0]["id"])
            return self.db.insert_in(
                db,
                "INSERT INTO handoffs (created, updated, session_id, turn_id, reason, transcript, verdicts) "
                "VALUES (?,?,?,?,?,?,?)",
                (now, now, session_id, turn_id, reason, _dumps(transcript), _dumps(verdicts)),
            )

    def handoffs(self, status: str | None = "open") -> list[dict[str, Any]]:
        """Queued handoffs, oldest first ('open', 'claimed', 'closed', or None for all)."""
        query = "SELECT * FROM handoffs" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        return [_load(r) for r in self.db.query(query, (status,) if status else ())]

    def handoff(self, handoff_id: int) -> dict[str, Any] | None:
        """One handoff, or None."""
        rows = self.db.query("SELECT * FROM handoffs WHERE id = ?", (handoff_id,))
        return _load(rows[0]) if rows else None

    def claim_handoff(self, handoff_id: int, who: str) -> bool:
        """Take an open handoff; False when someone else holds it or it is closed (first claim wins)."""
        return bool(
            self.db.execute(
                "UPDATE handoffs SET status = 'claimed', claimed_by = ?, updated = ? "
                "WHERE id = ? AND (status = 'open' OR (status = 'claimed' AND claimed_by = ?))",
                (who, _now(), handoff_id, who),
            )
        )

    def close_handoff(self, handoff_id: int) -> bool:
        """Close a handoff; its conversation goes back to the bot. False when it was already closed."""
        now = _now()
        with self.db.connect() as db:
            rows = self.db.query_in(
                db, "SELECT session_id FROM handoffs WHERE id = ? AND status <> 'closed'", (handoff_id,)
            )
            if not rows:
                return False
            self.db.execute_in(db, "UPDATE handoffs SET status = 'closed', updated = ? WHERE id = ?", (now, handoff_id))
            self.db.execute_in(
                db, "UPDATE conversations SET status = 'bot', updated = ? WHERE id = ?", (now, rows[0]["session_id"])
            )
            return True

    # -- audit ---------------------------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, detail: dict[str, Any]) -> int:
        """Record an operator-visible change."""
        return self.db.insert(
            "INSERT INTO audit (at, actor, action, detail) VALUES (?,?,?,?)", (_now(), actor, action, _dumps(detail))
        )

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit entries first."""
        return [_load(r) for r in self.db.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))]
