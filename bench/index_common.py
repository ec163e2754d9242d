"""Shared pieces of the index benchmarks: a synthetic corpus, cheap synthetic vectors, percentile helpers."""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "knowledge" / "demo"


def questions() -> list[str]:
    """The demo customer questions (real query texts)."""
    return [json.loads(line)["question"] for line in (DEMO / "qa.jsonl").read_text().splitlines() if line.strip()]


def percentiles(ms: Sequence[float]) -> str:
    """'p50 x ms, p95 y ms (n)'."""
    s = sorted(ms)
    return f"p50 {statistics.median(s):6.1f} ms, p95 {s[min(len(s) - 1, int(0.95 * len(s)))]:6.1f} ms (n={len(s)})"


def demo_sentences() -> list[str]:
    """Sentences from the demo articles, to make synthetic text with realistic words."""
    out = []
    for path in sorted((DEMO / "articles").glob("*.md")):
        body = path.read_text().split("\n---", 2)[-1]
        out += [s.strip() for s in body.replace("\n", " ").split(". ") if len(s.strip()) > 30]
    return out


def write_corpus(root: Path, chunks: int, sections: int = 10, seed: int = 0) -> int:
    """Markdown documents of `sections` short sections each (one chunk per section); returns documents written."""
    rng = random.Random(seed)
    sentences = demo_sentences()
    root.mkdir(parents=True, exist_ok=True)
    docs = max(1, chunks // sections)
    for d in range(docs):
        parts = [f"# Synthetic article {d}\n"]
        for s in range(sections):
            words = " ".join(rng.sample(sentences, 3))
            parts.append(f"## Section {s} of article {d}\n\nsku{d}x{s} {words}.\n")
        (root / f"art{d:06d}.md").write_text("\n".join(parts))
    return docs


class SyntheticEmbedder:
    """Real query embeddings; document vectors are cheap perturbations of real ones unless `synthetic` is off.

    Embedding 100,000 chunks with MiniLM on 2 cores takes hours; the benchmarks measure everything else for real.
    """

    def __init__(self, real: Any, bases: int = 256) -> None:
        self.real, self.id, self.dimension = real, real.id, real.dimension
        base_texts = demo_sentences()[:bases]
        self.bases = np.asarray(real.embed_documents(base_texts), dtype=np.float32)
        self.synthetic = True

    def _vector(self, text: str) -> list[float]:
        h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        rng = np.random.default_rng(h)
        v = self.bases[h % len(self.bases)] + rng.standard_normal(self.dimension).astype(np.float32) * 0.03
        return (v / np.linalg.norm(v)).tolist()  # type: ignore[no-any-return]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Synthetic vectors (or real ones when `synthetic` is False)."""
        if not self.synthetic:
            return self.real.embed_documents(texts)  # type: ignore[no-any-return]
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        """Always the real model."""
        return self.real.embed_query(text)  # type: ignore[no-any-return]


def fresh_query(embedder: Any) -> None:
    """Forget cached query embeddings so every timed query is embedded for real (also a static table's MiniLM
    query encoder's)."""
    inner = getattr(embedder, "real", embedder)
    for holder in (inner, getattr(inner, "query_encoder", None)):
        cache = getattr(holder, "_cache", None)
        if isinstance(cache, dict):
            cache.clear()
