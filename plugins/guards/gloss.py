"""The `zh_gloss` helper: gives Chinese questions an English keyword gloss so English knowledge is found.

Helpfulness, not safety: it never blocks. Put it last among the input guards, so the safety classifiers read
the customer's own words and only retrieval and the model see the gloss. Besides the safety gloss it knows the
support vocabulary of `plugins/safety/support_gloss.py` (plans, billing, orders, devices, account security).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Turn, Verdict
from bot.language import mostly_chinese
from plugins.guards.intent import IntentConfig, _IntentGuard
from plugins.safety.cedict import has_chinese, render, table
from plugins.safety.gloss import GLOSS, by_length, gloss
from plugins.safety.support_gloss import SUPPORT_GLOSS

TABLE = by_length({**GLOSS, **SUPPORT_GLOSS})  # the safety words, and the support words help articles use
# Told once per conversation to a customer writing Chinese: "Our help articles are in English, so answers quoting them
# are in English. For support in Chinese, say 'I want a human agent'" (a request the handoff guard knows). The bot's
# own sentences (refusals, handoffs, "nothing found") are in Chinese: bot/language.py.
NOTICE = "（我们的帮助文章是英文的，所以引用文章的回答是英文。如需中文客服，请说“我要人工客服”。）"


log = logging.getLogger(__name__)


class GlossGuard:
    """Appends `[english keywords]` to a Chinese message (the customer is answered from English articles)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        # Also append the word-by-word English rendering from CC-CEDICT (plugins/safety/cedict.py; each word's
        # everyday reading), which knows every word where the keyword tables know a few hundred. `benign`
        # (default): only for a message the harm classifier scores below `benign_below`. Rendering every message
        # finds articles for more Chinese questions but lifts harmful Chinese requests past the retrieval rail too
        # (README, "Reading Chinese").
        dictionary: bool | Literal["benign"] = "benign"
        benign_below: float = Field(default=0.2, ge=0, le=1)
        # Told (once per conversation) to a customer writing mostly Chinese, after the answer; "" tells nothing.
        notice: str = Field(default=NOTICE, max_length=500)

    name = "zh_gloss"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        # The harm classifier the learned guards share (loaded once; its scores are cached by text, and
        # harmful_intent has already scored this message when zh_gloss runs last).
        # Without the pipeline's embedder there is no classifier to ask, and `benign` renders nothing.
        benign = config.dictionary == "benign" and getattr(ctx, "embedder", None) is not None
        self._harm = _IntentGuard(IntentConfig(), ctx) if benign else None
        # Off, or `benign` with nothing to ask: never renders.
        self._renders = config.dictionary is True or self._harm is not None

    def warm(self) -> None:
        """Load the harm classifier the `benign` setting reads, and the everyday rendering's table (built once from
        the dictionary, about a second), so the first Chinese customer does not wait for them."""
        if self._harm is not None:
            self._harm.warm()
        if self._renders:
            table("everyday")

    def _render(self, text: str) -> str:
        if not self._renders:
            return ""
        if self._harm is not None:
            try:
                self._harm.warm()
                assert self._harm._model is not None
                if self._harm._model.scores([text])[0]["harmful"] >= self.config.benign_below:
                    return ""
            except Exception:  # a helper, not a guard: without a score, no rendering (the cautious side)
                log.exception("zh_gloss could not score the message; not rendering it")
                return ""
        return render(text, "everyday")  # each word's everyday sense: what help articles say

    async def check(self, turn: Turn) -> Verdict:
        """Rewrite the newest message with its gloss when it has Chinese words the gloss knows."""
        words = gloss(turn.text, TABLE)
        rendered = self._render(turn.text) if has_chinese(turn.text) else ""
        notice = self._notice(turn)
        if not words and not rendered:
            return Verdict(self.name, False, 0.0, "helpfulness", "no Chinese to gloss", notice=notice)
        rewrite = "\n".join(p for p in (turn.text, f"[{words}]" if words else "", rendered) if p)
        reason = f"glossed: {words or rendered}"
        return Verdict(self.name, False, 0.0, "helpfulness", reason, rewrite=rewrite, notice=notice)

    def _notice(self, turn: Turn) -> str:
        """The notice for a message mostly in Chinese, unless an earlier answer in this conversation carried it."""
        told = any(self.config.notice in m.content for m in turn.messages if m.role == "assistant")
        return self.config.notice if self.config.notice and not told and mostly_chinese(turn.text) else ""
