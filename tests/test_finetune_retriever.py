"""Contrastive retriever tuning on the real MiniLM: pairs from knowledge, InfoNCE, a tuned embedder that indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.config import PluginSpec, Settings
from bot.registry import PluginContext, build
from finetune.retriever import RetrieverConfig, build_pairs, corpus, info_nce, tune

DEMO_QA = Path(__file__).resolve().parent.parent / "knowledge" / "demo" / "qa.jsonl"


@pytest.fixture(scope="module")
def tuned(demo_service: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any]]:
    """One short tuning run (1 epoch, train questions only) into a private data dir."""
    data = tmp_path_factory.mktemp("tuned")
    settings = demo_service.settings.model_copy(update={"data_dir": data})
    cfg = RetrieverConfig(name="t", qa_file=DEMO_QA, epochs=1, headings=False, batch_size=16, lr=3e-5)
    return settings, tune(settings, cfg)


def test_pairs_use_an_answering_chunk_and_hard_negatives_from_other_articles(demo_service: Any) -> None:
    from sentence_transformers import SentenceTransformer

    from knowledge.embedder import default_model_path

    model = SentenceTransformer(str(default_model_path()), device="cpu")
    chunks = corpus(demo_service.settings)
    rows = [json.loads(line) for line in DEMO_QA.read_text().splitlines()[:4]]
    pairs = build_pairs(model, chunks, rows, RetrieverConfig(headings=False, hard_negatives=3))
    assert len(pairs) == 4
    for pair, row in zip(pairs, rows, strict=True):
        assert chunks[pair.positive].doc_id in row["article_ids"]
        assert len(pair.negatives) == 3 and all(chunks[j].doc_id not in row["article_ids"] for j in pair.negatives)
    loss = info_nce(model, pairs, chunks, tau=0.05)
    assert float(loss.detach()) > 0 and loss.requires_grad


def test_tuning_reports_recall_and_mrr_before_and_after_and_saves_a_card(tuned: tuple[Settings, dict]) -> None:
    settings, report = tuned
    folder = settings.data_dir / "embedders" / "t"
    card = json.loads((folder / "card.json").read_text())
    assert card["fingerprint"] == report["fingerprint"]
    for when in ("before", "after"):
        assert set(card["metrics"][when]["heldout"]) == {"recall@5", "mrr"}
    # Training on the train split must fit the train split better than the base model did.
    assert card["metrics"]["after"]["train"]["mrr"] > card["metrics"]["before"]["train"]["mrr"]
    assert card["loss"]["last"] < card["loss"]["first"] * 1.5


def test_tuned_embedder_loads_by_name_and_its_id_forces_a_full_rebuild(tuned: tuple[Settings, dict]) -> None:
    settings, report = tuned
    shutil.rmtree(settings.index_dir, ignore_errors=True)
    spec = PluginSpec(name="minilm", config={"model": "t", "backend": "torch"})
    tuned_settings = settings.model_copy(update={"embedder": spec})
    embedder = build("embedder", tuned_settings.embedder, PluginContext(tuned_settings))
    assert embedder.id == f"t@{report['fingerprint']}" and embedder.dimension == 384
    retriever = build("retriever", tuned_settings.retriever, PluginContext(tuned_settings, embedder=embedder))
    built = retriever.rebuild(tuned_settings.knowledge.source)
    assert built.switched and built.chunks > 0
    assert retriever.status()["embedder"] == embedder.id
