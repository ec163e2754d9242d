"""The decision at the end of a turn: allow, refuse or hand off, with the reason recorded.

Two objectives pull against each other. Safety risk is a weighted sum of the guards' risk scores,
R = sum_g w_g * s_g; helpfulness credit H is how clearly the question is in the bot's domain (1 minus the
`topical` guard's off-domain score, 0 when no topical guard runs). The turn is refused when
R - w_help * H >= refuse_threshold, or when a guard with non-zero weight blocks on its own threshold.
A guard that failed (`guard_error`) always blocks: guards fail closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bot.contracts import Draft, Passage, Reply, Turn, Verdict
from bot.language import DEFAULT_REFUSAL, HANDOFF, NO_ANSWER, NO_KNOWLEDGE, RISK_REFUSAL, language

# Verdict categories that measure something other than safety risk (quality, routing, redaction).
NOT_RISK = frozenset(
    {"topical", "grounding", "helpfulness", "pii", "pii_leak", "handoff", "size", "empty", "responder_error"}
)


@dataclass(frozen=True)
class Policy:
    """Combines verdicts with operator weights and thresholds into allow / refuse / hand off."""

    min_score: float = 0.2
    weights: Mapping[str, float] = field(default_factory=dict)
    refuse_threshold: float = 1.0
    helpfulness_weight: float = 0.0

    def usable(self, passages: Sequence[Passage]) -> list[Passage]:
        """Passages good enough to ground an answer."""
        return [p for p in passages if p.score >= self.min_score]

    def weight(self, plugin: str) -> float:
        """The operator's weight for a guard (1.0 unless set)."""
        return float(self.weights.get(plugin, 1.0))

    def objective(self, verdicts: Sequence[Verdict]) -> tuple[float, float]:
        """(weighted safety risk R, helpfulness credit H) for these verdicts."""
        risk = sum(self.weight(v.plugin) * v.score for v in verdicts if v.category not in NOT_RISK)
        topical = [v for v in verdicts if v.category == "topical" or v.plugin == "topical"]
        help_credit = 1.0 - max(v.score for v in topical) if topical else 0.0
        return risk, help_credit

    def blocking(self, verdicts: Sequence[Verdict]) -> Verdict | None:
        """The verdict that blocks the turn, if any."""
        for v in verdicts:
            if v.category == "guard_error" or (v.blocked and self.weight(v.plugin) > 0):
                return v
        return None

    def over_threshold(self, verdicts: Sequence[Verdict]) -> bool:
        """Whether the weighted objective says refuse."""
        risk, help_credit = self.objective(verdicts)
        return risk - self.helpfulness_weight * help_credit >= self.refuse_threshold

    def stops(self, verdicts: Sequence[Verdict]) -> bool:
        """Whether the turn must end before retrieval and generation."""
        return self.blocking(verdicts) is not None or self.over_threshold(verdicts) or any(v.handoff for v in verdicts)

    def decide(
        self,
        turn: Turn,
        draft: Draft | None,
        passages: Sequence[Passage],
        verdicts: Sequence[Verdict],
        latency: Mapping[str, float],
    ) -> Reply:
        """Combine the draft, passages and verdicts into the final reply, recording why."""
        risk, help_credit = self.objective(verdicts)
        why = f"R={risk:.2f} H={help_credit:.2f}"
        notices = " ".join(dict.fromkeys(v.notice for v in verdicts if v.notice))
        handoff = next((v for v in verdicts if v.handoff), None)
        blocking = self.blocking(verdicts)
        lang = language(turn)  # the bot's own sentences follow the customer's language

        def reply(
            answer: str,
            refused: bool,
            to_human: bool,
            reason: str,
            sources: Sequence[Passage] = (),
            finish: Literal["stop", "length"] = "stop",
        ) -> Reply:
            text = f"{answer}\n\n{notices}" if notices else answer
            return Reply(
                text,
                refused,
                to_human,
                tuple(sources),
                tuple(verdicts),
                draft.tokens if draft else 0,
                dict(latency),
                f"{reason} ({why})",
                draft.prompt_tokens if draft else 0,
                finish,
            )

        if blocking is not None:
            message = blocking.message or DEFAULT_REFUSAL.say(lang)
            return reply(message, True, blocking.handoff, f"blocked by {blocking.plugin}: {blocking.reason}")
        if handoff is not None:
            message = handoff.message or HANDOFF.say(lang)
            return reply(message, False, True, f"handoff by {handoff.plugin}: {handoff.reason}")
        if self.over_threshold(verdicts):
            top = max(verdicts, key=lambda v: self.weight(v.plugin) * v.score)
            message = top.message or RISK_REFUSAL.say(lang)
            return reply(message, True, False, f"weighted risk over threshold, led by {top.plugin}")
        if draft is None:
            return reply(DEFAULT_REFUSAL.say(lang), True, False, "no draft")
        usable = self.usable(passages)
        if not usable:
            return reply(NO_KNOWLEDGE.say(lang), False, True, "no passage scored above min_score")
        if not draft.text.strip():  # the model ended at once and no output guard put an answer in its place
            return reply(NO_ANSWER.say(lang), False, True, "the answer was empty")
        # The model's answer: "length" when it reached its token limit (output guards may have tidied the end).
        return reply(draft.text, False, False, "answered from passages", usable, draft.finish)
