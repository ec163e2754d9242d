"""The `max_length` guard: rejects empty and oversized messages with a clear, kind message."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Turn, Verdict
from bot.language import EMPTY, LONG_CONVERSATION, TOO_LONG, language


class MaxLengthGuard:
    """Blocks empty messages and messages longer than `max_chars` characters."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_chars: int = Field(default=4000, ge=1)
        max_turns: int = Field(default=50, ge=1)

    name = "max_length"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config

    async def check(self, turn: Turn) -> Verdict:
        """Block an empty message, an oversized one, or an overlong conversation."""
        text = turn.text
        if not text.strip():
            return Verdict(
                self.name,
                True,
                1.0,
                "empty",
                "empty message",
                message=EMPTY.say(language(turn)),
            )
        if len(text) > self.config.max_chars:
            return Verdict(
                self.name,
                True,
                1.0,
                "oversized",
                f"message has {len(text)} characters (limit {self.config.max_chars})",
                message=TOO_LONG.say(language(turn), chars=len(text), limit=self.config.max_chars),
            )
        if len(turn.messages) > self.config.max_turns * 2:
            return Verdict(
                self.name,
                True,
                1.0,
                "oversized",
                "conversation too long",
                message=LONG_CONVERSATION.say(language(turn)),
            )
        return Verdict(self.name, False, 0.0, "size", "within limits")
