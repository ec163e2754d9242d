"""The decision at the end of a turn: allow, refuse or hand off, and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.contracts import Draft, Passage, Reply, Turn, Verdict

DEFAULT_REFUSAL = (
    "I'm sorry, I can't help with that request. I'm happy to help with your account, orders, "
    "billing or devices, or I can connect you with a member of our team."
)
NO_KNOWLEDGE = (
    "I couldn't find this in our help centre, so I don't want to guess. "
    "Would you like me to connect you with a member of our support team?"
)


@dataclass(frozen=True)
class Policy:
    """Blocks when any guard blocks; answers from passages scoring at least `min_score`."""

    min_score: float = 0.2

    def usable(self, passages: Sequence[Passage]) -> list[Passage]:
        """Passages good enough to ground an answer."""
        return [p for p in passages if p.score >= self.min_score]

    def decide(
        self,
        turn: Turn,
        draft: Draft | None,
        passages: Sequence[Passage],
        verdicts: Sequence[Verdict],
        latency: Mapping[str, float],
    ) -> Reply:
        """Combine the draft, passages and verdicts into the final reply."""
        blocking = next((v for v in verdicts if v.blocked), None)
        if blocking is not None or draft is None:
            message = blocking.message if blocking and blocking.message else DEFAULT_REFUSAL
            return Reply(
                answer=message,
                refused=True,
                handoff=bool(blocking and blocking.handoff),
                sources=(),
                verdicts=tuple(verdicts),
                latency_ms=dict(latency),
                reason=f"blocked by {blocking.plugin}: {blocking.reason}" if blocking else "no draft",
            )
        usable = self.usable(passages)
        if not usable:
            return Reply(
                answer=NO_KNOWLEDGE,
                refused=False,
                handoff=True,
                sources=(),
                verdicts=tuple(verdicts),
                tokens=draft.tokens,
                latency_ms=dict(latency),
                reason="no passage scored above min_score",
            )
        return Reply(
            answer=draft.text,
            refused=False,
            handoff=False,
            sources=tuple(usable),
            verdicts=tuple(verdicts),
            tokens=draft.tokens,
            latency_ms=dict(latency),
            reason="answered from passages",
        )
