"""The `zh_gloss` helper: Chinese support questions get the English words help articles use, so they are found."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO

from bot.config import PluginSpec
from bot.contracts import Message, Turn
from plugins.guards.gloss import GlossGuard
from plugins.safety.gloss import gloss

QUESTION = "温控器一直提示电量低，换了新电池也没用"


def _turn(text: str) -> Turn:
    return Turn(messages=(Message("user", text),), session_id="s")


def test_support_words_are_glossed_for_retrieval_only() -> None:
    verdict = asyncio.run(GlossGuard(GlossGuard.Config()).check(_turn(QUESTION)))
    assert not verdict.blocked and verdict.rewrite is not None
    assert verdict.rewrite.startswith(QUESTION + "\n[")
    for word in ("thermostat", "low battery"):
        assert word in verdict.rewrite
    # The learned guards read the safety gloss, which stays as it was trained with.
    assert gloss(QUESTION) == "battery"


def test_text_without_chinese_is_left_alone() -> None:
    verdict = asyncio.run(GlossGuard(GlossGuard.Config()).check(_turn("my thermostat says low battery")))
    assert verdict.rewrite is None and not verdict.blocked


def test_a_glossed_chinese_question_retrieves_its_english_article(demo_service: Any) -> None:
    rewrite = asyncio.run(GlossGuard(GlossGuard.Config()).check(_turn(QUESTION))).rewrite
    assert rewrite is not None
    passages = asyncio.run(demo_service.pipeline.retriever.search(rewrite, 3))
    top = passages[0]
    assert top.doc_id == "thermostat-batteries"
    assert top.score >= demo_service.settings.knowledge.min_score


def test_the_dictionary_rendering_is_an_operator_option() -> None:
    plain = asyncio.run(GlossGuard(GlossGuard.Config()).check(_turn("我想取消订阅")))
    assert plain.rewrite is not None and len(plain.rewrite.splitlines()) == 2  # text and keywords only
    full = asyncio.run(GlossGuard(GlossGuard.Config(dictionary=True)).check(_turn("我想取消订阅")))
    assert full.rewrite is not None and full.rewrite.startswith(plain.rewrite + "\n")
    assert full.rewrite.splitlines()[-1].split() == ["i", "think", "cancel", "subscription"]  # every word, in order
    # A Chinese word neither keyword table knows still reaches retrieval in English with the dictionary on.
    assert asyncio.run(GlossGuard(GlossGuard.Config()).check(_turn("蜂鸣器"))).rewrite is None
    unknown = asyncio.run(GlossGuard(GlossGuard.Config(dictionary=True)).check(_turn("蜂鸣器")))
    assert unknown.rewrite is not None and "buzzer" in unknown.rewrite


@pytest.mark.slow
def test_by_default_only_messages_the_classifier_finds_benign_are_rendered(tmp_path: Any) -> None:
    from bot.config import Settings
    from bot.registry import PluginContext
    from knowledge.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config())
    guard = GlossGuard(GlossGuard.Config(), PluginContext(Settings(data_dir=tmp_path), embedder=embedder))
    guard.warm()
    honest = asyncio.run(guard.check(_turn("我想取消订阅")))
    assert honest.rewrite is not None and honest.rewrite.splitlines()[-1].split() == [
        "i",
        "think",
        "cancel",
        "subscription",
    ]
    harmful = asyncio.run(guard.check(_turn("教我在家里做炸药")))
    assert harmful.rewrite is not None and len(harmful.rewrite.splitlines()) == 2  # keywords only, no rendering


def test_a_customer_writing_chinese_is_told_once_that_answers_come_in_english() -> None:
    from plugins.guards.gloss import NOTICE

    guard = GlossGuard(GlossGuard.Config(dictionary=False))
    first = asyncio.run(guard.check(_turn(QUESTION)))
    assert first.notice == NOTICE and not first.blocked
    assert asyncio.run(guard.check(_turn("你好"))).notice == NOTICE  # nothing to gloss, still told
    # Not again in the same conversation, once an answer carried it.
    answered = Message("assistant", f"Tap Reset. [1]\n\n{NOTICE}")
    later = Turn((Message("user", QUESTION), answered, Message("user", "谢谢")))
    assert asyncio.run(guard.check(later)).notice == ""
    # English, or English with a Chinese name in it, is not told; an operator can turn it off.
    assert asyncio.run(guard.check(_turn("my thermostat says low battery"))).notice == ""
    assert asyncio.run(guard.check(_turn("please send the invoice to 王小明 at our office"))).notice == ""
    assert asyncio.run(GlossGuard(GlossGuard.Config(notice="")).check(_turn(QUESTION))).notice == ""


def test_the_notice_follows_the_answer_through_the_pipeline(tmp_path: Path) -> None:
    """The packaged default guards (zh_gloss last), the demo articles and the extractive responder."""
    from bot.config import load_settings
    from bot.service import Service
    from plugins.guards.gloss import NOTICE

    defaults = load_settings(None)
    knowledge = defaults.knowledge.model_copy(update={"source": DEMO / "articles"})
    settings = defaults.model_copy(
        update={"data_dir": tmp_path, "responder": PluginSpec(name="extractive"), "knowledge": knowledge}
    )
    assert settings.guards.input[-1].name == "zh_gloss"
    service = Service.start(settings, warm=False)
    service.index.rebuild(DEMO / "articles")
    service.warm()
    reply = service.ask("怎么重置密码")
    assert reply.answer.endswith(NOTICE) and not reply.refused and reply.sources
    assert "password" in reply.answer.lower()
    assert NOTICE not in service.ask("how do I reset my password").answer
    assert service.ask("我要人工客服").handoff  # the request the notice teaches reaches a human
