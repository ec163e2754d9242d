"""Demo QA retrieval quality with the default embedder: vector-only and BM25-only baselines vs hybrid.

Usage: python bench/retrieval.py [--embedder minilm|static] [--quantize int8]
(fusion was tuned on the train split with bench/retrieval_tune.py, with the default embedder)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bot.config import Settings
from bot.service import Service
from knowledge.commands import format_report

DEMO = Path(__file__).resolve().parent.parent / "knowledge" / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedder", default="minilm", help="embedder plugin (default: minilm)")
    parser.add_argument("--quantize", default=None, help="minilm's quantize setting (none | int8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            responder="extractive",
            embedder={"name": args.embedder, "config": {"quantize": args.quantize} if args.quantize else {}},
            knowledge={"source": DEMO / "articles"},
        )
        service = Service.start(settings, warm=False)
        service.index.rebuild(DEMO / "articles")
        report = service.pipeline.retriever.evaluate(DEMO / "qa.jsonl")  # type: ignore[attr-defined]
        print(format_report(report))
        print("hybrid misses at 5:", ", ".join(report["hybrid"]["misses"]) or "none")


if __name__ == "__main__":
    main()
