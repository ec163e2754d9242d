"""Tunes chunk size and fusion on the demo QA *train* split only; prints train and heldout metrics per setting."""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

from bot.config import Settings
from bot.service import Service
from knowledge.evaluation import load_questions, scores
from knowledge.hybrid import fuse

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "knowledge" / "demo"


def doc_ranking(fused: list[tuple[str, float]], doc_of: dict[str, str]) -> list[str]:
    out: list[str] = []
    for cid, _ in fused:
        d = doc_of[cid]
        if d not in out:
            out.append(d)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="600,900,1500")
    parser.add_argument("--depth", type=int, default=30)
    args = parser.parse_args()
    questions = load_questions(DEMO / "qa.jsonl")
    for size in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.model_validate(
                {
                    "data_dir": Path(tmp),
                    "responder": "extractive",
                    "knowledge": {"chunk_size": size, "chunk_overlap": 120},
                }
            )
            service = Service.start(settings, warm=False)
            report = service.index.rebuild(DEMO / "articles")
            retriever = service.pipeline.retriever
            view = retriever.store.view()  # type: ignore[attr-defined]
            doc_of = {cid: d for d, e in view.manifest.docs.items() for cid in e.chunks}
            embed = retriever._embedder  # type: ignore[attr-defined]
            cached = []
            for q in questions:
                vec = view.vector(embed.embed_query(q.text), args.depth)
                kw = view.keyword(q.text, args.depth)
                cached.append((q, [h.id for h in vec], [c for c, _ in kw]))
            for rrf_k, bw in itertools.product((5, 10, 20, 30, 60), (0.0, 0.3, 0.5, 0.7, 1.0)):
                rows: dict[str, list[dict[str, float]]] = {"train": [], "heldout": []}
                for q, v, b in cached:
                    docs = doc_ranking(fuse([(v, 1.0), (b, bw)], rrf_k), doc_of)
                    rows[q.split].append(scores(docs, q.doc_ids))
                tr = {k: statistics.mean(r[k] for r in rows["train"]) for k in ("recall@5", "mrr")}
                ho = {k: statistics.mean(r[k] for r in rows["heldout"]) for k in ("recall@5", "mrr")}
                print(
                    f"size {size:5d} chunks {report.chunks:4d} rrf_k {rrf_k:3d} bm25_w {bw:.1f}  "
                    f"train R@5 {tr['recall@5']:.3f} MRR {tr['mrr']:.3f}  heldout R@5 {ho['recall@5']:.3f} "
                    f"MRR {ho['mrr']:.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
