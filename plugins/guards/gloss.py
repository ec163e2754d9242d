"""The `zh_gloss` helper: gives Chinese questions an English keyword gloss so English knowledge is found.

Helpfulness, not safety: it never blocks. Put it last among the input guards, so the safety classifiers read
the customer's own words and only retrieval and the model see the gloss. Besides the safety gloss it knows the
support vocabulary of `plugins/safety/support_gloss.py` (plans, billing, orders, devices, account security).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.contracts import Turn, Verdict
from plugins.safety.cedict import render
from plugins.safety.gloss import GLOSS, by_length, gloss
from plugins.safety.support_gloss import SUPPORT_GLOSS

TABLE = by_length({**GLOSS, **SUPPORT_GLOSS})  # the safety words, and the support words help articles use


class GlossGuard:
    """Appends `[english keywords]` to a Chinese message (the customer is answered from English articles)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        # Also append the word-by-word English rendering from CC-CEDICT (plugins/safety/cedict.py). Off by default:
        # it finds articles for more Chinese questions, but lifts harmful Chinese requests past the retrieval rail
        # too (README, "Reading Chinese").
        dictionary: bool = False

    name = "zh_gloss"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config

    async def check(self, turn: Turn) -> Verdict:
        """Rewrite the newest message with its gloss when it has Chinese words the gloss knows."""
        words = gloss(turn.text, TABLE)
        rendered = render(turn.text) if self.config.dictionary else ""
        rendered = "" if rendered == turn.text else rendered  # no Chinese in it
        if not words and not rendered:
            return Verdict(self.name, False, 0.0, "helpfulness", "no Chinese to gloss")
        rewrite = "\n".join(p for p in (turn.text, f"[{words}]" if words else "", rendered) if p)
        return Verdict(self.name, False, 0.0, "helpfulness", f"glossed: {words or rendered}", rewrite=rewrite)
