"""Accepted transcripts as training conversations: thumbs-up answers from the records store and JSONL files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.contracts import Message, Turn
from finetune.data import DataConfig, DataReport, Example, SearchFn, normalise, prompt_messages
from finetune.jsonl import read_jsonl


def accepted_turns(database: str | Path, report: DataReport) -> list[list[dict[str, Any]]]:
    """Conversations up to each answer a customer rated thumbs-up, from the records store."""
    from bot.records import Records

    if isinstance(database, Path) and not database.is_file():
        return []
    try:
        records = Records(database)
        rated = [f for f in records.feedback() if int(f["rating"]) > 0]
        out = []
        for f in rated:
            msgs = records.messages(f["conversation_id"])
            upto = [m for m in msgs if m["id"] <= f["message_id"] and m["role"] in ("user", "assistant")]
            if upto and upto[-1]["id"] == f["message_id"] and upto[-1]["role"] == "assistant":
                out.append([{"role": m["role"], "content": m["content"]} for m in upto])
        return out
    except Exception as exc:  # an unreadable store costs this source, not the run
        report.problems.append(f"records at {database}: {type(exc).__name__}: {exc}")
        return []


def transcript_rows(
    cfg: DataConfig, database: str | Path, report: DataReport, strict: bool
) -> list[list[dict[str, Any]]]:
    def check(row: dict[str, Any]) -> str | None:
        msgs = row.get("messages")
        if not isinstance(msgs, list) or len(msgs) < 2 or not all(isinstance(m, dict) for m in msgs):
            return "needs 'messages': a list of {role, content} ending with the assistant's answer"
        if msgs[-1].get("role") != "assistant" or msgs[-2].get("role") != "user":
            return "the last two messages must be the customer's question and the assistant's answer"
        return None

    rows = []
    for path in cfg.transcripts:
        rows += [
            r["messages"]
            for r in read_jsonl(path, check, strict, report.problems)
            if r.get("rating", "up") in ("up", 1, True)
        ]
    if cfg.records:
        rows += accepted_turns(database, report)
    return rows


def _examples(rows: list[list[dict[str, Any]]], search: SearchFn, k: int, system: str, held: set[str]) -> list[Example]:
    out = []
    for i, msgs in enumerate(rows):
        messages = tuple(
            Message(m["role"], str(m.get("content", ""))) for m in msgs if m.get("role") in ("user", "assistant")
        )
        turn = Turn(messages[:-1])
        if normalise(turn.text) in held:
            continue
        prompt = prompt_messages(turn, search(turn.text, k), system)
        out.append(Example(f"transcript:{i}", "transcripts", (*prompt, messages[-1])))
    return out


def transcript_examples(
    cfg: DataConfig,
    database: str | Path,
    report: DataReport,
    strict: bool,
    search: SearchFn,
    k: int,
    system: str,
    held: set[str],
) -> list[Example]:
    """Training conversations from every accepted transcript (held-out questions excluded)."""
    return _examples(transcript_rows(cfg, database, report, strict), search, k, system, held)
