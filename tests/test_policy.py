"""The two-objective policy: weighted risk, thresholds, helpfulness credit, monitor-only and fail-closed."""

from __future__ import annotations

from bot.contracts import Draft, Message, Passage, Turn, Verdict
from bot.language import NO_ANSWER
from bot.policy import Policy

TURN = Turn((Message("user", "hello"),))
PASSAGE = [Passage("p#0", "text", 0.9, doc_id="d")]


def v(plugin: str, score: float, blocked: bool = False, category: str = "risk", **kw: object) -> Verdict:
    return Verdict(plugin, blocked, score, category, "test", **kw)  # type: ignore[arg-type]


def decide(policy: Policy, verdicts: list[Verdict]) -> tuple[bool, bool, str]:
    reply = policy.decide(TURN, Draft("an answer"), PASSAGE, verdicts, {})
    return reply.refused, reply.handoff, reply.reason


def test_weighted_sum_of_risks_refuses_when_no_single_guard_blocks() -> None:
    policy = Policy(refuse_threshold=1.0)
    assert not decide(policy, [v("a", 0.45), v("b", 0.45)])[0]
    refused, _, reason = decide(policy, [v("a", 0.45), v("b", 0.6)])
    assert refused and "weighted risk" in reason and "R=1.05" in reason


def test_operator_weights_change_the_decision() -> None:
    verdicts = [v("a", 0.6), v("b", 0.6)]
    assert decide(Policy(refuse_threshold=1.0), verdicts)[0]
    assert not decide(Policy(refuse_threshold=1.0, weights={"b": 0.5}), verdicts)[0]


def test_weight_zero_makes_a_guard_monitor_only_but_guard_errors_always_block() -> None:
    policy = Policy(weights={"noisy": 0.0, "broken": 0.0})
    assert not decide(policy, [v("noisy", 1.0, blocked=True)])[0]
    assert decide(policy, [v("broken", 1.0, blocked=True, category="guard_error")])[0]


def test_helpfulness_credit_offsets_risk_for_clearly_in_domain_questions() -> None:
    risky = [v("harm", 0.9), v("topical", 0.0, category="topical")]
    assert decide(Policy(refuse_threshold=0.8), risky)[0]
    assert not decide(Policy(refuse_threshold=0.8, helpfulness_weight=0.5), risky)[0]


def test_quality_and_routing_scores_are_not_safety_risk() -> None:
    policy = Policy(refuse_threshold=0.5)
    assert not decide(policy, [v("grounding", 0.9, category="grounding"), v("pii", 0.9, category="pii")])[0]


def test_handoff_verdict_hands_off_without_refusing_and_notices_are_appended() -> None:
    reply = Policy().decide(
        TURN,
        None,
        [],
        [
            v("handoff", 0.0, category="handoff", handoff=True, message="Connecting."),
            v("pii", 0.0, category="pii", notice="I removed your card."),
        ],
        {},
    )
    assert reply.handoff and not reply.refused
    assert reply.answer == "Connecting.\n\nI removed your card."


def test_blocking_guard_message_is_specific() -> None:
    reply = Policy().decide(TURN, None, [], [v("jb", 0.9, blocked=True, message="I can't share that.")], {})
    assert reply.refused and reply.answer == "I can't share that." and "blocked by jb" in reply.reason


def test_a_cut_off_answer_reports_length_and_a_reply_without_the_model_reports_stop() -> None:
    cut = Draft("Open Settings and tap", tokens=64, prompt_tokens=600, finish="length")
    answered = Policy().decide(TURN, cut, PASSAGE, [], {})
    assert answered.finish_reason == "length" and (answered.prompt_tokens, answered.tokens) == (600, 64)
    refused = Policy().decide(TURN, cut, PASSAGE, [v("guard", 1.0, blocked=True)], {})
    assert refused.refused and refused.finish_reason == "stop"
    unknown = Policy().decide(TURN, cut, [], [], {})  # no usable passage: "I don't know" and a human
    assert unknown.handoff and unknown.finish_reason == "stop"


def test_an_empty_answer_is_never_shown() -> None:
    # The model can end at once; without an output guard to put an extract in its place, the customer is offered
    # a person instead of an empty bubble.
    for text in ("", "  \n"):
        reply = Policy().decide(TURN, Draft(text), PASSAGE, [], {})
        assert reply.answer == NO_ANSWER.en and reply.handoff and not reply.refused
        assert reply.reason.startswith("the answer was empty")
