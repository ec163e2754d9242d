"""The `instruction_override` guard: a basic detector of attempts to override the bot's instructions."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Turn, Verdict
from bot.language import INSTRUCTIONS, language

# Each pattern is a family of competing-objectives attack (Wei et al. 2023), written from our own examples.
PATTERNS: dict[str, str] = {
    "ignore_previous": r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(previous|prior|above|earlier|all|your|system)\b"
    r".{0,30}\b(instructions?|prompts?|rules?|guidelines?|directives?|programming)\b",
    "system_prompt_request": r"\b(reveal|show|print|repeat|output|tell me|what (is|are))\b.{0,30}\b(system|initial|hidden|original)"
    r"\s+(prompt|instructions?|message)",
    "fake_system": r"(^|\n)\s*(\[?\s*(system|developer|admin)\s*(message|note|override)?\s*\]?\s*:|<\|?(system|im_start)\|?>)",
    "refusal_suppression": r"\b(do not|don't|never)\s+(refuse|apologi[sz]e|say (that )?you can'?t|include (any )?(warnings?|disclaimers?))",
    "prefix_injection": r"\b(start|begin)\s+(your|the)\s+(response|answer|reply)\s+with\s+[\"'“]",
    "roleplay": r"\b(you are now|pretend (to be|you are)|act as|roleplay as|from now on you)\b.{0,40}"
    r"\b(DAN|unfiltered|uncensored|jailbroken|no (rules|restrictions|limits)|evil|without (any )?(rules|restrictions|filters))",
    "developer_mode": r"\b(developer|god|jailbreak|dan)\s+mode\b",
}
_COMPILED = {name: re.compile(p, re.IGNORECASE | re.DOTALL) for name, p in PATTERNS.items()}


def override_family(text: str) -> str | None:
    """The first override family whose pattern matches `text` (after folding disguises), or None."""
    folded = _fold(text)
    return next((family for family, pattern in _COMPILED.items() if pattern.search(folded)), None)


def _fold(text: str) -> str:
    """Fold compatibility forms and drop invisible characters so trivial disguises still match."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


class InstructionOverrideGuard:
    """Blocks messages that try to replace the bot's instructions (competing objectives)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        families: list[str] = Field(default_factory=lambda: list(PATTERNS))
        window: int = Field(default=3, ge=1, description="recent user messages inspected")

    name = "instruction_override"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        unknown = set(config.families) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; known: {sorted(PATTERNS)}")
        self.config = config

    async def check(self, turn: Turn) -> Verdict:
        """Block when a recent user message matches an override family."""
        users = [_fold(m.content) for m in turn.messages if m.role == "user"][-self.config.window :]
        text = "\n".join(users)
        newest_starts = len(text) - len(users[-1]) if users else 0
        for family in self.config.families:
            # Only matches reaching into the newest message count: an attack split across turns is caught,
            # but an earlier, already-refused attempt does not poison the customer's next honest question.
            match = next((m for m in _COMPILED[family].finditer(text) if m.end() > newest_starts), None)
            if match:
                return Verdict(
                    self.name,
                    True,
                    0.95,
                    family,
                    f"matched {family}: '{match.group(0)[:60]}'",
                    message=INSTRUCTIONS.say(language(turn)),
                )
        return Verdict(self.name, False, 0.0, "instruction_override", "no override pattern")
