"""What goes back to a caller: validated incoming messages, source lists with citations, the JSON contract."""

from __future__ import annotations

import re
from typing import Any

from bot.contracts import Message, Reply
from bot.errors import InputError
from bot.language import TOO_MANY_CHARACTERS, Language


def parse_messages(raw: Any, limit: int, language: Language = "en") -> tuple[Message, ...]:
    """Validate a list of {"role", "content"} dicts from outside; a customer's oversized message is named in
    `language` (the web chat passes the customer's).

    Raises:
        InputError: the list is malformed, has no user message, or exceeds `limit` characters in a message.
    """
    if not isinstance(raw, list) or not raw:
        raise InputError("'messages' must be a non-empty list of {role, content} objects.")
    messages = []
    for i, m in enumerate(raw):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise InputError(
                f"Message {i + 1} must be an object with role 'user' or 'assistant' and a string 'content'."
            )
        if len(m["content"]) > limit:
            if i == len(raw) - 1:
                raise InputError(TOO_MANY_CHARACTERS.say(language, chars=len(m["content"]), limit=limit))
            raise InputError(f"Message {i + 1} has {len(m['content']):,} characters; the limit is {limit:,}.")
        messages.append(Message(m["role"], m["content"]))
    if messages[-1].role != "user":
        raise InputError("The last message must come from the user.")
    return tuple(messages)


def sources(reply: Reply) -> list[dict[str, Any]]:
    """One entry per source document (its best-scoring passage), best first.

    `n` lists the prompt's passage numbers that came from the document and `cited` says whether the answer
    cites one of them as [n].
    """
    cited = {int(n) for n in re.findall(r"\[(\d{1,3})\]", reply.answer)}
    seen: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(reply.sources, 1):
        key = p.doc_id or p.id
        if key in seen:
            seen[key]["n"].append(i)
            seen[key]["cited"] = seen[key]["cited"] or i in cited
        else:
            seen[key] = {
                "id": key,
                "title": p.title,
                "score": p.score,
                "section": p.section,
                "source": p.source,
                "url": getattr(p, "url", "") or "",
                "n": [i],
                "cited": i in cited,
            }
    return list(seen.values())


def reply_json(reply: Reply, request_id: Any = None) -> dict[str, Any]:
    """The stable `bot ask --json` output contract."""
    keys = ("guards_in", "retrieval", "first_token", "generation", "guards_out", "total")
    return {
        "id": request_id,
        "answer": reply.answer,
        "refused": reply.refused,
        "handoff": reply.handoff,
        "sources": [
            {"id": s["id"], "title": s["title"], "score": s["score"], "n": s["n"], "cited": s["cited"]}
            for s in sources(reply)
        ],
        "verdicts": [
            {"plugin": v.plugin, "blocked": v.blocked, "score": v.score, "reason": v.reason} for v in reply.verdicts
        ],
        "tokens": reply.tokens,
        "latency_ms": {k: reply.latency_ms.get(k, 0.0) for k in keys},
    }
