"""The `max_length` guard: rejects empty and oversized messages with a clear, kind message."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Turn, Verdict


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
                message="Your message was empty. What can I help you with?",
            )
        if len(text) > self.config.max_chars:
            return Verdict(
                self.name,
                True,
                1.0,
                "oversized",
                f"message has {len(text)} characters (limit {self.config.max_chars})",
                message=f"Your message is too long for me ({len(text):,} characters; the limit is "
                f"{self.config.max_chars:,}). Could you shorten it to the key question?",
            )
        if len(turn.messages) > self.config.max_turns * 2:
            return Verdict(
                self.name,
                True,
                1.0,
                "oversized",
                "conversation too long",
                message="This conversation has grown very long. Please start a new one so I can help.",
            )
        return Verdict(self.name, False, 0.0, "size", "within limits")
