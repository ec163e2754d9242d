"""Cited extracts (the `extractive` responder, the grounding and over-refusal fallbacks): sentences by meaning."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import pytest

from bot.contracts import Draft, Message, Passage, Turn
from bot.registry import PluginContext
from plugins.guards.output import GroundingGuard
from plugins.responders.extractive import extractive_answer

QUESTION = "when do I get my cash back after sending something back?"
PASSAGES = [
    Passage(
        "ship#0",
        "Shipping\nWe send orders within 2 business days. Sending is free over 50 euros. Parcels leave from Rotterdam.",
        0.6,
    ),
    Passage(
        "refund#0",
        "Refunds\nThe money is on your card 3 to 5 business days after we approve the return. "
        "PayPal refunds arrive within a day. Gift cards are refunded as store credit.",
        0.5,
    ),
]


class Broken:
    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("model file gone")

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise RuntimeError("model file gone")


def test_with_the_embedder_the_answering_passage_is_found_and_cited(demo_service: Any) -> None:
    embedder = demo_service.pipeline.embedder
    by_words = extractive_answer(QUESTION, PASSAGES)
    assert by_words.endswith("[1]") and "Sending" in by_words  # shares "sending" and "back" with the question
    meant = extractive_answer(QUESTION, PASSAGES, 2, embedder)
    assert meant.endswith(" [2]") and "3 to 5 business days" in meant
    # two sentences of that passage, in its own order (the answering one is its first)
    assert meant.startswith("The money is on your card") and meant.count(". ") == 2


def test_a_failing_embedder_falls_back_to_shared_words(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert extractive_answer(QUESTION, PASSAGES, 2, Broken()) == extractive_answer(QUESTION, PASSAGES)
    assert "embedding failed" in caplog.text


async def test_the_grounding_fallback_uses_the_guards_embedder(demo_service: Any) -> None:
    turn = Turn((Message("user", QUESTION),))
    made_up = Draft("Refunds are paid in bitcoin by our CEO. It takes 90 minutes.")
    guard = GroundingGuard(
        GroundingGuard.Config(), PluginContext(demo_service.settings, demo_service.pipeline.embedder)
    )
    verdict = await guard.check_output(turn, made_up, PASSAGES)
    assert verdict.rewrite is not None and verdict.rewrite.endswith("[2]") and "3 to 5" in verdict.rewrite


def test_the_extractive_responder_cites_the_passage_it_quotes(demo_service: Any) -> None:
    reply = demo_service.ask("can my son see the camera recordings if he is a household member?")
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", reply.answer)]
    assert len(cited) == 1 and 1 <= cited[0] <= len(reply.sources)
    quoted = reply.answer.rsplit(" [", 1)[0].split(". ")[0]
    assert quoted[:40] in reply.sources[cited[0] - 1].text


async def test_choose_words_keeps_the_old_rule_without_embedding(demo_service: Any) -> None:
    from plugins.responders.extractive import ExtractiveResponder

    turn = Turn((Message("user", QUESTION),))
    ctx = PluginContext(demo_service.settings, demo_service.pipeline.embedder)
    for choose, cited in (("words", "[1]"), ("meaning", "[2]")):
        responder = ExtractiveResponder(ExtractiveResponder.Config(choose=choose), ctx)
        answer = "".join([part async for part in responder.stream(turn, PASSAGES)]).strip()
        assert answer.endswith(cited)
