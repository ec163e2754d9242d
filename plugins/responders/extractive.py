"""The `extractive` responder: answers with the best passage's own sentences, cited. No model needed."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Passage, Turn

_WORD = re.compile(r"\w+")
log = logging.getLogger(__name__)


class ExtractiveResponder:
    """Answers with passage sentences: those closest in meaning to the question (see `extractive_answer`)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        sentences: int = Field(default=2, ge=1, le=10)
        # meaning: by the index embedder's cosine (better answers; 15-50 ms a turn on 2 cores until the sentence
        # cache holds the popular passages, then about the question's embedding);
        # words: the top passage's sentences sharing most words with the question (no embedding at all).
        choose: Literal["meaning", "words"] = "meaning"

    name = "extractive"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        self._embedder = getattr(ctx, "embedder", None) if config.choose == "meaning" else None

    async def stream(self, turn: Turn, passages: Sequence[Passage]) -> AsyncIterator[str]:
        """Yield the chosen sentences word by word, ending with the citation of their passage."""
        answer = await asyncio.to_thread(extractive_answer, turn.text, passages, self.config.sentences, self._embedder)
        for word in answer.split(" ") if answer else []:
            yield word + " "


def extractive_answer(question: str, passages: Sequence[Passage], sentences: int = 2, embedder: Any = None) -> str:
    """The passage sentences that answer `question`, cited.

    With an embedder (the index's): the passage holding the sentence closest in meaning to the question (cosine of
    their vectors, less `RANK_PRIOR` per retrieval rank below the first), and its `sentences` closest sentences in
    the passage's order, cited as that passage's [n].
    Without one, or when embedding fails: the top passage's sentences that share most words with the question,
    cited as [1]. On the demo QA the first picks better answers (held-out token F1 0.337 vs 0.288 for two
    sentences; train 0.346 vs 0.305; `python bench/answer_choice.py --no-model`).
    """
    if not passages:
        return ""
    if embedder is not None:
        try:
            if meant := _by_meaning(question, passages, sentences, embedder):
                return meant
        except Exception as exc:  # an embedder failing must not cost the customer the answer
            log.warning("extractive answer: embedding failed (%s); choosing by shared words", exc)
    query = {w.lower() for w in _WORD.findall(question)}
    found = passage_sentences(passages[0])
    ranked = sorted(found, key=lambda s: -len(query & {w.lower() for w in _WORD.findall(s)}))
    chosen = [s for s in found if s in ranked[:sentences]]
    return " ".join(chosen) + " [1]"


_CACHE: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (embedder, passage text) -> sentence vectors
_CACHE_SIZE = 512  # passages; popular articles come back all day, so most turns embed only the question
_CACHE_LOCK = threading.Lock()
# Retrieval's order still counts: each rank down costs this much cosine (0.02-0.08 tried; 0.03 best on the train
# questions of the demo QA, bench/answer_choice.py --no-model).
RANK_PRIOR = 0.03


def _sentence_vectors(passage: Passage, found: list[str], embedder: Any) -> np.ndarray:
    """The unit vectors of a passage's sentences, from the cache when this embedder has seen the passage."""
    key = (str(getattr(embedder, "id", id(embedder))), passage.text)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    raw = np.asarray(embedder.embed_documents(found), dtype=np.float32).reshape(len(found), -1)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    vectors: np.ndarray = (raw / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    with _CACHE_LOCK:
        _CACHE[key] = vectors
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return vectors


def _by_meaning(question: str, passages: Sequence[Passage], sentences: int, embedder: Any) -> str | None:
    per_passage = [passage_sentences(p) for p in passages]
    found = [(n, s) for n, sents in enumerate(per_passage, 1) for s in sents]
    if not found:
        return None
    query = np.asarray(embedder.embed_query(question), dtype=np.float32)
    query = query / (np.linalg.norm(query) or 1.0)
    pairs = zip(passages, per_passage, strict=True)
    vectors = np.concatenate([_sentence_vectors(p, sents, embedder) for p, sents in pairs if sents])
    cosine = vectors @ query
    rank = np.array([n for n, _ in found], dtype=np.float32)
    best = found[int((cosine - RANK_PRIOR * (rank - 1)).argmax())][0]
    mine = [i for i, (n, _) in enumerate(found) if n == best]
    chosen = sorted(sorted(mine, key=lambda i: -cosine[i])[:sentences])
    return " ".join(found[i][1] for i in chosen) + f" [{best}]"


def passage_sentences(passage: Passage) -> list[str]:
    """A passage's sentences and list items, without its first line (the title and heading trail)."""
    body = passage.text.split("\n", 1)[-1]
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", body) if len(s.strip()) > 3]
