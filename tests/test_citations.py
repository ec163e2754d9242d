"""The `citations` output plugin: repeated and unfinished sentences dropped, each supported sentence cited."""

from __future__ import annotations

import pytest

from bot.config import PluginSpec, Settings, load_settings
from bot.contracts import Draft, Message, Passage, Turn
from bot.errors import PluginError
from bot.registry import PluginContext, build, validate_config
from plugins.guards.citations import CitationsGuard, responder_limit

TURN = Turn((Message("user", "how do I reset my hub?"),))
PASSAGES = [
    Passage(
        "hub#0",
        "Reset the hub\nPress and hold the pinhole button on the back of the hub for 15 seconds until the light "
        "turns red. The hub restarts and keeps your rooms.",
        0.7,
        doc_id="hub-reset",
    ),
    Passage(
        "share#0",
        "Share access\nYou can share your camera with household members from the app. Open Settings and tap Share.",
        0.5,
        doc_id="share",
    ),
]


def guard(limit: int = 64, **config: object) -> CitationsGuard:
    responder = {"name": "hf", "config": {"max_new_tokens": limit}}
    return CitationsGuard(CitationsGuard.Config(**config), PluginContext(Settings(responder=responder)))


async def rewrite(text: str, tokens: int = 10, **config: object) -> str | None:
    verdict = await guard(**config).check_output(TURN, Draft(text, tokens), PASSAGES)
    assert not verdict.blocked and verdict.score == 0.0 and verdict.category == "helpfulness"
    return verdict.rewrite


async def test_each_supported_sentence_gets_its_passage_before_the_stop() -> None:
    out = await rewrite("Hold the pinhole button for 15 seconds. Then open Settings and tap Share in the app!")
    assert out == "Hold the pinhole button for 15 seconds [1]. Then open Settings and tap Share in the app [2]!"


async def test_unsupported_sentences_and_wrong_figures_stay_uncited() -> None:
    # 30 is in no passage: citing one would claim the source says it.
    assert await rewrite("Hold the pinhole button for 30 seconds.") is None
    assert await rewrite("Our CEO signs every refund personally.") is None


async def test_a_draft_that_cites_keeps_its_placement_but_loses_impossible_citations() -> None:
    assert await rewrite("Hold the pinhole button for 15 seconds. The hub restarts. [1]") is None
    out = await rewrite("Hold the pinhole button [1]. The hub restarts [7].")
    assert out == "Hold the pinhole button [1]. The hub restarts."
    verdict = await guard().check_output(TURN, Draft("The hub restarts [3]."), PASSAGES)
    assert "1 citation(s) of passages that do not exist" in verdict.reason


async def test_repeated_sentences_and_list_items_are_dropped() -> None:
    text = (
        "You can share your camera with household members. You can share your camera with household members! "
        "You can also share your camera with your friends."
    )
    out = await rewrite(text)
    assert (
        out
        == "You can share your camera with household members [2]. You can also share your camera with your friends [2]."
    )
    steps = (
        "Do this:\n1. Open Settings and tap Share.\n2. Open Settings and tap Share.\n3. Open Settings and tap Share."
    )
    assert await rewrite(steps) == "Do this:\n1. Open Settings and tap Share [2]."


async def test_an_answer_cut_at_the_token_limit_ends_at_its_last_finished_sentence() -> None:
    text = "To reset it:\n\n1. Hold the pinhole button for 15 seconds.\n\n2. **Wait for the light**: when it turns"
    assert await rewrite(text, tokens=64) == "To reset it:\n\n1. Hold the pinhole button for 15 seconds [1]."
    # The steps gone, a lead-in would dangle: it goes too.
    assert await rewrite("The hub restarts. To fix it, follow these steps:\n\n1. Press the", tokens=64) == (
        "The hub restarts [1]."
    )
    # Below the limit the model stopped by itself: an answer without a final stop is left whole.
    assert await rewrite("Open Settings\n- Tap Share", tokens=20) == "Open Settings [2]\n- Tap Share [2]"
    # One unfinished sentence is all there is: kept rather than emptied.
    assert await rewrite("The hub restarts and keeps", tokens=64) == "The hub restarts and keeps [1]"


async def test_tables_headings_and_lead_ins_are_not_cited() -> None:
    text = "Fees:\n| Missing cable | 8 |\n# Share access"
    assert await rewrite(text) is None


async def test_each_step_can_be_turned_off() -> None:
    text = "The hub restarts. The hub restarts. And then"
    assert await rewrite(text, tokens=64, dedupe=False, trim_unfinished=False, cite=False) is None
    assert await rewrite(text, tokens=64, cite=False) == "The hub restarts."


def test_the_token_limit_comes_from_the_configured_responder() -> None:
    assert responder_limit(Settings(responder={"name": "hf", "config": {"max_new_tokens": 99}})) == 99
    assert responder_limit(Settings(responder={"name": "openai", "config": {"base_url": "http://127.0.0.1:9"}})) == 256
    assert responder_limit(Settings(responder={"name": "extractive", "config": {}})) is None
    assert responder_limit(None) is None


def test_it_is_in_the_default_output_chain_last_and_validates_its_config() -> None:
    settings = load_settings(None)
    assert [g.name for g in settings.guards.output][-1] == "citations"
    assert build("guard", PluginSpec(name="citations"), PluginContext(settings)).name == "citations"
    with pytest.raises(PluginError, match="repeat_similarity"):
        validate_config("guard", PluginSpec(name="citations", config={"repeat_similarity": 2}))


async def test_chinese_sentences_split_at_full_stops_without_spaces() -> None:
    passages = [Passage("zh#0", "重置\n按住针孔按钮15秒。集线器会重启。", 0.5)]
    draft = Draft("按住针孔按钮15秒。集线器会重启。按住针孔按钮15秒。然后", 64)
    verdict = await guard().check_output(TURN, draft, passages)
    assert verdict.rewrite == "按住针孔按钮15秒 [1]。集线器会重启 [1]。"
    assert "repeated" in verdict.reason and "unfinished" in verdict.reason
