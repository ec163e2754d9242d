"""Output and passage guards: grounding, over-refusal repair, system-prompt leakage, harmful output, and
indirect prompt injection inside retrieved passages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Draft, Passage, Turn, Verdict
from bot.language import PROMPT_LEAK, language
from plugins.guards.intent import IntentConfig, _IntentGuard
from plugins.guards.override import override_family
from plugins.responders.extractive import extractive_answer
from plugins.responders.prompt import SYSTEM

_WORD = re.compile(r"[^\W\d_]{4,}|\d+", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w\[])\d+(?:[.,:–-]\d+)*(?![\w\]])")
_SENT = re.compile(r"(?<=[.!?。！？])\s+|\n+")
_CITE = re.compile(r"\[\d+\]")
STOP = frozenset(
    "this that with from your have will just they them then than what when where which about into "
    "also only some more most very here there were been being does doing make made".split()
)
REFUSAL = re.compile(
    r"\b(i('m| am) (sorry|unable|not able)|i can('|no)t (help|assist|provide)|as an ai\b|"
    r"i (won't|will not|must decline)|unable to (help|assist))",
    re.IGNORECASE,
)


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} - STOP


def support(words: set[str], figures: Sequence[str], text: str, text_words: set[str]) -> float:
    """How far `text` supports a sentence: the share of its content `words` among `text_words`, or -1 when a
    figure it states (`figures`: days, fees, percentages, where small models invent most) is not in `text`.
    Grounding reads a sentence against all passages at once; `citations` against each passage."""
    if any(f not in text for f in figures):
        return -1.0
    return len(words & text_words) / len(words) if words else 0.0


async def _extract(question: str, passages: Sequence[Passage], embedder: Any) -> str:
    """The cited extract that replaces a draft (embedding the sentences off the event loop)."""
    return await asyncio.to_thread(extractive_answer, question, passages, 2, embedder)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GroundingGuard:
    """Checks that each answer sentence is supported by the passages; an ungrounded answer is replaced by an
    extractive, cited one (or the policy's "I don't know" when there is no passage)."""

    class Config(_Strict):
        min_overlap: float = Field(default=0.5, ge=0, le=1, description="share of a sentence's words in passages")
        max_unsupported: float = Field(default=0.5, ge=0, le=1, description="share of sentences allowed unsupported")
        min_own_words: int = Field(
            default=3,
            ge=0,
            description="content words a draft must add to the question's own; with fewer it is an echo or an empty "
            "answer ('Kestrel Home. [1]', 'Yes, I can.') and is replaced by the cited extract",
        )

    name = "grounding"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        self._embedder = getattr(ctx, "embedder", None)  # the fallback extract picks sentences by meaning with it

    async def check_output(self, turn: Turn, draft: Draft, passages: Sequence[Passage]) -> Verdict:
        # Citation marks are not words of the answer: "Kestrel Home. [1] [2] [3]" says two words.
        answer_words, question_words = _words(_CITE.sub(" ", draft.text)), _words(turn.text)
        if passages and len(answer_words - question_words) < max(self.config.min_own_words, len(answer_words) // 3):
            # Mostly the customer's own words, or next to none: an echo, a bare "yes" or nothing is not an answer.
            return Verdict(
                self.name,
                False,
                1.0,
                "grounding",
                "the draft only restates the question or says next to nothing: replaced by an extractive answer",
                rewrite=await _extract(turn.text, passages, self._embedder) or None,
            )
        sentences = [s for s in _SENT.split(draft.text) if _words(s)]
        if not sentences:
            return Verdict(self.name, False, 0.0, "grounding", "nothing to check")
        source = set().union(*(_words(p.text) for p in passages)) if passages else set()
        passage_text = " ".join(p.text for p in passages)
        unsupported = [
            s
            for s in sentences
            if support(_words(s), _NUMBER.findall(s), passage_text, source) < self.config.min_overlap
        ]
        share = len(unsupported) / len(sentences)
        if share <= self.config.max_unsupported:
            return Verdict(
                self.name,
                False,
                share,
                "grounding",
                f"{len(sentences) - len(unsupported)}/{len(sentences)} sentences supported",
            )
        fallback = await _extract(turn.text, passages, self._embedder)
        return Verdict(
            self.name,
            False,
            share,
            "grounding",
            f"{len(unsupported)}/{len(sentences)} sentences unsupported: replaced by an extractive answer",
            rewrite=fallback or None,
        )


class OverRefusalGuard:
    """Helpfulness: a refusal of an in-domain question that has good passages becomes a grounded answer."""

    class Config(_Strict):
        pass

    name = "over_refusal"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        self._embedder = getattr(ctx, "embedder", None)

    async def check_output(self, turn: Turn, draft: Draft, passages: Sequence[Passage]) -> Verdict:
        if passages and REFUSAL.search(draft.text):
            return Verdict(
                self.name,
                False,
                0.0,
                "helpfulness",
                "refusal of an answerable question replaced",
                rewrite=await _extract(turn.text, passages, self._embedder),
            )
        return Verdict(self.name, False, 0.0, "helpfulness", "not a refusal")


class PromptLeakGuard:
    """Blocks answers that repeat the system prompt (any 6 consecutive words of it)."""

    class Config(_Strict):
        ngram: int = Field(default=6, ge=3, le=20)

    name = "prompt_leak"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        responder = getattr(getattr(ctx, "settings", None), "responder", None)
        system = (responder.config.get("system_prompt") if responder else None) or SYSTEM
        words = re.findall(r"\w+", system.lower())
        n = config.ngram
        self._shingles = {" ".join(words[i : i + n]) for i in range(max(0, len(words) - n + 1))}

    async def check_output(self, turn: Turn, draft: Draft, passages: Sequence[Passage]) -> Verdict:
        words = re.findall(r"\w+", draft.text.lower())
        n = self.config.ngram
        hits = sum(" ".join(words[i : i + n]) in self._shingles for i in range(max(0, len(words) - n + 1)))
        if hits:
            return Verdict(
                self.name,
                True,
                1.0,
                "prompt_leak",
                f"{hits} system-prompt phrase(s) in the answer",
                message=PROMPT_LEAK.say(language(turn)),
            )
        return Verdict(self.name, False, 0.0, "prompt_leak", "no system-prompt text")


_CLAUSE = re.compile(r"[.!?;:,。！？；：，]+\s*|\n+|\s+-\s+|^-\s+")  # answers join list items and clauses


def _plain(text: str) -> str:
    """Lower case, citation markers and punctuation dropped, whitespace collapsed: for verbatim-quote checks."""
    # Citation marks go first: in one alternation, the punctuation run before "[1]" would swallow its bracket and
    # leave the "1" behind, so a quoted clause that ends in its citation no longer read as a quote.
    return " ".join(re.sub(r"[^\w]+", " ", _CITE.sub(" ", text.lower())).split())


class HarmfulOutputConfig(IntentConfig):
    """The learned guards' settings, plus whether verbatim quotes of the knowledge base are scored."""

    trust_quotes: bool = Field(
        default=True,
        description="sentences quoted verbatim from the retrieved passages are the operator's own knowledge base "
        "(already screened for planted instructions): only the rest of the answer is scored",
    )


class HarmfulOutputGuard(_IntentGuard):
    """Blocks answers the harm classifier flags (a second line of defence behind the input guards).

    What it judges is what the model wrote. A clause the answer quotes word for word from a retrieved passage is
    the operator's own help text: "where can I see the login history for my account" was refused because the
    article's list of what a data export holds (sign-ins, sessions, addresses) scored 0.53. With `trust_quotes`
    (default) quoted clauses are not scored; an answer made only of quotes passes."""

    Config = HarmfulOutputConfig
    head = "harmful"
    name = "harmful_output"

    def __init__(self, config: HarmfulOutputConfig, ctx: Any = None) -> None:
        super().__init__(config, ctx)
        self.config: HarmfulOutputConfig = config

    async def check_output(self, turn: Turn, draft: Draft, passages: Sequence[Passage]) -> Verdict:
        self.warm()
        assert self._model is not None
        text = draft.text
        if self.config.trust_quotes and passages:
            sources = [_plain(p.text) for p in passages]
            own = [s for s in _CLAUSE.split(draft.text) if (q := _plain(s)) and not any(q in src for src in sources)]
            if not own:
                return Verdict(self.name, False, 0.0, "harmful_output", "the answer only quotes the knowledge base")
            text = "\n".join(own)
        score = self._model.scores([text])[0]["harmful"]
        if score >= self.config.threshold:
            return Verdict(self.name, True, score, "harmful_output", f"harmful content {score:.2f} in answer")
        return Verdict(self.name, False, score, "harmful_output", f"harmful content {score:.2f}")


class InjectionGuard(_IntentGuard):
    """Indirect prompt injection: instructions planted in knowledge passages are cut out before the model
    reads them (sentence by sentence, so the rest of the passage still helps)."""

    Config = IntentConfig
    head = "jailbreak"
    name = "injection"

    async def check_passages(self, turn: Turn, passages: Sequence[Passage]) -> tuple[list[Passage], Verdict]:
        self.warm()
        assert self._model is not None
        cleaned, removed = [], 0
        # One score per passage, its sentence vector read from the index when our embedder made it (embedding a
        # 900-character passage costs about 60 ms); only a suspicious passage is examined sentence by sentence.
        own = getattr(self._embedder, "id", None)
        stored = {p.text: p.vector for p in passages if p.vector is not None and p.embedder == own}
        whole = self._model.scores([p.text for p in passages], stored) if passages else []
        for p, score in zip(passages, whole, strict=True):
            sentences = [s for s in _SENT.split(p.text) if s.strip()]
            flagged = {s for s in sentences if override_family(s) is not None}
            if score["jailbreak"] >= self.config.threshold / 2:
                flagged |= {
                    s
                    for s, sc in zip(sentences, self._model.scores(sentences), strict=True)
                    if sc["jailbreak"] >= self.config.threshold
                }
            keep = [s for s in sentences if s not in flagged]
            removed += len(sentences) - len(keep)
            if keep:
                cleaned.append(replace(p, text="\n".join(keep), vector=None, embedder="") if flagged else p)
        if removed:
            return cleaned, Verdict(self.name, False, 0.3, "injection", f"removed {removed} injected sentence(s)")
        return cleaned, Verdict(self.name, False, 0.0, "injection", "no injection in passages")
