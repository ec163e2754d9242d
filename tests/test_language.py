"""The bot's own sentences follow the customer's language: what decides it, and that every phrase has both."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bot import language as lang
from bot.contracts import Message, Turn
from bot.language import TOO_LONG, Phrase, language, language_of, mostly_chinese
from plugins.guards.pii import PIIGuard
from plugins.guards.size import MaxLengthGuard


def _turn(*said: str) -> Turn:
    return Turn(tuple(Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(said)))


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        (("我的快递到哪了",), "zh"),
        (("where is my parcel",), "en"),
        (("my friend 王芳 ordered a Hub for me, where is it",), "en"),  # a Chinese name does not switch it
        (("Kestrel Hub 一直离线怎么办",), "zh"),  # Chinese with product names in English
        (("我的快递到哪了", "It is on its way. [1]", "ok"), "zh"),  # too little to tell: the earlier message
        (("我的快递到哪了", "It is on its way. [1]", "KH-12345678 ???"), "zh"),
        (("我的快递到哪了", "It is on its way. [1]", "ok thanks, and my refund?"), "en"),
        (("",), "en"),
    ],
)
def test_the_language_is_the_newest_customer_message_with_letters(said: tuple[str, ...], expected: str) -> None:
    assert language_of(_turn(*said).messages) == expected


def test_the_language_fixed_by_the_pipeline_wins_over_the_text() -> None:
    glossed = _turn("今天天气怎么样\n[weather today] today weather how")  # zh_gloss's English, appended
    assert not mostly_chinese(glossed.text)
    assert language(dataclasses.replace(glossed, language="zh")) == "zh"
    assert language(glossed) == "en"


def test_every_phrase_has_both_languages_and_fills_its_fields() -> None:
    phrases = [v for v in vars(lang).values() if isinstance(v, Phrase)] + list(lang.TOPICS.values())
    assert len(phrases) > 15
    for phrase in phrases:
        assert phrase.en.strip() and mostly_chinese(phrase.zh), phrase
        assert phrase.en.count("{") == phrase.zh.count("{"), phrase  # the same fields in both
    assert TOO_LONG.say("zh", chars=12345, limit=4000) == TOO_LONG.zh.format(chars=12345, limit=4000)
    assert "12,345" in TOO_LONG.say("zh", chars=12345, limit=4000)


def test_size_guard_answers_in_the_customers_language() -> None:
    guard = MaxLengthGuard(MaxLengthGuard.Config(max_chars=20))
    zh = asyncio.run(guard.check(_turn("我的温控器一直离线，重启了好几次路由器都没有用，怎么办才好呢")))
    en = asyncio.run(guard.check(_turn("my thermostat keeps going offline, what now")))
    assert zh.blocked and zh.message.startswith("您的消息太长了")
    assert en.blocked and en.message.startswith("Your message is too long")


def test_pii_notice_names_what_was_removed_in_chinese() -> None:
    verdict = asyncio.run(PIIGuard(PIIGuard.Config()).check(_turn("我的邮箱是 wang.fang@example.com，订单还没到")))
    assert verdict.rewrite is not None and "wang.fang" not in verdict.rewrite
    assert "电子邮箱地址" in verdict.notice and "为了您的安全" in verdict.notice


def test_the_web_chat_falls_back_to_the_browsers_language() -> None:
    import gradio as gr

    from bot.chat import TO_HUMAN, _language

    chinese_browser = gr.Request(headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})
    # "Talk to a human" pressed before typing anything: the browser's language.
    assert TO_HUMAN.say(_language([], chinese_browser)) == TO_HUMAN.zh
    assert _language([], gr.Request(headers={"accept-language": "en-GB"})) == "en"
    assert _language([], None) == "en"
    # Once the customer has written, their words decide.
    assert _language([{"role": "user", "content": "where is my parcel"}], chinese_browser) == "en"
    assert _language([{"role": "user", "content": "我的快递到哪了"}], None) == "zh"
