"""BM25 keyword search (bm25s), persisted per version and updated incrementally from stored token ids."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # PyStemmer is optional: without it BM25 matches exact words only
        return None


def _bm25s() -> Any:
    """The bm25s module, its logger quietened: bm25s sets it to DEBUG on import, which put "Building index from
    IDs" on the console of every first start."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, English-stopword-free, stemmed words (the same for chunks and queries)."""
    bm25s = _bm25s()

    out = bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)
    return [list(t) for t in out]  # type: ignore[union-attr]


class TokenStore:
    """Token ids per chunk plus the vocabulary, so a rebuild tokenizes only new chunks."""

    def __init__(self, vocab: list[str] | None = None, tokens: dict[str, np.ndarray] | None = None) -> None:
        self.vocab = vocab or []
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.tokens = tokens or {}

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Tokenize and store chunks (replacing any stored under the same id)."""
        for cid, words in zip(ids, tokenize(texts), strict=True):
            row = []
            for w in words:
                if w not in self.index:
                    self.index[w] = len(self.vocab)
                    self.vocab.append(w)
                row.append(self.index[w])
            self.tokens[cid] = np.asarray(row, dtype=np.int32)

    def keep(self, ids: Sequence[str]) -> TokenStore:
        """A store holding only `ids` (the live chunks of a new version), sharing the vocabulary."""
        return TokenStore(self.vocab, {cid: self.tokens[cid] for cid in ids if cid in self.tokens})

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ids with no stored tokens."""
        return [cid for cid in ids if cid not in self.tokens]

    def save(self, folder: Path) -> None:
        """Write tokens.npz and vocab.json into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        ids = list(self.tokens)
        lengths = np.asarray([len(self.tokens[c]) for c in ids], dtype=np.int64)
        flat = np.concatenate([self.tokens[c] for c in ids]) if ids else np.zeros(0, np.int32)
        np.savez(folder / "tokens.npz", flat=flat, lengths=lengths)
        (folder / "tokens.json").write_text(json.dumps({"ids": ids, "vocab": self.vocab}, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> TokenStore:
        """Read a store written by `save` (an empty store when there is none)."""
        try:
            meta = json.loads((folder / "tokens.json").read_text())
            arrays = np.load(folder / "tokens.npz")
        except (OSError, ValueError):
            return cls()
        parts = np.split(arrays["flat"], np.cumsum(arrays["lengths"])[:-1]) if len(meta["ids"]) else []
        return cls(list(meta["vocab"]), dict(zip(meta["ids"], parts, strict=True)))


class LexicalIndex:
    """A bm25s index over one version's live chunks, in a fixed chunk order."""

    def __init__(self, model: Any, ids: list[str]) -> None:
        self.model, self.ids = model, ids

    @classmethod
    def build(cls, store: TokenStore, ids: Sequence[str]) -> LexicalIndex:
        """Score the live chunks `ids` from stored token ids (no re-tokenizing)."""
        bm25s = _bm25s()
        model = bm25s.BM25()
        vocab = {t: i for i, t in enumerate(store.vocab)}
        rows = [store.tokens[c].tolist() for c in ids]
        if not rows or not vocab:
            vocab = vocab or {"": 0}
            rows = rows or [[0]]
        model.index((rows, vocab), show_progress=False)
        return cls(model, list(ids))

    def save(self, folder: Path) -> None:
        """Persist beside the version's manifest."""
        self.model.save(str(folder / "bm25"), show_progress=False)
        (folder / "bm25" / "chunk_ids.json").write_text(json.dumps(self.ids, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """Open a persisted index (memory-mapped)."""
        bm25s = _bm25s()
        model = bm25s.BM25.load(str(folder / "bm25"), mmap=True, show_progress=False)
        ids = json.loads((folder / "bm25" / "chunk_ids.json").read_text())
        return cls(model, ids)

    def search(self, query: str, n: int, mask: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Up to `n` (chunk id, BM25 score) pairs with a positive score, best first; `mask` limits the chunks."""
        words = [w for w in tokenize([query])[0] if w in self.model.vocab_dict]
        if not words or not self.ids:
            return []
        scores = np.asarray(self.model.get_scores(words))
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        n = min(n, int((scores > 0).sum()))
        if n <= 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top]
