"""Builds the grounded chat prompt: numbered passages, the conversation, and the customer's question."""

from __future__ import annotations

from collections.abc import Sequence

from bot.contracts import Passage, Turn

SYSTEM = (
    "You are the customer support assistant of Kestrel Home. Answer the customer's question in two or three "
    "short sentences using only the numbered help-centre passages, and cite the passage you used like [1]. "
    "If the passages do not answer it, say you don't know and offer to connect them with a human agent."
)


def build_messages(
    turn: Turn, passages: Sequence[Passage], system: str = SYSTEM, history: int = 4
) -> list[dict[str, str]]:
    """Chat messages for the model: system rules, recent history, then passages plus the question."""
    context = "\n\n".join(f"[{i}] {p.text}" for i, p in enumerate(passages, 1))
    messages = [{"role": "system", "content": system}]
    messages += [{"role": m.role, "content": m.content} for m in turn.history[-history:] if m.role != "system"]
    # Passages first and the question last: the small default model stays closest to the text this way.
    messages.append({"role": "user", "content": f"{context}\n\nUsing the text above, answer: {turn.text}"})
    return messages
