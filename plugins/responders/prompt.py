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
    context = _context(passages)
    messages = [{"role": "system", "content": system}]
    messages += [{"role": m.role, "content": m.content} for m in turn.history[-history:] if m.role != "system"]
    # Passages first and the question last: the small default model stays closest to the text this way.
    messages.append({"role": "user", "content": f"{context}\n\nUsing the text above, answer: {turn.text}"})
    return messages


def _context(passages: Sequence[Passage]) -> str:
    return "\n\n".join(f"[{i}] {p.text}" for i, p in enumerate(passages, 1))


def passage_spans(rendered: str, passages: Sequence[Passage]) -> list[tuple[int, int]]:
    """Character ranges of the passage texts in a rendered prompt, cut where a tokenizer splits anyway.

    A range runs from the space before a text (or its first visible character, when it starts with white space)
    to its last visible character. The passages are found in the last place the numbered context occurs (the
    question message, not an earlier turn quoting it). Blank passages get no range; no ranges at all when the
    template changed the context.
    """
    context = _context(passages)
    at = rendered.rfind(context) if passages else -1
    if at < 0:
        return []
    spans = []
    for i, p in enumerate(passages, 1):
        at += len(f"[{i}] ")
        visible = p.text.strip()
        if visible:
            first = at + p.text.index(visible)
            start = first - 1 if first == at else first
            spans.append((start, first + len(visible)))
        at += len(p.text) + 2  # the blank line between passages
    return spans


def passage_piece(text: str) -> str:
    """The part of a passage's text a prompt's passage range covers (see `passage_spans`): its visible text, after
    the space that precedes it when it starts without white space. Empty for a blank passage."""
    visible = text.strip()
    if not visible:
        return ""
    return " " + visible if text.startswith(visible) else visible
