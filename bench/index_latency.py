"""Query latency at 100,000 chunks through the real retriever (query embedded for real), with baselines.

Usage: python bench/index_latency.py [--chunks 100000] [--dir /tmp/servicebot-bench-100k] [--rounds 2]
       [--static-model var/embedders/kestrel-static]
Default: the MiniLM embedder, documents given cheap synthetic vectors (embedding 100,000 chunks takes hours).
`--static-model`: a table tuned by `bot finetune retriever --embedder static` embeds all documents for real (its
own index under `<dir>-static`), and queries as it serves them (MiniLM's, with the card's `queries: minilm`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_common import SyntheticEmbedder, fresh_query, percentiles, questions, write_corpus  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.registry import PluginContext  # noqa: E402
from knowledge.embedder import SentenceTransformerEmbedder  # noqa: E402
from knowledge.retriever import ChromaRetriever  # noqa: E402
from knowledge.static_embedder import StaticEmbedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/servicebot-bench-100k"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--static-model", default=None, help="a tuned static table's folder (real vectors)")
    args = parser.parse_args()
    embedder: Any
    if args.static_model:
        embedder = StaticEmbedder(StaticEmbedder.Config(model=args.static_model))
        args.dir = args.dir.with_name(args.dir.name + "-static")
        print(f"embedder: {embedder.id}, every document embedded for real")
    else:
        embedder = SyntheticEmbedder(SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config()))
    settings = Settings.model_validate(
        {"data_dir": args.dir / "data", "responder": "extractive", "knowledge": {"source": args.dir / "kb"}}
    )
    retriever = ChromaRetriever(ChromaRetriever.Config(), PluginContext(settings, embedder=embedder))
    status = retriever.status()
    if not status.get("built"):
        docs = write_corpus(args.dir / "kb", args.chunks)
        t = time.perf_counter()
        report = retriever.rebuild(args.dir / "kb", full=True)
        print(
            f"built {report.chunks} chunks from {docs} documents in {time.perf_counter() - t:.0f}s "
            f"({'real' if args.static_model else 'synthetic'} vectors; timings {dict(report.timings)})"
        )
    retriever.warm()
    qs = questions()
    print(f"index: {retriever.status()['chunks']} chunks; {len(qs)} distinct questions x {args.rounds} rounds")
    for q in qs[:10]:  # warm-up: first touches of the HNSW and BM25 files
        retriever.search_sync(q, 3)
    results: dict[str, list[float]] = {"embed only (baseline)": [], "vector only": [], "hybrid (default)": []}
    for _ in range(args.rounds):
        for label in results:
            fresh_query(embedder)
            for q in qs:
                t = time.perf_counter()
                if label.startswith("embed"):
                    embedder.embed_query(q)
                else:
                    retriever.search_sync(q, 3, mode="vector" if label == "vector only" else None)
                results[label].append((time.perf_counter() - t) * 1000)
    for label, ms in results.items():
        print(f"{label:<24} {percentiles(ms)}")


if __name__ == "__main__":
    main()
