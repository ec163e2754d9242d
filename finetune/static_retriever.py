"""Tuning a static embedder's token table: fit to MiniLM's sentence vectors on the knowledge base, then InfoNCE.

The table is the parameter matrix: a text's vector is the mean of its tokens' rows (what `StaticEmbedder` computes),
so both stages train exactly what indexing and search will use.

1. *Distil* (no answers used): the table is mapped into the teacher's space by least squares, then fitted so each
   text's token mean points where all-MiniLM-L6-v2's sentence vector does (cosine loss). The texts are the knowledge
   base's chunks, sentences, "title: section" headings and short spans of its sentences (query-sized), plus the
   train-split questions. Held-out questions are never seen.
2. *Contrast*: the same knowledge-guided pairs, hard negatives and InfoNCE loss as the MiniLM tuning
   (`finetune/retriever.py`), over the train split only.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bot.config import Settings
from bot.errors import ServicebotError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _table_module() -> Any:
    import torch
    import torch.nn.functional as F

    class StaticTable(torch.nn.Module):  # type: ignore[misc]
        """A token table that trains like a SentenceTransformer (`encode`, `tokenize`, forward)."""

        def __init__(self, table: np.ndarray, tokenizer: Any, max_tokens: int) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(torch.tensor(np.asarray(table, dtype=np.float32)))
            self.tok, self.max_tokens = tokenizer, max_tokens
            self.query_encoder: Any = None  # MiniLM (an Embedder) when queries are its vectors, not the table's
            self._queries: dict[str, Any] = {}

        def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
            """Token ids laid out for `embedding_bag`, cut exactly as `StaticEmbedder` cuts them."""
            rows = self.tok(list(texts), add_special_tokens=False, truncation=True, max_length=self.max_tokens)
            ids = [r or [self.tok.unk_token_id or 0] for r in rows["input_ids"]]
            offsets = np.cumsum([0] + [len(r) for r in ids[:-1]])
            return {"ids": torch.tensor([i for r in ids for i in r]), "offsets": torch.tensor(offsets)}

        def mean(self, features: dict[str, Any]) -> Any:
            return F.embedding_bag(features["ids"], self.table, features["offsets"], mode="mean")

        def forward(self, features: dict[str, Any]) -> dict[str, Any]:
            return {"sentence_embedding": self.mean(features)}

        def encode(self, texts: Sequence[str], batch_size: int = 64, **_: Any) -> Any:
            """Unit vectors for `texts` as one tensor (what `rank_eval` and `build_pairs` ask of a model)."""
            with torch.no_grad():
                parts = [self.mean(self.tokenize(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
            return F.normalize(torch.cat(parts), dim=-1)

        def encode_queries(self, texts: Sequence[str], batch_size: int = 64, **_: Any) -> Any:
            """Unit vectors for queries: `query_encoder`'s, each embedded alone as `embed_query` serves it (fixed,
            no gradient; cached), or the table's own."""
            if self.query_encoder is None:
                return self.encode(texts, batch_size)
            for text in texts:
                if text not in self._queries:
                    self._queries[text] = torch.tensor(self.query_encoder.embed_query(text), dtype=torch.float32)
            return F.normalize(torch.stack([self._queries[t] for t in texts]), dim=-1)

    return StaticTable


def use_minilm_queries(model: Any, settings: Settings) -> None:
    """Queries of `model` (a table in MiniLM's space) become all-MiniLM-L6-v2's vectors, as `queries: minilm`
    serves them (`knowledge.static_embedder.minilm_queries`).

    Raises:
        PluginError: the table is not MiniLM-sized (a base table that was neither distilled nor tuned).
    """
    from bot.registry import PluginContext
    from knowledge.static_embedder import minilm_queries

    advice = "keep distil_steps above 0, or use queries: table"
    model.query_encoder = minilm_queries(int(model.table.shape[1]), PluginContext(settings), advice=advice)


def base_table(base: str, settings: Settings) -> tuple[np.ndarray, Any, Path]:
    """The table to start from, its tokenizer and the tokenizer's folder: `default` (distilled from
    all-MiniLM-L6-v2), or a tuned static embedder's name or folder."""
    from knowledge.embedder import default_model_path
    from knowledge.static_embedder import TABLE, StaticEmbedder, load_table

    if base == "default":
        embedder = StaticEmbedder(StaticEmbedder.Config())
        return embedder._table, embedder._tok, default_model_path()
    folder = settings.data_dir / "embedders" / base if "/" not in base else Path(base)
    if not (folder / TABLE).is_file():
        raise ServicebotError(f"No static table to start from at {folder} (base: default, or a tuned static name).")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return load_table(folder / TABLE, len(tokenizer)), tokenizer, folder


def spans(text: str, rng: random.Random, per_sentence: int) -> list[str]:
    """Query-sized spans (3 to 9 words) of `text`'s sentences (those over 20 characters), `per_sentence` tries each."""
    out = []
    for s in sentences_of(text):
        words = s.split()
        for _ in range(per_sentence):
            n = rng.randint(3, 9)
            if len(words) > n:
                start = rng.randint(0, len(words) - n)
                out.append(" ".join(words[start : start + n]))
    return out


def sentences_of(text: str) -> list[str]:
    """A chunk's sentences and lines (markdown marks stripped), those over 20 characters."""
    parts = [s.strip(" #-*") for s in re.split(r"(?<=[.!?])\s+|\n+", text)]
    return [s for s in parts if len(s) > 20]


def distil_texts(
    chunks: Sequence[Any], questions: Sequence[str], seed: int, spans_per_sentence: int = 3, limit: int | None = None
) -> list[str]:
    """What the table learns MiniLM's vectors on: chunks, their sentences and headings, query-sized spans (3 to 9
    words) of those sentences, and the given (train-split) questions. With `limit`, at most that many: the
    questions, and a seeded sample of the rest (MiniLM embeds every one, so a large knowledge base is sampled
    rather than embedded whole, about 26 texts per chunk)."""
    rng = random.Random(seed)
    sentences = [s for c in chunks for s in sentences_of(c.text)]
    cut = [x for c in chunks for x in spans(c.text, rng, spans_per_sentence)]
    headings = [f"{c.metadata.get('title', '')}: {c.metadata.get('section') or ''}".strip(": ") for c in chunks]
    kept = list(dict.fromkeys(questions))
    asked = set(kept)
    rest = [t for t in dict.fromkeys([c.text for c in chunks] + sentences + headings + cut) if t not in asked]
    if limit is not None and len(kept) + len(rest) > limit:
        rest = rng.sample(rest, max(0, limit - len(kept)))
    return rest + kept


_TEACHER: dict[str, Any] = {}  # all-MiniLM-L6-v2 and its vectors by text, kept for the process (CV tunes many)


def teacher_vectors(texts: Sequence[str]) -> Any:
    """all-MiniLM-L6-v2's unit sentence vectors for `texts` (one tensor); texts seen before in this process are not
    encoded again."""
    import torch
    from sentence_transformers import SentenceTransformer

    from knowledge.embedder import default_model_path

    if "model" not in _TEACHER:
        _TEACHER["model"] = SentenceTransformer(str(default_model_path()), device="cpu")
    cache: dict[str, Any] = _TEACHER.setdefault("vectors", {})
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        vectors = _TEACHER["model"].encode(missing, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
        cache.update(zip(missing, vectors, strict=True))
    return torch.stack([cache[t] for t in texts])


def distil(
    model: Any,
    texts: Sequence[str],
    steps: int,
    lr: float,
    seed: int,
    tick: Callable[[], None] | None = None,
    chunks: Sequence[str] = (),
    rank_weight: float = 0.0,
    rank_tau: float = 0.05,
) -> dict[str, float]:
    """Map the table into the teacher's (all-MiniLM-L6-v2's) space, then fit each text's token mean to the teacher's
    sentence vector (cosine loss, Adam, batches of 256). With `rank_weight`, each step also fits the teacher's
    ranking of `chunks` for the batch's texts that are not chunks (listwise: KL divergence between the teacher's and
    the table's softmaxed similarities at temperature `rank_tau`). Returns the mean cosine to the teacher before and
    after."""
    import torch
    import torch.nn.functional as F

    target = teacher_vectors(texts)
    features = model.tokenize(texts)
    with torch.no_grad():
        start = torch.linalg.lstsq(model.mean(features), target).solution  # a linear map: exact on a mean of rows
        model.table.data = model.table.data @ start
        before = F.cosine_similarity(model.mean(features), target).mean().item()
    ranking = bool(rank_weight and chunks)
    if ranking:
        chunk_set = set(chunks)
        queries = [i for i, t in enumerate(texts) if t not in chunk_set]  # sentences, headings, spans, questions
        chunk_features = model.tokenize(chunks)
        teacher_ranks = F.softmax(target[queries] @ teacher_vectors(chunks).T / rank_tau, dim=-1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randperm(len(texts), generator=g)[:256].tolist()
        out = model.mean(model.tokenize([texts[i] for i in pick]))
        loss = (1 - F.cosine_similarity(out, target[pick])).mean()
        if ranking:
            rows = torch.randperm(len(queries), generator=g)[:128]
            q = F.normalize(model.mean(model.tokenize([texts[queries[i]] for i in rows.tolist()])), dim=-1)
            c = F.normalize(model.mean(chunk_features), dim=-1)
            log_p = F.log_softmax(q @ c.T / rank_tau, dim=-1)
            loss = loss + rank_weight * F.kl_div(log_p, teacher_ranks[rows], reduction="batchmean")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if tick:
            tick()
    with torch.no_grad():
        after = F.cosine_similarity(model.mean(features), target).mean().item()
    return {"cosine_before": round(before, 4), "cosine_after": round(after, 4), "texts": len(texts)}


def save_table(model: Any, tokenizer_dir: Path, folder: Path) -> None:
    """The table and the tokenizer files it indexes, so the folder is a self-contained static embedder."""
    from knowledge.static_embedder import TABLE

    np.save(folder / TABLE, model.table.detach().numpy().astype(np.float32))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, folder / name)


def static_model(base: str, settings: Settings) -> Any:
    """The trainable table, started from `base` (the tokenizer folder is kept on it as `source`)."""
    table, tokenizer, tokenizer_dir = base_table(base, settings)
    model = _table_module()(table, tokenizer, 512)
    model.source = tokenizer_dir
    return model
