"""Turns generated token ids into text deltas, one per token, and stops at stop sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TextStream:
    """Incremental detokenizer: `push` a token, get the new text; text that may begin a stop sequence is held back.

    Args:
        tokenizer: a transformers tokenizer (its `decode` is used, special tokens skipped).
        stops: strings that end the answer; they are not part of it.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()) -> None:
        self._tok = tokenizer
        self._stops = [s for s in stops if s]
        self._ids: list[int] = []
        self._sent = 0
        self._text = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; return the text that became final (possibly empty). Sets `stopped` at a stop sequence."""
        self._ids.append(token)
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        self._text = text
        for stop in self._stops:
            at = text.find(stop, max(0, self._sent - len(stop) + 1))
            if at >= 0:
                self.stopped = True
                return self._release(min(at, len(text)), final=True)
        hold = max((k for s in self._stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return self._release(len(text) - hold)

    def flush(self) -> str:
        """The text held back, once the answer has ended without a stop sequence."""
        return "" if self.stopped else self._release(len(self._text), final=True)

    def _release(self, upto: int, final: bool = False) -> str:
        delta = self._text[self._sent : upto] if upto > self._sent else ""
        self._sent = max(self._sent, upto)
        if final:
            self._text = self._text[: self._sent]
        return delta
