"""The `pii` guard: redacts personal data before it is logged or reaches the model, and tells the customer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Draft, Passage, Turn, Verdict
from bot.language import REDACTED, language
from plugins.safety.pii import LABELS, LABELS_ZH, find_pii, redact


class PIIGuard:
    """Input: replaces e-mails, phones, payment cards (Luhn), IBANs (mod 97) and national ids with placeholders.
    Output: removes personal data from an answer unless the customer or a passage supplied it."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        kinds: list[str] = Field(default_factory=lambda: sorted(LABELS))

    name = "pii"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        unknown = set(config.kinds) - set(LABELS)
        if unknown:
            raise ValueError(f"unknown kinds {sorted(unknown)}; known: {sorted(LABELS)}")
        self.kinds = set(config.kinds)

    async def check(self, turn: Turn) -> Verdict:
        """Redact the newest message; never blocks."""
        found = find_pii(turn.text, self.kinds)
        if not found:
            return Verdict(self.name, False, 0.0, "pii", "no personal data")
        kinds = sorted({LABELS[f.kind] for f in found})
        lang = language(turn)
        told = kinds if lang == "en" else sorted({LABELS_ZH[f.kind] for f in found})
        notice = REDACTED.say(lang, kinds=(" and " if lang == "en" else "和").join(told))
        return Verdict(
            self.name,
            False,
            0.0,
            "pii",
            f"redacted {len(found)} item(s): {', '.join(kinds)}",
            rewrite=redact(turn.text, found),
            notice=notice,
        )

    async def check_output(self, turn: Turn, draft: Draft, passages: Sequence[Passage]) -> Verdict:
        """Remove personal data the answer invents or leaks (anything not in the passages)."""
        allowed = " ".join(p.text for p in passages)
        leaked = [f for f in find_pii(draft.text, self.kinds) if f.text not in allowed]
        if not leaked:
            return Verdict(self.name, False, 0.0, "pii_leak", "no personal data in answer")
        return Verdict(
            self.name,
            False,
            0.5,
            "pii_leak",
            f"removed {len(leaked)} item(s) from the answer",
            rewrite=redact(draft.text, leaked),
        )
