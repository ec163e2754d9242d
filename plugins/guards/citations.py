"""The `citations` output plugin (helpfulness): the answer a customer reads is tidy and cited.

A 135M model asked for "two or three short sentences, cite [n]" often forgets the citation, repeats a sentence
("You can share your camera with your friends." three times) or runs out of tokens mid-sentence. This plugin
works on the final draft, after the other output guards:

- a sentence that repeats an earlier one (word-set Jaccard >= `repeat_similarity`) is dropped;
- when the draft stopped at the responder's token limit, its unfinished last sentence (and a list marker or
  lead-in left dangling by it) is dropped, so the answer never ends mid-word;
- a citation of a passage that does not exist is removed, and each sentence without a citation gets the passage
  that supports it best (at least `min_overlap` of its words, and every figure it states), as [n] before its
  final punctuation. A sentence no passage supports stays uncited: a citation is a claim about the source.

It never blocks and never changes a sentence's words; what it did is its verdict's reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Draft, Passage, Turn, Verdict
from bot.errors import PluginError
from bot.registry import validate_config
from plugins.guards.output import _NUMBER, _words, support

# Sentences and the whitespace between them (kept); Chinese full stops need no space after them.
_PIECES = re.compile(r"((?<=[.!?])\s+|(?<=[。！？])[^\S\n]*|\n+)")
_CITE = re.compile(r"\s*\[(\d{1,3})\]")
_FINAL = re.compile(r"[.!?。！？:;][)\"'”’*_]*$")  # how a finished sentence ends (before its citations)
_STOP = re.compile(r"[.!?。！？:;]+$")  # a citation goes before these
_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+|^\s*\d{1,2}[.)]$")  # a list item's number or bullet
_TABLE = re.compile(r"^\s*(?:\||#|```)")  # table rows, headings and code fences are not cited (nor "...:" lead-ins)
_DANGLING = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s*$|:\s*$")  # a bare list marker, or a lead-in ending ":"


def responder_limit(settings: Any) -> int | None:
    """The configured responder's token limit (`max_new_tokens` or `max_tokens`), or None when it has none."""
    spec = getattr(settings, "responder", None)
    if spec is None:
        return None
    try:
        config = validate_config("responder", spec)
    except PluginError:
        return None
    for key in ("max_new_tokens", "max_tokens"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _content(piece: str) -> set[str]:
    """A sentence's content words, without its list marker and citations."""
    return _words(_MARKER.sub("", _CITE.sub("", piece), count=1))


def _sentences(text: str) -> list[tuple[str, str]]:
    """(sentence, whitespace after it) pairs that join back into `text`: a citation after a sentence's stop
    stays with it ("Sentence. [1]"), and so does a list item's number ("1." is split off by the sentence rule)."""
    pieces = _PIECES.split(text)
    sentences, gaps = pieces[0::2], [*pieces[1::2], ""]
    for i in range(len(sentences) - 1, 0, -1):
        if sentences[i].strip() and not _CITE.sub("", sentences[i]).strip():
            sentences[i - 1] += gaps[i - 1] + sentences.pop(i)
            gaps.pop(i - 1)
    for i in range(len(sentences) - 2, -1, -1):
        if _MARKER.fullmatch(sentences[i].strip() + " ") and "\n" not in gaps[i]:
            sentences[i] += gaps[i] + sentences.pop(i + 1)
            gaps.pop(i)
    return list(zip(sentences, gaps, strict=True))


def _similar(a: set[str], b: set[str], bar: float) -> bool:
    return bool(a) and bool(b) and len(a & b) / len(a | b) >= bar


class CitationsGuard:
    """Helpfulness: drops repeated and unfinished sentences and cites each supported sentence's passage."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        dedupe: bool = True
        repeat_similarity: float = Field(default=0.8, gt=0, le=1, description="word-set Jaccard of a repeat")
        trim_unfinished: bool = True
        cite: bool = True
        min_overlap: float = Field(default=0.5, ge=0, le=1, description="share of a sentence's words in a passage")

    name = "citations"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        self._limit = responder_limit(getattr(ctx, "settings", None))

    async def check_output(self, turn: Turn, draft: Draft, passages: Sequence[Passage]) -> Verdict:
        kept = _sentences(draft.text)
        done: list[str] = []
        if self.config.dedupe:
            kept, n = self._dedupe(kept)
            if n:
                done.append(f"dropped {n} repeated sentence(s)")
        if self.config.trim_unfinished and self._limit and draft.tokens >= self._limit:
            trimmed = self._trim(kept)
            if len(trimmed) < len(kept):
                done.append("dropped the unfinished end")
                kept = trimmed
        if self.config.cite:
            valid = lambda m: m.group(0) if 1 <= int(m.group(1)) <= len(passages) else ""  # noqa: E731
            before = sum(len(_CITE.findall(s)) for s, _ in kept)
            kept = [(_CITE.sub(valid, s), g) for s, g in kept]
            if dropped := before - sum(len(_CITE.findall(s)) for s, _ in kept):
                done.append(f"removed {dropped} citation(s) of passages that do not exist")
            # A draft that cites keeps its own placement; one that cites nothing gets a citation per sentence.
            if not any(_CITE.search(s) for s, _ in kept):
                vocab = [_words(p.text) for p in passages]  # once per answer, not once per sentence
                kept = [(self._cite(s, passages, vocab), g) for s, g in kept]
                if cited := sum(bool(_CITE.search(s)) for s, _ in kept):
                    done.append(f"cited {cited} sentence(s)")
        text = "".join(s + g for s, g in kept).strip()
        if not text or text == draft.text.strip():
            return Verdict(self.name, False, 0.0, "helpfulness", "answer kept as written")
        return Verdict(self.name, False, 0.0, "helpfulness", "; ".join(done), rewrite=text)

    def _dedupe(self, kept: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
        """Without the sentences that repeat an earlier one, and how many went."""
        out: list[tuple[str, str]] = []
        seen: list[set[str]] = []
        for sentence, gap in kept:
            words = _content(sentence)
            if not any(_similar(words, other, self.config.repeat_similarity) for other in seen):
                seen.append(words)
                out.append((sentence, gap))
        return out, len(kept) - len(out)

    @staticmethod
    def _trim(kept: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Without the last sentence when it is unfinished, and without a list marker or lead-in it leaves."""
        out = [(s, g) for s, g in kept if s.strip()]
        if len(out) < 2 or _FINAL.search(_CITE.sub("", out[-1][0]).rstrip()):
            return kept
        out.pop()
        while len(out) > 1 and _DANGLING.search(out[-1][0]):
            out.pop()
        return out

    def _cite(self, sentence: str, passages: Sequence[Passage], vocab: list[set[str]]) -> str:
        """The sentence with its best-supporting passage cited before its final punctuation (if one supports it);
        `vocab` holds each passage's content words."""
        words = _content(sentence)
        if not words or not passages or _TABLE.match(sentence) or sentence.rstrip(" *").endswith(":"):
            return sentence
        figures = _NUMBER.findall(_MARKER.sub("", sentence, count=1))
        shares = [support(words, figures, p.text, pw) for p, pw in zip(passages, vocab, strict=True)]
        best = max(range(len(shares)), key=shares.__getitem__)
        if shares[best] <= 0 or shares[best] < self.config.min_overlap:
            return sentence
        body = sentence.rstrip()
        stop = _STOP.search(body)
        at = stop.start() if stop else len(body)
        return f"{body[:at]} [{best + 1}]{body[at:]}{sentence[len(body) :]}"
