"""Tuning a static embedder's token table on a tiny knowledge base: it learns, saves, loads by name, rebuilds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app, load_command_plugins
from bot.config import PluginSpec, Settings
from bot.errors import PluginError, ServicebotError
from bot.registry import PluginContext, build
from finetune.retriever import RetrieverConfig, tune
from finetune.static_retriever import TOKENIZER_FILES
from knowledge.embedder import default_model_path
from knowledge.static_embedder import TABLE, StaticEmbedder

ARTICLES = {
    "passwords": (
        "Reset your password",
        "Open Settings, then Security, and tap Reset password. The link lasts 30 minutes.",
    ),
    "shipping": ("Shipping times", "Parcels leave our warehouse within two working days; tracking arrives by e-mail."),
    "refunds": ("Refunds", "Return an item within 30 days and the refund reaches your card in five working days."),
    "invoices": ("Invoices", "Download each invoice as a PDF from Billing, then Invoices, in your account."),
}
QUESTIONS = [
    ("forgot my password, how do I change it", "passwords", "tap Reset password", "train"),
    ("when will my parcel be shipped", "shipping", "within two working days", "train"),
    ("how long until I get my money back", "refunds", "refund reaches your card", "train"),
    ("where can I find a pdf of my bill", "invoices", "invoice as a PDF", "train"),
    ("I cannot sign in any more", "passwords", "Reset password", "heldout"),
    ("tracking number for my delivery", "shipping", "tracking arrives by e-mail", "heldout"),
]


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """Four articles, a QA file (four train questions, two held out) and a random 32-dimensional base table."""
    root = tmp_path_factory.mktemp("static-kb")
    (root / "kb").mkdir()
    for doc, (title, body) in ARTICLES.items():
        (root / "kb" / f"{doc}.md").write_text(f"---\nid: {doc}\ntitle: {title}\n---\n# {title}\n\n{body}\n")
    rows = [
        {"id": f"q{i}", "question": q, "article_ids": [d], "answer": a, "split": s}
        for i, (q, d, a, s) in enumerate(QUESTIONS)
    ]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = root / "data" / "embedders" / "random-base"
    base.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (default_model_path() / name).is_file():
            shutil.copy2(default_model_path() / name, base / name)
    np.save(base / TABLE, np.random.default_rng(0).standard_normal((30522, 32)).astype(np.float32))
    settings = Settings(data_dir=root / "data", responder={"name": "extractive"}, knowledge={"source": root / "kb"})
    return settings, root / "qa.jsonl"


def _cfg(qa: Path, **kw: Any) -> RetrieverConfig:
    settings: dict[str, Any] = {"base": "random-base", "distil_steps": 40, "batch_size": 4} | kw
    return RetrieverConfig(embedder="static", qa_file=qa, **settings)


@pytest.fixture(scope="module")
def tuned(kb: tuple[Settings, Path]) -> dict[str, Any]:
    settings, qa = kb
    return tune(settings, _cfg(qa, name="t", epochs=3))


def test_tuning_the_table_improves_its_ranking_and_saves_a_card(kb: tuple[Settings, Path], tuned: dict) -> None:
    settings, _ = kb
    folder = settings.data_dir / "embedders" / "t"
    card = json.loads((folder / "card.json").read_text())
    assert card["kind"] == "static" and card["base"] == "random-base" and card["fingerprint"] == tuned["fingerprint"]
    assert len(card["data"]) == 16 and card["config"]["lr"] == 3e-3 and card["config"]["epochs"] == 3
    distilled = card["stages"]["distil"]
    assert distilled["cosine_after"] > distilled["cosine_before"]  # fitted towards MiniLM's sentence vectors
    before, after = card["metrics"]["before"]["train"], card["metrics"]["after"]["train"]
    assert after["mrr"] > before["mrr"] and after["mrr"] == 1.0
    table = np.load(folder / TABLE)
    assert table.shape == (30522, 384)  # mapped into MiniLM's space by the distillation stage


def test_tuned_table_loads_by_name_indexes_and_its_id_carries_the_fingerprint(
    kb: tuple[Settings, Path], tuned: dict
) -> None:
    settings, qa = kb
    spec = PluginSpec(name="static", config={"model": "t"})
    tuned_settings = settings.model_copy(update={"embedder": spec})
    embedder = build("embedder", tuned_settings.embedder, PluginContext(tuned_settings))
    # Tuned for MiniLM's questions (the default, on its card): passages are the table's, queries MiniLM's.
    minilm = "all-MiniLM-L6-v2+int8"
    assert embedder.id == f"static-t@{tuned['fingerprint']}-384+queries-{minilm}" and embedder.dimension == 384
    table = np.load(settings.data_dir / "embedders" / "t" / TABLE)
    ids = embedder._tok(["refund"], add_special_tokens=False)["input_ids"][0]
    mean = table[ids].mean(axis=0)
    assert np.allclose(embedder.embed_documents(["refund"])[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert embedder.query_encoder.id == minilm
    assert embedder.embed_query("refund") == embedder.query_encoder.embed_query("refund")
    own = StaticEmbedder(StaticEmbedder.Config(model="t", queries="table"), PluginContext(tuned_settings))
    assert own.id == f"static-t@{tuned['fingerprint']}-384" and own.query_encoder is None
    assert np.allclose(own.embed_query("refund"), mean / np.linalg.norm(mean), atol=1e-5)
    retriever = build("retriever", tuned_settings.retriever, PluginContext(tuned_settings, embedder=embedder))
    built = retriever.rebuild(tuned_settings.knowledge.source)
    assert built.switched and retriever.status()["embedder"] == embedder.id
    hits = retriever.search_sync("how long until I get my money back", 1, mode="vector")
    assert hits[0].doc_id == "refunds"
    # Tuning again in place (another seed) changes the fingerprint, so the index guard asks for a full rebuild.
    again = tune(settings, _cfg(qa, name="t", epochs=1, seed=8))
    reloaded = build("embedder", tuned_settings.embedder, PluginContext(tuned_settings))
    assert reloaded.id == f"static-t@{again['fingerprint']}-384+queries-{minilm}" != embedder.id


def test_minilm_queries_are_shared_with_the_guards_and_need_a_table_in_minilm_space(
    kb: tuple[Settings, Path], tuned: dict
) -> None:
    from bot.service import Service

    settings, qa = kb
    card = json.loads((settings.data_dir / "embedders" / "t" / "card.json").read_text())
    assert card["config"]["queries"] == "minilm"
    spec = PluginSpec(name="static", config={"model": "t"})
    service = Service.start(settings.model_copy(update={"embedder": spec}), warm=False)
    pipeline = service.pipeline
    assert pipeline.guard_embedder is pipeline.embedder.query_encoder  # one MiniLM, one embedding per message
    # The distilled default table is not in MiniLM's space, nor a random 32-dimensional one.
    with pytest.raises(PluginError, match="needs a table tuned into MiniLM's space"):
        StaticEmbedder(StaticEmbedder.Config(queries="minilm"), PluginContext(settings))
    with pytest.raises(PluginError, match="384-dimensional table"):
        random_base = str(settings.data_dir / "embedders" / "random-base")
        StaticEmbedder(StaticEmbedder.Config(model=random_base, queries="minilm"), PluginContext(settings))
    with pytest.raises(ServicebotError, match="keep distil_steps above 0"):
        tune(settings, _cfg(qa, name="z", distil_steps=0))
    # A table tuned with `queries: table` is served that way by default.
    own = tune(settings, _cfg(qa, name="own", queries="table", epochs=1))
    embedder = build("embedder", PluginSpec(name="static", config={"model": "own"}), PluginContext(settings))
    assert embedder.query_encoder is None and embedder.id == f"static-own@{own['fingerprint']}-384"


def test_a_missing_tuned_name_or_base_is_a_clear_error(kb: tuple[Settings, Path]) -> None:
    settings, qa = kb
    with pytest.raises(PluginError, match="tuned table's name"):
        StaticEmbedder(StaticEmbedder.Config(model="no-such-table"), PluginContext(settings))
    with pytest.raises(ServicebotError, match="No static table to start from"):
        tune(settings, _cfg(qa, base="no-such-table"))
    load_command_plugins()  # `bot finetune` comes from its entry point, as for the console script
    result = CliRunner().invoke(app, ["finetune", "retriever", "--embedder", "word2vec"])
    assert result.exit_code != 0 and "--embedder must be 'minilm' or 'static'" in result.output


def test_recipe_options_add_span_queries_bm25_negatives_and_ranking_distillation(kb: tuple[Settings, Path]) -> None:
    from finetune.retriever import build_pairs, corpus
    from finetune.static_retriever import static_model

    settings, qa = kb
    cfg = _cfg(qa, name="r", span_queries=2, bm25_negatives=1, rank_weight=0.2, distil_steps=10, epochs=1)
    card = tune(settings, cfg)
    assert card["pairs"] > 4 + 4  # four questions and four headings, plus the chunks' span queries
    assert card["stages"]["distil"]["cosine_after"] > 0.9  # the ranking loss beside the cosine one keeps it close
    chunks, model = corpus(settings), static_model("random-base", settings)
    pairs = build_pairs(model, chunks, [], cfg.model_copy(update={"headings": False, "hard_negatives": 0}))
    assert pairs and all(chunks[p.positive].doc_id in p.docs for p in pairs)
    assert all(p.query in chunks[p.positive].text for p in pairs)  # a span of its own chunk
    assert all(chunks[j].doc_id not in p.docs for p in pairs for j in p.negatives)  # BM25's, from other articles


def test_without_a_qa_file_the_table_tunes_on_the_knowledge_alone(kb: tuple[Settings, Path]) -> None:
    settings, qa = kb
    cfg = _cfg(qa, name="kb-only", epochs=2).model_copy(update={"qa_file": None})
    card = tune(settings, cfg)
    assert card["pairs"] == len(ARTICLES)  # one "title: section" query per chunk, no question
    assert card["metrics"]["after"] == {"heldout": {}, "train": {}} and card["config"]["qa_file"] is None
    assert card["stages"]["distil"]["cosine_after"] > card["stages"]["distil"]["cosine_before"]
    spec = PluginSpec(name="static", config={"model": "kb-only"})
    kb_settings = settings.model_copy(update={"embedder": spec})
    embedder = build("embedder", spec, PluginContext(kb_settings))
    assert embedder.query_encoder is not None  # queried by MiniLM, as a QA-tuned table
    retriever = build("retriever", kb_settings.retriever, PluginContext(kb_settings, embedder=embedder))
    assert retriever.rebuild(kb_settings.knowledge.source).switched
    assert retriever.search_sync("where can I find a pdf of my bill", 1)[0].doc_id == "invoices"
    with pytest.raises(ServicebotError, match="Nothing to tune on"):
        tune(settings, RetrieverConfig(qa_file=None, headings=False, name="none"))
    load_command_plugins()
    result = CliRunner().invoke(app, ["finetune", "retriever", "--embedder", "minilm", "--no-qa", "--no-headings"])
    assert result.exit_code != 0 and "Nothing to tune on" in result.output


def test_large_knowledge_is_sampled_and_mined_a_block_at_a_time(kb: tuple[Settings, Path]) -> None:
    from finetune.retriever import build_pairs, corpus, training_queries
    from finetune.static_retriever import distil_texts, static_model

    settings, qa = kb
    chunks = corpus(settings)
    questions = [q for q, *_ in QUESTIONS]
    every = distil_texts(chunks, questions, 7)
    some = distil_texts(chunks, questions, 7, limit=12)
    assert len(some) == 12 and set(questions) <= set(some) and set(some) <= set(every)  # the questions always stay
    assert distil_texts(chunks, questions, 7, limit=12) == some  # seeded
    train = [{"question": q, "article_ids": [d], "answer": a} for q, d, a, s in QUESTIONS if s == "train"]
    cfg = _cfg(qa, span_queries=2)
    full = training_queries(chunks, train, cfg)
    capped = training_queries(chunks, train, cfg.model_copy(update={"max_queries": 6}))
    assert len(full) > 6 and len(capped) == 6 and capped[:4] == full[:4]  # the questions, then a sample
    model = static_model("random-base", settings)
    whole = build_pairs(model, chunks, train, cfg, full)
    assert build_pairs(model, chunks, train, cfg, full, block=3) == whole  # mined in blocks: the same negatives
    assert all(len(p.negatives) == cfg.hard_negatives for p in whole)
