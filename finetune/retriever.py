"""Knowledge-guided contrastive tuning of the embedder: InfoNCE over answering chunks, in-batch and hard negatives."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.config import Settings
from bot.errors import ServicebotError
from finetune.data import _qa_check
from finetune.jsonl import read_jsonl
from finetune.metrics import containment
from finetune.store import save_atomically


class RetrieverConfig(BaseModel):
    """One retriever-tuning run; `name`, `epochs` and `lr` default by embedder (MiniLM: 3 epochs at 2e-5; a static
    table: 2 epochs at 3e-3, after `distil_steps` of fitting it to MiniLM's sentence vectors; chosen by 3-fold
    cross-validation in the train split, bench/static_recipe_cv.py)."""

    model_config = ConfigDict(extra="forbid")
    embedder: Literal["minilm", "static"] = "minilm"
    name: str | None = None  # kestrel-minilm / kestrel-static
    base: str = "default"  # the embedder to start from: default, a local folder, or (static) a tuned table's name
    # Its train split gives the queries, held-out only evaluates. None: no QA file, the knowledge alone (heading
    # queries, and a static table's distil stage).
    qa_file: Path | None = Path("knowledge/demo/qa.jsonl")
    seed: int = 7
    epochs: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    distil_steps: int = Field(default=300, ge=0)  # static only: batches of 256 texts fitted to MiniLM's vectors
    distil_lr: float = Field(default=3e-3, gt=0)
    # Bounds that keep tuning a large knowledge base to minutes: texts MiniLM embeds for the distil stage, and
    # knowledge-augmented queries (headings, spans; the QA file's questions are always kept), each a seeded sample.
    max_distil_texts: int = Field(default=20_000, ge=100)
    max_queries: int = Field(default=20_000, ge=1)
    batch_size: int = Field(default=16, ge=2)
    tau: float = Field(default=0.05, gt=0)  # InfoNCE temperature
    hard_negatives: int = Field(default=2, ge=0)  # per query, mined with the base model
    headings: bool = True  # also "title: section" -> chunk pairs (knowledge-augmented queries)
    span_queries: int = Field(default=0, ge=0)  # per chunk: spans of its sentences as queries, the chunk positive
    bm25_negatives: int = Field(default=0, ge=0)  # per query, the wrong articles' chunks BM25 ranks highest
    rank_weight: float = Field(default=0.0, ge=0)  # static: also distil MiniLM's query-to-chunk rankings (listwise)
    rank_tau: float = Field(default=0.05, gt=0)  # temperature of both rankings' softmax
    # static: who embeds queries when the table serves. minilm: MiniLM itself (fixed; the table learns to place
    # passages where MiniLM's questions point; served with the card's `queries: minilm`). table: the table.
    queries: Literal["minilm", "table"] = "minilm"

    @model_validator(mode="after")
    def _defaults(self) -> RetrieverConfig:
        static = self.embedder == "static"
        self.name = self.name or ("kestrel-static" if static else "kestrel-minilm")
        self.epochs = self.epochs or (2 if static else 3)
        self.lr = self.lr or (3e-3 if static else 2e-5)
        return self


@dataclass(frozen=True)
class Pair:
    """A query, its positive chunk, and hard negatives (chunk indices); `docs` are the query's right articles."""

    query: str
    positive: int
    negatives: tuple[int, ...]
    docs: frozenset[str]


def corpus(settings: Settings) -> list[Any]:
    """Every chunk of the knowledge source, cut exactly as the index cuts it."""
    from knowledge.chunking import chunk_document
    from knowledge.documents import load_folder

    docs, _ = load_folder(settings.knowledge.source, int(settings.knowledge.max_file_mb * 1e6))
    chunks = [
        c for d in docs for c in chunk_document(d, settings.knowledge.chunk_size, settings.knowledge.chunk_overlap)
    ]
    if not chunks:
        raise ServicebotError(f"No chunks in {settings.knowledge.source}: nothing to tune the retriever on.")
    return chunks


def _encode(model: Any, texts: Sequence[str], batch: int = 64) -> Any:
    return model.encode(list(texts), batch_size=batch, normalize_embeddings=True, convert_to_tensor=True)


def _encode_queries(model: Any, texts: Sequence[str]) -> Any:
    """Query vectors as the tuned embedder will serve them (a static table's may come from MiniLM)."""
    encode = getattr(model, "encode_queries", None)
    return encode(list(texts)) if encode is not None else _encode(model, texts)


def rank_eval(model: Any, chunks: Sequence[Any], questions: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Document-level recall@5 and MRR of vector search over all chunks (exact cosine)."""
    from knowledge.evaluation import scores

    if not questions:
        return {}
    import torch

    with torch.no_grad():
        c = _encode(model, [ch.text for ch in chunks])
        q = _encode_queries(model, [r["question"] for r in questions])
    rows = []
    for i, row in enumerate(questions):
        order = torch.argsort(c @ q[i], descending=True).tolist()
        ranked: list[str] = []
        for j in order:
            if chunks[j].doc_id not in ranked:
                ranked.append(chunks[j].doc_id)
            if len(ranked) >= 20:
                break
        rows.append(scores(ranked, row["article_ids"]))
    return {m: round(sum(r[m] for r in rows) / len(rows), 4) for m in ("recall@5", "mrr")}


Query = tuple[str, int, frozenset[str]]  # text, its positive chunk, its right articles


def training_queries(chunks: Sequence[Any], train: Sequence[dict[str, Any]], cfg: RetrieverConfig) -> list[Query]:
    """The training queries with their positive chunk: train questions (the gold article's chunk holding most of
    the reference answer), and with `cfg.headings` / `cfg.span_queries` knowledge-augmented ones."""
    queries: list[Query] = []
    for row in train:
        gold = [i for i, ch in enumerate(chunks) if ch.doc_id in row["article_ids"]]
        if gold:
            best = max(gold, key=lambda i: containment(chunks[i].text, row["answer"]))
            queries.append((row["question"], best, frozenset(row["article_ids"])))
    asked = len(queries)
    if cfg.headings:
        for i, ch in enumerate(chunks):
            section = ch.metadata.get("section") or ""
            queries.append((f"{ch.metadata.get('title', '')}: {section}".strip(": "), i, frozenset([ch.doc_id])))
    if cfg.span_queries:
        from finetune.static_retriever import spans

        rng = random.Random(cfg.seed)
        for i, ch in enumerate(chunks):
            cut = spans(ch.text, rng, 1)
            for query in rng.sample(cut, min(cfg.span_queries, len(cut))):
                queries.append((query, i, frozenset([ch.doc_id])))
    made = queries[asked:]
    if len(made) > cfg.max_queries - asked:  # questions stay; headings and spans are sampled, in their order
        keep = sorted(random.Random(cfg.seed).sample(range(len(made)), max(0, cfg.max_queries - asked)))
        queries = queries[:asked] + [made[i] for i in keep]
    return queries


def build_pairs(
    model: Any,
    chunks: Sequence[Any],
    train: Sequence[dict[str, Any]],
    cfg: RetrieverConfig,
    queries: Sequence[Query] | None = None,
    block: int = 1024,
) -> list[Pair]:
    """`training_queries` (unless given) with hard negatives mined by `model` (and BM25 with `cfg.bm25_negatives`)."""
    import torch

    if queries is None:
        queries = training_queries(chunks, train, cfg)
    lexical = _bm25(chunks) if cfg.bm25_negatives else None
    with torch.no_grad():
        vectors = _encode(model, [ch.text for ch in chunks])
    pairs = []
    for n, (query, pos, docs) in enumerate(queries):
        if n % block == 0:  # queries against all chunks a block at a time: memory stays block x chunks
            with torch.no_grad():
                sims = _encode_queries(model, [t for t, _, _ in queries[n : n + block]]) @ vectors.T
                nearest = torch.topk(sims, min(len(chunks), cfg.hard_negatives + 64), dim=1).indices.tolist()
        ranked = nearest[n % block]
        hard = [j for j in ranked if chunks[j].doc_id not in docs][: cfg.hard_negatives]
        if len(hard) < cfg.hard_negatives and len(ranked) < len(chunks):  # an article with many chunks on top
            ranked = torch.argsort(sims[n % block], descending=True).tolist()
            hard = [j for j in ranked if chunks[j].doc_id not in docs][: cfg.hard_negatives]
        if lexical is not None:
            top = [int(c) for c, _ in lexical.search(query, cfg.bm25_negatives + 20)]
            hard += [j for j in top if chunks[j].doc_id not in docs and j not in hard][: cfg.bm25_negatives]
        pairs.append(Pair(query, pos, tuple(hard), docs))
    return pairs


def _bm25(chunks: Sequence[Any]) -> Any:
    """A BM25 index over the chunks (ids are their positions), tokenized as the retriever's keyword search is."""
    from knowledge.lexical import LexicalIndex, TokenStore

    ids = [str(i) for i in range(len(chunks))]
    store = TokenStore()
    store.add(ids, [c.text for c in chunks])
    return LexicalIndex.build(store, ids)


def info_nce(model: Any, batch: Sequence[Pair], chunks: Sequence[Any], tau: float) -> Any:
    """InfoNCE: each query against every positive and hard negative in the batch; same-article chunks are masked."""
    import torch
    import torch.nn.functional as F

    candidates = list(dict.fromkeys([p.positive for p in batch] + [j for p in batch for j in p.negatives]))

    def embed(texts: list[str]) -> Any:
        features = model.tokenize(texts)
        return F.normalize(model(features)["sentence_embedding"], dim=-1)

    fixed = getattr(model, "query_encoder", None) is not None  # MiniLM's query vectors: only passages learn
    queries = [p.query for p in batch]
    q = model.encode_queries(queries) if fixed else embed(queries)
    c = embed([chunks[j].text for j in candidates])
    logits = q @ c.T / tau
    mask = torch.tensor(
        [[chunks[j].doc_id in p.docs and j != p.positive for j in candidates] for p in batch], dtype=torch.bool
    )
    logits = logits.masked_fill(mask, float("-inf"))  # another chunk of a right article is no negative
    target = torch.tensor([candidates.index(p.positive) for p in batch])
    return F.cross_entropy(logits, target)


def tune(
    settings: Settings, cfg: RetrieverConfig, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Tune the embedder (MiniLM, or a static token table: `cfg.embedder`), report recall@5 and MRR on held-out
    questions before and after, and save it with a card in `<data_dir>/embedders/<name>`.

    Raises:
        ServicebotError: no chunks, a QA file without training questions, or nothing to tune on.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from finetune.static_retriever import distil, distil_texts, save_table, static_model, use_minilm_queries
    from knowledge.embedder import default_model_path

    rows = read_jsonl(cfg.qa_file, _qa_check, strict=True) if cfg.qa_file is not None else []
    train = [r for r in rows if r.get("split") == "train"]  # held-out questions only ever evaluate
    heldout = [r for r in rows if r.get("split") != "train"]
    if cfg.qa_file is not None and not train:
        raise ServicebotError(f"{cfg.qa_file} has no training questions (split: train).")
    torch.manual_seed(cfg.seed)
    static = cfg.embedder == "static"
    if static:
        model = static_model(cfg.base, settings)
    else:
        model = SentenceTransformer(str(default_model_path()) if cfg.base == "default" else cfg.base, device="cpu")
    chunks = corpus(settings)
    data = hashlib.sha256(json.dumps([train, [c.text for c in chunks]], sort_keys=True).encode()).hexdigest()[:16]
    assert cfg.epochs is not None and cfg.name is not None and cfg.lr is not None  # filled by _defaults
    queries = training_queries(chunks, train, cfg)
    if not queries and not (static and cfg.distil_steps):
        raise ServicebotError("Nothing to tune on: no QA file and no heading or span queries (--headings).")
    steps, done = (cfg.distil_steps if static else 0) + cfg.epochs * -(-len(queries) // cfg.batch_size), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, steps)

    before = {"heldout": rank_eval(model, chunks, heldout), "train": rank_eval(model, chunks, train)}
    stages: dict[str, Any] = {}
    if static and cfg.distil_steps:
        texts = distil_texts(chunks, [r["question"] for r in train], cfg.seed, limit=cfg.max_distil_texts)
        stages["distil"] = distil(
            model,
            texts,
            cfg.distil_steps,
            cfg.distil_lr,
            cfg.seed,
            tick,
            chunks=[c.text for c in chunks],
            rank_weight=cfg.rank_weight,
            rank_tau=cfg.rank_tau,
        )
    if static and cfg.queries == "minilm":
        use_minilm_queries(model, settings)  # the distilled table is in MiniLM's space: its questions fit it
    if "distil" in stages:
        stages["distil"]["metrics"] = {
            "heldout": rank_eval(model, chunks, heldout),
            "train": rank_eval(model, chunks, train),
        }
    pairs = build_pairs(model, chunks, train, cfg, queries)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    rng, t0, losses = random.Random(cfg.seed), time.perf_counter(), []
    model.train()
    for _ in range(cfg.epochs):
        order = rng.sample(pairs, len(pairs))
        for i in range(0, len(order), cfg.batch_size):
            loss = info_nce(model, order[i : i + cfg.batch_size], chunks, cfg.tau)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tick()
    seconds = time.perf_counter() - t0
    model.eval()
    after = {"heldout": rank_eval(model, chunks, heldout), "train": rank_eval(model, chunks, train)}
    fingerprint = hashlib.sha256(json.dumps([cfg.model_dump_json(), data, len(pairs), losses]).encode()).hexdigest()[
        :12
    ]
    card = {
        "name": cfg.name,
        "kind": cfg.embedder,
        "base": cfg.base,
        "fingerprint": fingerprint,
        "data": data,
        "seed": cfg.seed,
        "pairs": len(pairs),
        "chunks": len(chunks),
        "config": json.loads(cfg.model_dump_json()),
        "train_s": round(seconds, 1),
        "loss": {"first": round(losses[0], 4), "last": round(losses[-1], 4)} if losses else {},
        "stages": stages,
        "metrics": {"before": before, "after": after, "note": "vector search only, document level"},
    }

    def write(folder: Path) -> None:
        if static:
            save_table(model, model.source, folder)
        else:
            model.save(str(folder))
        (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")

    target = save_atomically(settings.data_dir / "embedders" / cfg.name, write)
    return {**card, "embedder": str(target)}
