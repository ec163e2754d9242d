"""Hybrid retrieval: vector and BM25 candidates fused by reciprocal rank, then an optional reranker."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from bot.contracts import Embedder, Passage
from knowledge.rerank import Reranker
from knowledge.search import Filters, Hit, IndexView

log = logging.getLogger(__name__)
Mode = Literal["hybrid", "vector", "bm25"]


@dataclass(frozen=True)
class Fusion:
    """How candidates are gathered and fused."""

    mode: Mode = "hybrid"
    candidates: int = 30  # per method, before fusion
    rrf_k: int = 10
    vector_weight: float = 1.0
    bm25_weight: float = 0.7


def passage(hit: Hit, info: dict[str, Any], embedder: str = "") -> Passage:
    """A Passage citing its document; `score` is the cosine similarity (what Policy.min_score is about); it keeps
    the chunk's stored vector, made by `embedder`."""
    meta = dict(hit.metadata)
    return Passage(
        id=hit.id,
        text=hit.text,
        score=hit.cosine if hit.cosine is not None else 0.0,
        doc_id=str(meta.get("doc_id", "")),
        title=str(meta.get("title", "")),
        section=str(meta.get("section", "")),
        source=str(meta.get("source", "")),
        metadata={**meta, **info},
        url=str(meta.get("url") or meta.get("source", "")),
        vector=hit.vector,
        embedder=embedder if hit.vector is not None else "",
    )


def fuse(ranked: Sequence[tuple[Sequence[str], float]], rrf_k: int) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each list adds weight / (rrf_k + rank) to its ids; best first."""
    scores: dict[str, float] = {}
    for ids, weight in ranked:
        for rank, cid in enumerate(ids, 1):
            scores[cid] = scores.get(cid, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _reranked(query: str, passages: list[Passage], reranker: Reranker | None) -> list[Passage]:
    """The reranker's order; anything it drops follows in fused order, so the context is never emptied."""
    if reranker is None or not passages:
        return passages
    try:
        chosen = list(reranker.rerank(query, passages))
    except Exception as exc:  # a broken reranker degrades to fused order, it never breaks the turn
        log.warning("reranker %s failed (%s); using fused order", getattr(reranker, "name", "?"), exc)
        return passages
    known = {p.id for p in passages}
    chosen = [p for p in chosen if p.id in known]
    if not chosen:
        log.warning("reranker %s returned no passages; using fused order", getattr(reranker, "name", "?"))
        return passages
    picked = {p.id for p in chosen}
    return chosen + [p for p in passages if p.id not in picked]


def hybrid_search(
    view: IndexView,
    embedder: Embedder,
    query: str,
    k: int,
    fusion: Fusion = Fusion(),
    filters: Filters | None = None,
    reranker: Reranker | None = None,
) -> list[Passage]:
    """Top-k passages for `query` from one index version.

    Args:
        view: the loaded index version.
        embedder: embeds the query (must be the index's embedder).
        query: the customer's text.
        k: passages to return.
        fusion: which methods run and how they are fused.
        filters: document metadata that must match (e.g. {"language": "en", "category": "billing"}).
        reranker: optional; reorders the fused candidates.

    Returns:
        Passages in fused (or reranked) order, each scored by cosine similarity, with ranks in metadata.
    """
    vector = embedder.embed_query(query)
    n = max(fusion.candidates, k)
    by_vector = view.vector(vector, n, filters) if fusion.mode != "bm25" else []
    by_words = view.keyword(query, n, filters) if fusion.mode != "vector" else []
    vrank = {h.id: i for i, h in enumerate(by_vector, 1)}
    brank = {cid: (i, score) for i, (cid, score) in enumerate(by_words, 1)}
    fused = fuse(
        [([h.id for h in by_vector], fusion.vector_weight), ([c for c, _ in by_words], fusion.bm25_weight)],
        fusion.rrf_k,
    )
    pool = fused[: max(k, fusion.candidates if reranker else k)]
    cosines = {h.id: h.cosine for h in by_vector}
    bm25_only = any(cid not in cosines for cid, _ in pool)  # their cosine is computed from stored vectors
    scored = view.fetch([cid for cid, _ in pool], vector if bm25_only else None)
    hits = {cid: replace(h, cosine=cosines[cid]) if cid in cosines else h for cid, h in scored.items()}
    passages = []
    for cid, rrf in pool:
        if cid not in hits:
            continue
        info = {"rrf": round(rrf, 6), "vector_rank": vrank.get(cid, 0), "bm25_rank": brank.get(cid, (0, 0.0))[0]}
        info["bm25"] = round(brank.get(cid, (0, 0.0))[1], 4)
        passages.append(passage(hits[cid], info, embedder.id))
    return _reranked(query, passages, reranker)[:k]
