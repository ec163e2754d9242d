"""The `extractive` responder: answers with the best passage's own sentences, cited. No model needed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Passage, Turn

_WORD = re.compile(r"\w+")


class ExtractiveResponder:
    """Picks the sentences of the top passage that share most words with the question."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        sentences: int = Field(default=2, ge=1, le=10)

    name = "extractive"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config

    async def stream(self, turn: Turn, passages: Sequence[Passage]) -> AsyncIterator[str]:
        """Yield the chosen sentences word by word, ending with a citation of passage 1."""
        answer = extractive_answer(turn.text, passages, self.config.sentences)
        for word in answer.split(" ") if answer else []:
            yield word + " "


def extractive_answer(question: str, passages: Sequence[Passage], sentences: int = 2) -> str:
    """The sentences of the best passage that share most words with the question, cited as [1]."""
    if not passages:
        return ""
    query = {w.lower() for w in _WORD.findall(question)}
    found = passage_sentences(passages[0])
    ranked = sorted(found, key=lambda s: -len(query & {w.lower() for w in _WORD.findall(s)}))
    chosen = [s for s in found if s in ranked[:sentences]]
    return " ".join(chosen) + " [1]"


def passage_sentences(passage: Passage) -> list[str]:
    """A passage's sentences and list items, without its first line (the title and heading trail)."""
    body = passage.text.split("\n", 1)[-1]
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", body) if len(s.strip()) > 3]
