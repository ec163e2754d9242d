"""A static embedder distilled from a sentence-transformer: one vector per vocabulary token, a text is the
weighted mean of its tokens' vectors. No network at query or index time: embedding is a table lookup, so a
full build runs at the speed of chunking, BM25 and Chroma writes rather than the speed of a transformer.

Distillation (once per model, cached under the model cache; about 25 s for all-MiniLM-L6-v2 on 2 cores):
each vocabulary token is run through the model on its own (`[CLS] token [SEP]`) and its contextual output
vector kept; the table is centred and reduced by PCA to `dimension`; each row is scaled by a smooth inverse
frequency weight a / (a + p(token)) (Arora et al. 2017), so frequent tokens ("the", "how") count less than
rare, content-bearing ones. Token frequencies come from `knowledge/token_counts.json`, counted once over the
demo articles and our own safety sentences by `python -m knowledge.static_embedder --count` and shipped,
so the table never changes when a knowledge base does.

Retrieval quality is below the transformer's (see the README's figures): use it where indexing speed
matters more, with `mode: hybrid` so BM25 covers what the static vectors miss. `bot finetune retriever --embedder
static` tunes a table on a knowledge base (finetune/static_retriever.py); `model: <name>` then loads that table
(`TABLE` in `<data_dir>/embedders/<name>/`) instead of distilling one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bot.errors import PluginError
from bot.files import replacing
from knowledge.embedder import SentenceTransformerEmbedder, _fingerprint, _tuned, default_model_path, model_cache

log = logging.getLogger(__name__)
COUNTS = Path(__file__).with_name("token_counts.json")
VERSION = "1"
TABLE = "static_table.npy"  # a tuned table, saved beside its tokenizer and card


def _cache_dir() -> Path:
    return model_cache() / "static"


def _token_vectors(model_dir: Path, batch: int = 1024) -> np.ndarray:
    """Each vocabulary token's contextual output vector, the token seen alone between [CLS] and [SEP]."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    size = len(tok)
    first = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    last = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    if first is None or last is None:
        raise PluginError(f"{model_dir}: the static embedder needs a tokenizer with CLS/SEP (or BOS/EOS) tokens.")
    out = np.zeros((size, int(model.config.hidden_size)), dtype=np.float32)
    ids = torch.arange(size)
    with torch.inference_mode():
        for start in range(0, size, batch):
            b = ids[start : start + batch]
            seq = torch.stack([torch.full_like(b, first), b, torch.full_like(b, last)], dim=1)
            hidden = model(input_ids=seq, attention_mask=torch.ones_like(seq)).last_hidden_state
            out[start : start + len(b)] = hidden[:, 1].numpy()
    return out


def _counts(size: int) -> np.ndarray:
    try:
        table = json.loads(COUNTS.read_text(encoding="utf-8"))
        counts = np.zeros(size, dtype=np.float64)
        for token, n in table["counts"].items():
            if int(token) < size:
                counts[int(token)] = float(n)
        return counts
    except (OSError, ValueError, KeyError) as exc:
        raise PluginError(f"The static embedder's token counts ({COUNTS}) could not be read: {exc}") from exc


def _card_queries(folder: Path) -> str:
    """Who a tuned table was trained to be queried by (`queries` in its card's config; table when not said)."""
    try:
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
        return str(card.get("config", {}).get("queries") or "table")
    except (OSError, ValueError, AttributeError):
        return "table"


def minilm_queries(
    dimension: int, ctx: Any, quantize: Literal["none", "int8"] = "int8", advice: str = "use queries: table"
) -> SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (the `minilm` embedder) as the query encoder of a `dimension`-column table in its space,
    as serving and tuning both use it.

    Raises:
        PluginError: the table is not MiniLM-sized (`advice` says what to do).
    """
    encoder = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config(quantize=quantize), ctx)
    if encoder.dimension != dimension:
        raise PluginError(
            f"queries: minilm needs a {encoder.dimension}-dimensional table in MiniLM's space; this one has "
            f"{dimension} dimensions ({advice})."
        )
    return encoder


def distill(vectors: np.ndarray, dimension: int, sif_a: float) -> np.ndarray:
    """The weighted, PCA-reduced token table from the model's token vectors (rows not normalised: a text's mean
    is normalised instead)."""
    centred = vectors - vectors.mean(axis=0)
    dimension = min(dimension, centred.shape[1])
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    table = centred @ vt[:dimension].T
    counts = _counts(len(table))
    p = counts / max(counts.sum(), 1.0)
    weights = sif_a / (sif_a + p)
    return (table * weights[:, None]).astype(np.float32)


def _cached(file: Path, make: Callable[[], np.ndarray]) -> np.ndarray:
    """`file`'s array, made and saved first when it is missing or unreadable (written atomically)."""
    if file.is_file():
        try:
            return np.load(file)
        except (OSError, ValueError):
            log.warning("Static embedder cache file %s is unreadable; making it again.", file)
    array = make()
    with replacing(file) as tmp:  # a killed distillation never leaves half a table in the cache
        np.save(tmp, array)
    return array


def load_table(file: Path, vocabulary: int) -> np.ndarray:
    """A tuned token table, checked against its tokenizer's vocabulary.

    Raises:
        PluginError: unreadable, or not one row per token.
    """
    try:
        table = np.load(file)
    except (OSError, ValueError) as exc:
        raise PluginError(f"The static table {file} could not be read: {exc}") from exc
    if table.ndim != 2 or table.shape[0] < vocabulary:
        raise PluginError(
            f"The static table {file} has shape {table.shape}; it needs one row per token ({vocabulary})."
        )
    return table.astype(np.float32, copy=False)


class StaticEmbedder:
    """Token-table embeddings distilled from a sentence-transformer (`model: default` is all-MiniLM-L6-v2)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str = "default"
        dimension: int = Field(default=256, ge=8, le=4096, description="PCA dimensions kept")
        sif_a: float = Field(default=1e-3, gt=0, le=1, description="smooth inverse frequency weight")
        max_tokens: int = Field(default=512, ge=8, description="tokens of a text that count")
        # Who embeds a query. table: the table, as passages. minilm: all-MiniLM-L6-v2 itself, for a table tuned
        # into MiniLM's space with MiniLM queries (`bot finetune retriever --embedder static`, the default there):
        # a question is short, so the transformer costs a few ms, the same MiniLM the guards already run on it.
        # auto: what the tuned table's card says it was trained for (table for the distilled default).
        queries: Literal["auto", "table", "minilm"] = "auto"
        query_quantize: Literal["none", "int8"] = Field(default="int8", description="MiniLM's, for queries")

    name = "static"
    guard_features = False  # token-table vectors are too coarse for the learned guards: they keep MiniLM

    def __init__(self, config: Config, ctx: Any = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        path = Path(str(default_model_path()) if config.model == "default" else _tuned(config.model, ctx))
        if not path.is_dir():
            raise PluginError(
                f"The static embedder needs a local sentence-transformer folder or a tuned table's name; '{path}' "
                "is neither (`bot finetune retriever --embedder static --name NAME` saves one in "
                "<data_dir>/embedders/NAME)."
            )
        try:
            self._tok = AutoTokenizer.from_pretrained(path)
        except Exception as exc:
            raise PluginError(f"Tokenizer of '{path}' could not be loaded ({type(exc).__name__}).") from exc
        self._max = config.max_tokens
        base = "all-MiniLM-L6-v2" if config.model == "default" else config.model
        tag = _fingerprint(path)
        self.query_encoder: Any = None  # MiniLM, when queries are embedded by it (asymmetric)
        if (path / TABLE).is_file():  # a tuned table: its own dimension and weights, told apart by its card
            self._table = load_table(path / TABLE, len(self._tok))
            self.dimension = int(self._table.shape[1])
            self.id = f"static-{base}{'@' + tag if tag else ''}-{self.dimension}"
            queries = config.queries if config.queries != "auto" else _card_queries(path)
            if queries == "minilm":
                self._use_minilm_queries(config, ctx)
            return
        if config.queries == "minilm":
            raise PluginError(
                "queries: minilm needs a table tuned into MiniLM's space (`bot finetune retriever --embedder "
                "static`, then `model: <its name>`); the distilled default table embeds its own queries."
            )
        counts = hashlib.sha256(COUNTS.read_bytes()).hexdigest()[:8] if COUNTS.is_file() else "none"
        model_key = f"{VERSION}:{path.resolve()}:{tag}"
        key = f"{model_key}:{config.dimension}:{config.sif_a}:{counts}"
        raw = _cache_dir() / f"{path.name}-{hashlib.sha256(model_key.encode()).hexdigest()[:12]}-tokens.npy"
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        table = _cache_dir() / f"{path.name}-{digest}.npy"
        self._table = _cached(
            table, lambda: distill(_cached(raw, lambda: self._distil(path)), config.dimension, config.sif_a)
        )
        self.dimension = int(self._table.shape[1])
        self.id = f"static-{base}{'@' + tag if tag else ''}-{self.dimension}-{digest[:8]}"

    def _use_minilm_queries(self, config: Config, ctx: Any) -> None:
        """Embed queries with all-MiniLM-L6-v2 (the table holds passages in its space); the id says so."""
        self.query_encoder = minilm_queries(self.dimension, ctx, config.query_quantize)
        self.id += f"+queries-{self.query_encoder.id}"

    @staticmethod
    def _distil(model_dir: Path) -> np.ndarray:
        log.info("Distilling a static embedder from %s (once; cached in %s).", model_dir, _cache_dir())
        try:
            return _token_vectors(model_dir)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"A static embedder could not be distilled from '{model_dir}': {exc}") from exc

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        ids = self._tok(list(texts), add_special_tokens=False, truncation=True, max_length=self._max)["input_ids"]
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        for i, row in enumerate(ids):
            if row:
                out[i] = self._table[row].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors for passages (an empty text is the zero vector)."""
        return self._embed(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """A unit vector for one query (MiniLM's, with `queries: minilm`)."""
        if self.query_encoder is not None:
            return self.query_encoder.embed_query(text)  # type: ignore[no-any-return]
        return self._embed([text])[0].tolist()  # type: ignore[no-any-return]


def count_tokens(out: Path = COUNTS) -> None:
    """Count MiniLM vocabulary tokens over the demo articles and our own safety sentences (not the public sets),
    and write them beside this module. Run after a change of that data only if the table should follow it:
    new counts change the embedder id, so every index rebuilds in full."""
    from transformers import AutoTokenizer

    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text(encoding="utf-8") for p in sorted((root / "knowledge" / "demo" / "articles").glob("*.md"))]
    for f in sorted((root / "plugins" / "safety" / "data").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(str(json.loads(line).get("text", "")))
    tok = AutoTokenizer.from_pretrained(default_model_path())
    counts: Counter[int] = Counter()
    for start in range(0, len(texts), 512):
        for row in tok(texts[start : start + 512], add_special_tokens=False)["input_ids"]:
            counts.update(row)
    body = {
        "tokenizer": "all-MiniLM-L6-v2",
        "texts": len(texts),
        "counts": {str(k): v for k, v in sorted(counts.items())},
    }
    out.write_text(json.dumps(body, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{out}: {len(counts)} distinct tokens over {len(texts)} texts")


if __name__ == "__main__":
    if sys.argv[1:] == ["--count"]:
        count_tokens()
    else:
        print("usage: python -m knowledge.static_embedder --count")
