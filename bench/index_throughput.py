"""Indexing throughput (full builds with the default MiniLM in int8, MiniLM in float32, and the distilled `static`
embedder) and
re-indexing one changed document in a 10,000-chunk index.

Usage: python bench/index_throughput.py [--full-chunks 600] [--index-chunks 10000] [--repeats 3]
       [--static-model var/embedders/kestrel-static] [--no-one-change]
`--static-model` adds a row for a table tuned by `bot finetune retriever --embedder static` (its folder), and a
one-change run with it.
Baselines in the same run: the embedding model alone on the same texts; a rebuild with nothing changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_common import SyntheticEmbedder, write_corpus  # noqa: E402

from knowledge.chunking import chunk_document  # noqa: E402
from knowledge.documents import load_folder  # noqa: E402
from knowledge.embedder import SentenceTransformerEmbedder  # noqa: E402
from knowledge.static_embedder import StaticEmbedder  # noqa: E402
from knowledge.store import KnowledgeStore  # noqa: E402


def full_build(real: Any, label: str, chunks: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kb = Path(tmp) / "kb"
        write_corpus(kb, chunks, seed=1)
        docs, _ = load_folder(kb)
        texts = [c.text for d in docs for c in chunk_document(d, 900, 120)]
        rates, model_rates = [], []
        for r in range(repeats):
            t = time.perf_counter()
            real.embed_documents(texts)
            model_rates.append(len(texts) / (time.perf_counter() - t))
            store = KnowledgeStore(Path(tmp) / f"index{r}", "kb", real)
            t = time.perf_counter()
            report = store.rebuild([kb], full=True)
            rates.append(report.chunks / (time.perf_counter() - t))
        print(
            f"full build, {label}, {len(texts)} chunks: median {statistics.median(rates):.0f} chunks/s "
            f"(model alone on the same texts: {statistics.median(model_rates):.0f} chunks/s; {repeats} runs)"
        )
        print(f"  last build timings: {dict(report.timings)}")


def one_change(real: Any, chunks: int, repeats: int) -> None:
    print(f"one changed document, embedder {real.id}:")
    embedder = SyntheticEmbedder(real)
    with tempfile.TemporaryDirectory() as tmp:
        kb = Path(tmp) / "kb"
        docs = write_corpus(kb, chunks, seed=2)
        store = KnowledgeStore(Path(tmp) / "index", "kb", embedder)
        t = time.perf_counter()
        built = store.rebuild([kb])
        took = time.perf_counter() - t
        print(
            f"pipeline without the model (synthetic vectors), {built.chunks} chunks: {built.chunks / took:.0f} "
            f"chunks/s; timings {dict(built.timings)}"
        )
        embedder.synthetic = False  # the changed document is embedded for real
        changed, noop = [], []
        for r in range(repeats):
            t = time.perf_counter()
            store.rebuild([kb])
            noop.append(time.perf_counter() - t)
            path = kb / f"art{(r * 97) % docs:06d}.md"
            path.write_text(path.read_text().replace("## Section 3", f"## Section 3 (revised {r})"))
            t = time.perf_counter()
            report = store.rebuild([kb])
            changed.append(time.perf_counter() - t)
            assert report.changed and report.switched
        print(
            f"one changed document in a {built.chunks}-chunk index: median {statistics.median(changed):.2f}s "
            f"(max {max(changed):.2f}s; {report.embedded} chunks embedded; timings {dict(report.timings)}); "
            f"baseline rebuild with nothing changed: median {statistics.median(noop):.2f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full-chunks", type=int, default=600)
    parser.add_argument("--index-chunks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--static-model", default=None, help="a tuned static table's folder: one more row")
    parser.add_argument("--no-one-change", action="store_true", help="skip the 10,000-chunk re-index")
    args = parser.parse_args()
    real = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config())
    full_build(real, "real MiniLM, int8 (default)", args.full_chunks, args.repeats)
    float32 = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config(quantize="none"))
    full_build(float32, "real MiniLM, quantize: none (float32)", args.full_chunks, args.repeats)
    full_build(
        StaticEmbedder(StaticEmbedder.Config()), "static (distilled from MiniLM)", args.full_chunks, args.repeats
    )
    tuned = StaticEmbedder(StaticEmbedder.Config(model=args.static_model)) if args.static_model else None
    if tuned is not None:
        full_build(tuned, f"static, tuned ({tuned.id})", args.full_chunks, args.repeats)
    if not args.no_one_change:
        one_change(real, args.index_chunks, args.repeats)
        if tuned is not None:
            one_change(tuned, args.index_chunks, args.repeats)


if __name__ == "__main__":
    main()
