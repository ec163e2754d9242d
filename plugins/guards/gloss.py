"""The `zh_gloss` helper: gives Chinese questions an English keyword gloss so English knowledge is found.

Helpfulness, not safety: it never blocks. Put it last among the input guards, so the safety classifiers read
the customer's own words and only retrieval and the model see the gloss.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.contracts import Turn, Verdict
from plugins.safety.gloss import gloss


class GlossGuard:
    """Appends `[english keywords]` to a Chinese message (the customer is answered from English articles)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    name = "zh_gloss"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config

    async def check(self, turn: Turn) -> Verdict:
        """Rewrite the newest message with its gloss when it has Chinese words the gloss knows."""
        words = gloss(turn.text)
        if not words:
            return Verdict(self.name, False, 0.0, "helpfulness", "no Chinese to gloss")
        return Verdict(self.name, False, 0.0, "helpfulness", f"glossed: {words}", rewrite=f"{turn.text}\n[{words}]")
