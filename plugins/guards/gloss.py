"""The `zh_gloss` helper: gives Chinese questions an English keyword gloss so English knowledge is found.

Helpfulness, not safety: it never blocks. Put it last among the input guards, so the safety classifiers read
the customer's own words and only retrieval and the model see the gloss. Besides the safety gloss it knows the
support vocabulary of `plugins/safety/support_gloss.py` (plans, billing, orders, devices, account security).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.contracts import Turn, Verdict
from plugins.safety.gloss import GLOSS, by_length, gloss
from plugins.safety.support_gloss import SUPPORT_GLOSS

TABLE = by_length({**GLOSS, **SUPPORT_GLOSS})  # the safety words, and the support words help articles use


class GlossGuard:
    """Appends `[english keywords]` to a Chinese message (the customer is answered from English articles)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    name = "zh_gloss"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config

    async def check(self, turn: Turn) -> Verdict:
        """Rewrite the newest message with its gloss when it has Chinese words the gloss knows."""
        words = gloss(turn.text, TABLE)
        if not words:
            return Verdict(self.name, False, 0.0, "helpfulness", "no Chinese to gloss")
        return Verdict(self.name, False, 0.0, "helpfulness", f"glossed: {words}", rewrite=f"{turn.text}\n[{words}]")
