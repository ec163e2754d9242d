"""Example third-party guard: refund claims above an amount go to a human instead of the bot."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.contracts import Turn, Verdict

AMOUNT = re.compile(r"(?:€|\$|eur|usd)\s?(\d+(?:[.,]\d+)?)", re.IGNORECASE)


class RefundLimitGuard:
    """Hands the turn to a human when a refund above `limit` is mentioned."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        limit: float = 500.0

    name = "refund_limit"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config

    async def check(self, turn: Turn) -> Verdict:
        amounts = [float(a.replace(",", ".")) for a in AMOUNT.findall(turn.text)]
        if "refund" in turn.text.lower() and amounts and max(amounts) > self.config.limit:
            return Verdict(
                self.name,
                True,
                0.6,
                "refund_limit",
                f"refund of {max(amounts):.2f} above limit",
                message="A refund of this size needs a member of our team; I'm connecting you now.",
                handoff=True,
            )
        return Verdict(self.name, False, 0.0, "refund_limit", "no large refund")
