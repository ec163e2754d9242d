"""The `obfuscation` guard: finds encoded or disguised text and hands its decoded views to every later guard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Turn, Verdict
from plugins.safety.decode import DECODERS, Decoder, Revoweller

_DATA = Path(__file__).resolve().parent.parent / "safety" / "data"


def _vocabulary() -> list[str]:
    """English words from our own safety examples, repeats included: enough to re-vowel the words attacks use."""
    words: list[str] = []
    for path in sorted(_DATA.glob("*_en.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                words += [w.lower() for w in re.findall(r"[A-Za-z]{3,}", json.loads(line)["text"])]
    return words


class ObfuscationGuard:
    """Decodes base64, hex, ROT13, leetspeak, homoglyphs, invisible characters, reversed, disemvowelled and
    split payloads (bounded in depth, count and size); the views, not this guard, decide whether to block."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        decoders: list[str] = Field(default_factory=lambda: [*DECODERS, "disemvowel"])
        max_depth: int = Field(default=2, ge=1, le=4)
        max_views: int = Field(default=8, ge=1, le=32)
        max_chars: int = Field(default=8000, ge=100)
        score: float = Field(default=0.2, ge=0, le=1, description="risk reported when a disguise is found")

    name = "obfuscation"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        known = {*DECODERS, "disemvowel"}
        unknown = set(config.decoders) - known
        if unknown:
            raise ValueError(f"unknown decoders {sorted(unknown)}; known: {sorted(known)}")
        self.config = config
        self._decoders: dict[str, Decoder] = {n: DECODERS[n] for n in config.decoders if n in DECODERS}
        if "disemvowel" in config.decoders:
            self._decoders["disemvowel"] = Revoweller(_vocabulary())

    async def check(self, turn: Turn) -> Verdict:
        """Report the disguises found and pass their decoded text on as views."""
        from plugins.safety.decode import decoded_views

        c = self.config
        views = decoded_views(turn.text, self._decoders, c.max_depth, c.max_views, c.max_chars)
        if not views:
            return Verdict(self.name, False, 0.0, "obfuscation", "no disguise found")
        kinds = sorted({how for how, _ in views})
        return Verdict(
            self.name, False, c.score, "obfuscation", f"decoded: {', '.join(kinds)}", views=tuple(v for _, v in views)
        )
