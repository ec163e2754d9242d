"""Learned guards on the shared intent classifier: `jailbreak`, `harmful_intent`, `topical` and `handoff`."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Turn, Verdict
from bot.language import (
    CARE,
    CJK,
    FRUSTRATED,
    HARMFUL,
    INSTRUCTIONS,
    NO_KNOWLEDGE,
    OFF_DOMAIN,
    OTHER_TOPIC,
    TOPICS,
    language,
)
from plugins.guards.override import override_family
from plugins.responders.model_cache import cache_root
from plugins.safety import review
from plugins.safety.cedict import table
from plugins.safety.classifier import SHIPPED, IntentClassifier, load
from plugins.safety.gloss import with_gloss
from plugins.safety.severe import severe_match

ROOT = Path(__file__).resolve().parents[2]
SHARED_SAFETY = ROOT.parent / "shared" / "data" / "safety"  # where the public sets sit beside a checkout
log = logging.getLogger(__name__)


# A sentence ends at . ? ! ; or : before a space (not after an initial, as in "U.S."), at a Chinese stop, or at a
# line break.
_SENTENCE = re.compile(r"(?<![A-Z]\.)(?<=[.?!;:])\s+|(?<=[。？！；：])|\n+")


def sentences(text: str, most: int) -> list[str]:
    """The sentences of a message that could be a request on their own (four words or more, or six Chinese
    characters), when there are at least two; more than `most` are joined with their neighbours into `most` parts,
    so the work stays bounded however long the message."""
    parts = [p.strip() for p in _SENTENCE.split(text)]
    parts = [p for p in parts if len(p.split()) >= 4 or len(CJK.findall(p)) >= 6]
    if len(parts) < 2:
        return []
    if len(parts) > most:
        size = -(-len(parts) // most)
        parts = [" ".join(parts[i : i + size]) for i in range(0, len(parts), size)]
    return parts


def safety_data_dir() -> Path | None:
    """The public tune/holdout data: SERVICEBOT_SAFETY_DATA, else ../shared/data/safety beside the repo."""
    env = os.environ.get("SERVICEBOT_SAFETY_DATA")
    if env and not (Path(env) / "tune").is_dir():
        log.warning("SERVICEBOT_SAFETY_DATA=%s has no tune/ folder; looking beside the repo instead.", env)
    for candidate in ([Path(env)] if env else []) + [SHARED_SAFETY]:
        if (candidate / "tune").is_dir():
            return candidate
    return None


@functools.cache
def _warn_without_public_data() -> None:
    """Said once per process: guards trained on our own data alone miss noticeably more attacks."""
    log.warning(
        "The learned guards are trained without the public safety sets (no tune/ folder in SERVICEBOT_SAFETY_DATA "
        "or at %s, and the shipped classifier does not fit the edited example files): they stop noticeably fewer "
        "harmful requests. Point SERVICEBOT_SAFETY_DATA at the data.",
        SHARED_SAFETY,
    )


class IntentConfig(BaseModel):
    """Shared settings of the learned guards."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(default=0.5, ge=0, le=1)
    window: int = Field(default=3, ge=1, le=20, description="recent user messages read together")
    margin: float = Field(default=0.15, ge=0, le=1, description="rise the newest message must add to the window")
    public_data: bool = Field(default=True, description="also train on the public tune/ sets when present")


class _IntentGuard:
    """Scores the newest message and the recent window; a window counts only when the newest message raises it above
    the previous turn's window, so an attack split across turns is caught while an earlier refused message does not
    poison later ones."""

    Config = IntentConfig
    head = "harmful"
    name = "intent"

    def __init__(self, config: IntentConfig, ctx: Any = None) -> None:
        self.config = config
        self._model: IntentClassifier | None = None
        self._embedder = getattr(ctx, "embedder", None)
        demo = getattr(getattr(ctx, "settings", None), "knowledge", None)
        self._qa = (Path(demo.source).parent / "qa.jsonl") if demo is not None else None

    def warm(self) -> None:
        """Load or train the classifier."""
        if self._model is None:
            data = safety_data_dir() if self.config.public_data else None
            qa = self._qa if self._qa is not None and self._qa.is_file() else None
            embedder: Any = self._embedder

            def embed(texts: Sequence[str]) -> Any:
                # embed_query caches, so retrieval reuses the vector of the customer's question.
                if len(texts) > 8:
                    return np.array(embedder.embed_documents(list(texts)))
                return np.array([embedder.embed_query(t) for t in texts])

            self._model = load(
                data,
                qa,
                cache_root().parent / "guards",
                embed if embedder else None,
                getattr(embedder, "id", "none"),
                ship=SHIPPED if self.config.public_data else None,
            )
            if self.config.public_data and not self._model.public:
                _warn_without_public_data()
            table()  # CC-CEDICT's entries, read now (about a second) rather than at the first Chinese message

    def _scores(self, turn: Turn) -> dict[str, Any]:
        self.warm()
        assert self._model is not None
        said = [m.content for m in turn.messages if m.role == "user"] or [""]
        users = said[-self.config.window :]
        if len(users) == 1:
            return {**self._model.scores(users)[0], "window": False, "text": users[0]}
        joined = "\n".join(users)
        # "Before" is the window as the previous turn read it, so its scores are usually still cached.
        previous = "\n".join(said[-self.config.window - 1 : -1])
        newest, window, before = self._model.scores([users[-1], joined, previous])
        if window[self.head] > before[self.head] + self.config.margin:
            if window[self.head] > newest[self.head]:
                return {**window, "window": True, "text": joined}
        return {**newest, "window": False, "text": users[-1]}

    async def scores(self, turn: Turn) -> dict[str, Any]:
        """Classifier scores for this turn (run off the event loop)."""
        return await asyncio.to_thread(self._scores, turn)


class HarmfulIntentConfig(IntentConfig):
    """Harmful-intent settings."""

    disguised_threshold: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="threshold for text the obfuscation guard decoded (base64, leetspeak, disemvowelled, ...): "
        "customers do not disguise honest questions, and decoded text scores lower than plain text",
    )
    review: bool = Field(
        default=True,
        description="ask the fine-tuned review model about text whose linear score could reach "
        "review_threshold, and decide on the mean of the two scores",
    )
    review_threshold: float = Field(
        default=0.74,
        ge=0.5,
        le=1,
        description="threshold for the mean of the linear and the review score; set for each retrained review "
        "model on our test rows (python bench/harm_review.py --bars), since its operating point moves with retraining",
    )
    sentences: int = Field(
        default=6,
        ge=0,
        le=20,
        description="also judge each sentence of a message of several on its own (at most this many parts; 0: "
        "off), so a request wrapped in harmless sentences (a story, a list of other tasks, a persona) is not "
        "diluted by them; self-harm is judged on the whole message only",
    )
    sentence_floor: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="judge the sentences apart only when the whole message's linear score is at least this: a "
        "message that reads plainly harmless as a whole is not taken apart, since a short sentence out of context "
        "can read as harm",
    )


def _opinion(linear: float, review: float | None, decoded: bool = False) -> str:
    if review is None:
        return ""
    return (
        f", linear {linear:.2f}, review {review:.2f}"
        if decoded
        else f", mean of linear {linear:.2f} and review {review:.2f}"
    )


class HarmfulIntentGuard(_IntentGuard):
    """Blocks requests for harm by category (English and Chinese); self-harm is answered with care and a human.
    A request that arrived disguised is held to the lower `disguised_threshold` (mismatched generalization)."""

    Config = HarmfulIntentConfig  # type: ignore[assignment]
    config: HarmfulIntentConfig
    head = "harmful"
    name = "harmful_intent"
    _review: review.ReviewModel | None = None

    def warm(self) -> None:
        """Load the classifier, and the review model when it is on and fits the classifier's data."""
        fresh = self._model is None
        super().warm()
        if fresh and self.config.review and self._model is not None:
            public = safety_data_dir() if self.config.public_data else None
            self._review = review.shipped(self._model.review_key, public is None)

    def _reviewer(self, s: dict[str, Any]) -> review.ReviewModel | None:
        """The review model when it gives a second opinion on the customer's own text (decoded text: see
        `_judge_decoded`), with a linear score the mean could lift past the bar."""
        if not self.config.review or s["harmful"] < 2 * self.config.review_threshold - 1:
            return None
        return self._review

    def _sentence_scores(self, text: str) -> dict[str, Any] | None:
        """The scores of the sentence of `text` that reads most harmful, when it has several (see `sentences`)."""
        parts = sentences(text, self.config.sentences) if self.config.sentences else []
        if not parts:
            return None
        self.warm()
        assert self._model is not None
        vectors: dict[str, Any] = {}
        plain = [p for p in parts if with_gloss(p) == p]
        if plain and self._embedder is not None:  # one batch: a third cheaper than one at a time
            vectors = dict(zip(plain, self._embedder.embed_documents(plain), strict=True))
        rows = self._model.scores(parts, vectors)
        i = max(range(len(parts)), key=lambda j: rows[j]["harmful"])
        return {**rows[i], "window": False, "text": parts[i]}

    async def _judge(self, s: dict[str, Any], decoded: bool, threshold: float) -> tuple[float, float, float | None]:
        """(score, the bar it must reach, the review model's score if it was asked) for one scored text."""
        if decoded:
            return await self._judge_decoded(s, threshold)
        reviewer = self._reviewer(s)
        if reviewer is None:
            return s["harmful"], threshold, None
        second = (await asyncio.to_thread(reviewer.score, [s["text"]]))[0]
        return (s["harmful"] + second) / 2, self.config.review_threshold, second

    async def _judge_decoded(self, s: dict[str, Any], threshold: float) -> tuple[float, float, float | None]:
        """Text decoded from a disguise is held to the stricter linear rule, and what that misses the review model
        may still block on its own at `review_threshold`: a disguise never lowers the scrutiny a request gets. (The
        mean cannot be used here: below the linear bar it could not reach the review bar.)"""
        if s["harmful"] >= threshold or not self.config.review or self._review is None:
            return s["harmful"], threshold, None
        second = (await asyncio.to_thread(self._review.score, [s["text"]]))[0]
        if second >= self.config.review_threshold:
            return second, self.config.review_threshold, second
        return s["harmful"], threshold, second

    async def check(self, turn: Turn) -> Verdict:
        s = await self.scores(turn)
        threshold = self.config.threshold
        if turn.decoded:
            threshold = min(threshold, self.config.disguised_threshold)
        category = s["category"] or "harmful"
        score, bar, second = await self._judge(s, turn.decoded, threshold)
        severe = severe_match(turn.text)
        if severe is not None:
            score, category = max(score, 0.95), severe[0]
        self_harm = max(s.get("self_harm", 0.0), score if category == "self_harm" else 0.0)
        where = (" across turns" if s["window"] else "") + (" in disguised text" if turn.decoded else "")
        opinion = _opinion(s["harmful"], second, turn.decoded)
        if s.get("self_harm", 0.0) >= threshold or (category == "self_harm" and score >= bar):
            return Verdict(
                self.name,
                True,
                self_harm,
                "self_harm",
                f"self-harm risk {self_harm:.2f}{where}{opinion}",
                message=CARE.say(language(turn)),
                handoff=True,
            )
        if score < bar and s["harmful"] >= self.config.sentence_floor:
            part = await asyncio.to_thread(self._sentence_scores, turn.text)
            if part is not None and part["category"] != "self_harm":
                p_score, p_bar, p_second = await self._judge(part, turn.decoded, threshold)
                if p_score >= p_bar:
                    s, score, bar, category = part, p_score, p_bar, part["category"] or "harmful"
                    where += " in one sentence"
                    opinion = _opinion(s["harmful"], p_second, turn.decoded)
        if score >= bar:
            lang = language(turn)
            topic = TOPICS.get(category, OTHER_TOPIC).say(lang)
            return Verdict(
                self.name,
                True,
                score,
                category,
                f"harmful intent {score:.2f} ({category}){where}{opinion}",
                message=HARMFUL.say(lang, topic=topic),
            )
        return Verdict(self.name, False, score, category, f"harmful intent {score:.2f}{opinion}")


# "Ignore my last message, ..." takes back the customer's own words; it is not an instruction to the bot, but the
# learned head reads "ignore ... previous ... message" as one (0.80 for "ignore my previous message, I found the serial
# number"). None of our jailbreak or harmful examples starts this way.
_RETRACTION = re.compile(
    r"^\s*(please\s+)?(ignore|disregard|forget|scratch|never\s*mind)\s+(that|my|what\s+i)\b"
    r"(\s+(last|previous|earlier|first|other))?\s*(message|msg|question|text|one|said|wrote|typed|asked)?\b"
    r"[^,.;:!?\n]{0,40}[,.;:!?-]*\s*",
    re.IGNORECASE,
)


class JailbreakGuard(_IntentGuard):
    """Competing objectives: role-play personas, prefix injection, refusal suppression, ignore-previous, fake
    system messages, system-prompt requests. A learned head, backed by the override patterns."""

    head = "jailbreak"
    name = "jailbreak"

    async def _without_retraction(self, s: dict[str, Any], text: str) -> float:
        """The learned score of a message that begins by taking back the customer's own earlier message, read
        without that clause (the patterns still read all of it); the score as it was otherwise."""
        retraction = _RETRACTION.match(text)
        if s["window"] or retraction is None or s["jailbreak"] < self.config.threshold:
            return float(s["jailbreak"])
        rest = text[retraction.end() :].strip()
        if not rest:
            return 0.0
        assert self._model is not None
        return float((await asyncio.to_thread(self._model.scores, [rest]))[0]["jailbreak"])

    async def check(self, turn: Turn) -> Verdict:
        s = await self.scores(turn)
        score, family = await self._without_retraction(s, turn.text), "learned"
        pattern = override_family(turn.text)
        if pattern is not None:
            score, family = max(score, 0.9), pattern
        if score >= self.config.threshold:
            return Verdict(
                self.name,
                True,
                score,
                "jailbreak",
                f"jailbreak {score:.2f} ({family})",
                message=INSTRUCTIONS.say(language(turn)),
            )
        return Verdict(self.name, False, score, "jailbreak", f"jailbreak {score:.2f}")


class TopicalConfig(IntentConfig):
    """Topical rail settings."""

    mode: Literal["decline", "allow"] = "decline"


class TopicalGuard(_IntentGuard):
    """Off-domain requests: decline kindly (default) or let them through to the no-knowledge answer."""

    Config = TopicalConfig  # type: ignore[assignment]
    config: TopicalConfig
    head = "offtopic"
    name = "topical"

    async def check(self, turn: Turn) -> Verdict:
        s = await self.scores(turn)
        score = s["offtopic"]
        if score >= self.config.threshold and self.config.mode == "decline":
            return Verdict(
                self.name,
                True,
                score,
                "topical",
                f"off-domain {score:.2f}",
                message=OFF_DOMAIN.say(language(turn)),
            )
        return Verdict(self.name, False, score, "topical", f"off-domain {score:.2f}")


class HandoffGuard(_IntentGuard):
    """Hands the conversation to a human when asked for, on strong frustration, or on repeated failure."""

    head = "human"
    name = "handoff"

    async def check(self, turn: Turn) -> Verdict:
        s = await self.scores(turn)
        failures = sum(NO_KNOWLEDGE.said_in(m.content) for m in turn.messages if m.role == "assistant")
        reasons = [
            r
            for r, hit in (
                ("asked for a human", s["human"] >= self.config.threshold),
                ("strong frustration", s.get("frustration", 0) >= self.config.threshold),
                ("repeated failure", failures >= 2),
            )
            if hit
        ]
        if reasons:
            return Verdict(
                self.name,
                False,
                0.0,
                "handoff",
                "; ".join(reasons),
                handoff=True,
                message=FRUSTRATED.say(language(turn)),
            )
        return Verdict(self.name, False, 0.0, "handoff", "no handoff needed")
