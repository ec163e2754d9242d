"""Hybrid retrieval: persisted BM25, reciprocal rank fusion, cosine scores, filters, citations, reranker fallback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.config import PluginSpec
from bot.contracts import Passage
from bot.errors import PluginError
from knowledge.embedder import HashingEmbedder
from knowledge.hybrid import Fusion, fuse, hybrid_search
from knowledge.lexical import LexicalIndex
from knowledge.rerank import load_reranker
from knowledge.store import KnowledgeStore

DOCS = {
    "reset.md": "---\nid: reset\ntitle: Reset a password\ncategory: accounts\nlanguage: en\n"
    "url: https://help.example/reset\n---\n# Reset a password\n\n## Request a link\n\n"
    "Tap Forgot password and we email a reset link valid for thirty minutes.\n",
    "ship.md": "---\nid: ship\ntitle: Shipping costs\ncategory: orders\nlanguage: en\n---\n# Shipping costs\n\n"
    "Standard shipping costs 4.95 and takes three to five working days.\n",
    "versand.md": "---\nid: versand\ntitle: Versandkosten\ncategory: orders\nlanguage: de\n---\n# Versandkosten\n\n"
    "Standard shipping nach Deutschland kostet 5.95 und dauert drei Tage.\n",
    "error.md": "---\nid: error\ntitle: Hub error codes\ncategory: devices\nlanguage: en\n---\n# Hub error codes\n\n"
    "Code E-417 means the hub cannot reach the cloud; restart the router.\n",
}


@pytest.fixture()
def store(tmp_path: Path) -> KnowledgeStore:
    kb = tmp_path / "kb"
    kb.mkdir()
    for name, text in DOCS.items():
        (kb / name).write_text(text)
    s = KnowledgeStore(tmp_path / "index", "kb", HashingEmbedder(HashingEmbedder.Config()))
    s.rebuild([kb])
    return s


class Reverse:
    """Honest reranker: reverses the candidates."""

    name = "reverse"

    def rerank(self, query: str, passages: Sequence[Passage]) -> list[Passage]:
        return list(reversed(passages))


class Nothing:
    """Honest reranker that finds nothing relevant."""

    name = "nothing"

    def rerank(self, query: str, passages: Sequence[Passage]) -> list[Passage]:
        return []


class Broken:
    """A reranker that raises."""

    name = "broken"

    def rerank(self, query: str, passages: Sequence[Passage]) -> list[Passage]:
        raise RuntimeError("model crashed")


def test_rrf_rewards_agreement_and_respects_weights() -> None:
    fused = fuse([(["a", "b", "c"], 1.0), (["c", "b", "d"], 1.0)], rrf_k=10)
    assert [cid for cid, _ in fused][:2] == ["b", "c"] or [cid for cid, _ in fused][:2] == ["c", "b"]
    assert [cid for cid, _ in fuse([(["a"], 1.0), (["d"], 0.5)], rrf_k=10)] == ["a", "d"]


def test_bm25_is_persisted_with_the_version_and_loaded_once(store: KnowledgeStore) -> None:
    folder = store.versions.path(store.current_version() or "")
    assert (folder / "bm25" / "chunk_ids.json").exists() and (folder / "tokens.npz").exists()
    view = store.view()
    lexical = view.lexical
    hybrid_search(view, store.embedder, "error code", 2)
    assert store.view().lexical is lexical and isinstance(lexical, LexicalIndex)
    assert view.keyword("E-417", 1)[0][0].startswith("error#")


def test_building_bm25_logs_nothing_below_warning(caplog: pytest.LogCaptureFixture) -> None:
    from knowledge.lexical import TokenStore

    tokens = TokenStore()
    tokens.add(["c1"], ["reset the hub"])  # bm25s sets its logger to DEBUG on import; we quieten it
    with caplog.at_level(logging.DEBUG):
        LexicalIndex.build(tokens, ["c1"])
    assert [r for r in caplog.records if r.name.startswith("bm25s")] == []


def test_passages_carry_their_stored_vector_and_the_embedder_that_made_it(store: KnowledgeStore) -> None:
    import numpy as np

    for mode in ("hybrid", "bm25"):  # bm25-only hits are fetched without a vector search
        passages = hybrid_search(store.view(), store.embedder, "shipping costs", 3, Fusion(mode=mode))
        assert passages and all(p.embedder == store.embedder.id for p in passages)
        made = np.asarray(store.embedder.embed_documents([p.text for p in passages]))
        assert np.allclose(np.stack([p.vector for p in passages]), made, atol=1e-6)


def test_passages_carry_cosine_score_fusion_ranks_and_citation(store: KnowledgeStore) -> None:
    passages = hybrid_search(store.view(), store.embedder, "reset link for my password", 3)
    top = passages[0]
    assert top.doc_id == "reset" and top.title == "Reset a password" and top.section == "Request a link"
    assert top.url == "https://help.example/reset" and top.source == "reset.md"
    assert 0.0 < top.score <= 1.0 and top.metadata["vector_rank"] >= 1 and top.metadata["bm25_rank"] >= 1
    assert top.metadata["rrf"] > 0
    assert passages[-1].url == passages[-1].source or passages[-1].url.startswith("https://")


def test_unrelated_question_scores_below_the_policy_threshold(store: KnowledgeStore) -> None:
    passages = hybrid_search(store.view(), store.embedder, "zebra giraffe elephant", 3)
    assert all(p.score < 0.2 for p in passages)


def test_metadata_filters_limit_language_and_category(store: KnowledgeStore) -> None:
    view = store.view()
    german = hybrid_search(view, store.embedder, "shipping costs", 3, filters={"language": "de"})
    assert {p.doc_id for p in german} == {"versand"}
    orders = hybrid_search(view, store.embedder, "shipping costs", 5, filters={"category": ["orders"]})
    assert {p.doc_id for p in orders} == {"ship", "versand"}
    assert hybrid_search(view, store.embedder, "shipping", 3, filters={"category": "nope"}) == []


def test_modes_vector_only_and_bm25_only(store: KnowledgeStore) -> None:
    view = store.view()
    bm25 = hybrid_search(view, store.embedder, "E-417", 2, Fusion(mode="bm25"))
    assert bm25[0].doc_id == "error" and all(p.metadata["vector_rank"] == 0 for p in bm25)
    vec = hybrid_search(view, store.embedder, "hub error code", 2, Fusion(mode="vector"))
    assert all(p.metadata["bm25_rank"] == 0 for p in vec)


def test_reranker_order_is_used_and_an_empty_or_broken_one_falls_back_to_fused_order(store: KnowledgeStore) -> None:
    view, q = store.view(), "shipping costs"
    fused = [p.id for p in hybrid_search(view, store.embedder, q, 3)]
    assert len(fused) == 3
    assert [p.id for p in hybrid_search(view, store.embedder, q, 3, reranker=Reverse())] != fused
    assert [p.id for p in hybrid_search(view, store.embedder, q, 3, reranker=Nothing())] == fused
    assert [p.id for p in hybrid_search(view, store.embedder, q, 3, reranker=Broken())] == fused


def test_rerankers_are_plugins_from_their_entry_point_group() -> None:
    with pytest.raises(PluginError, match="Unknown reranker plugin 'nope'.*cross_encoder"):
        load_reranker(PluginSpec(name="nope"))
    with pytest.raises(PluginError, match="'model': field required"):
        load_reranker(PluginSpec(name="cross_encoder"))
