"""The static table's tuning recipe, chosen by cross-validation in the train split (held-out once, at the end).

Uses bench/static_fusion_cv.py's folds and machinery: for each fold and each recipe (changes to
`RetrieverConfig(embedder="static")`), a table is tuned on the other folds' questions (plus the articles), the demo
articles are indexed with it, and the fold's questions are scored through cached candidate lists (checked against
the retriever at the default fusion): hybrid at the default fusion and at rrf_k 5, and vector-only. MiniLM's vectors
are computed once for all folds and recipes (`teacher_vectors`). With --heldout, the recipe with the best
cross-validated hybrid MRR (default fusion; then recall@5) and the product default are each tuned on the whole train
split and evaluated once on the held-out questions through the real retriever.

Usage: python bench/static_recipe_cv.py [--recipe '{"span_queries": 2}' ...] [--heldout]
(the first recipe row is always the product default, {}).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from static_fusion_cv import (  # noqa: E402
    DEFAULT,
    DEMO,
    _mean,
    _settings,
    candidate_lists,
    folds_of,
    fused_docs,
    tune_fold,
)

from bot.service import Service  # noqa: E402
from knowledge.evaluation import DEPTH, load_questions, scores  # noqa: E402

POINTS = {
    "hybrid": (DEFAULT.rrf_k, DEFAULT.bm25_weight, DEFAULT.candidates),
    "hybrid rrf_k 5": (5, DEFAULT.bm25_weight, DEFAULT.candidates),
    "vector": (DEFAULT.rrf_k, 0.0, DEFAULT.candidates),
}


def score_table(tmp: Path, name: str, questions: list[Any]) -> dict[str, list[dict[str, float]]]:
    """Index the demo articles with the tuned table `name` and score `questions` at each of POINTS."""
    service = Service.start(_settings(tmp, {"name": "static", "config": {"model": name}}), warm=False)
    service.index.rebuild(DEMO / "articles")
    retriever = service.pipeline.retriever
    view = retriever.store.view()  # type: ignore[attr-defined]
    doc_of = {cid: d for d, e in view.manifest.docs.items() for cid in e.chunks}
    lists = candidate_lists(retriever, questions, [DEFAULT.candidates])
    n = max(DEFAULT.candidates, DEPTH)
    return {
        label: [scores(fused_docs(lists[q.id, n], point, doc_of), q.doc_ids) for q in questions]
        for label, point in POINTS.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--recipe", action="append", default=[], help="JSON object of RetrieverConfig changes")
    parser.add_argument("--heldout", action="store_true", help="evaluate the best recipe and the default once")
    args = parser.parse_args()
    recipes = [{}] + [json.loads(r) for r in args.recipe]
    qa_rows = [json.loads(line) for line in (DEMO / "qa.jsonl").read_text(encoding="utf-8").splitlines() if line]
    train = [q for q in load_questions(DEMO / "qa.jsonl") if q.split == "train"]
    train_rows = [r for r in qa_rows if r.get("split") == "train"]  # held-out questions never enter CV
    per: list[dict[str, list[dict[str, float]]]] = [{label: [] for label in POINTS} for _ in recipes]
    seconds: list[list[float]] = [[] for _ in recipes]
    for f, fold in enumerate(folds_of(train, args.folds)):
        ids = {q.id for q in train} - {q.id for q in fold}
        for r, recipe in enumerate(recipes):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                tune_fold(Path(tmp), train_rows, ids, f"cv{f}", **recipe)
                seconds[r].append(time.perf_counter() - t0)
                rows = score_table(Path(tmp), f"cv{f}", fold)
            for label in POINTS:
                per[r][label] += rows[label]
            cells = "  ".join(f"{k} {_mean(v)['recall@5']:.3f}/{_mean(v)['mrr']:.3f}" for k, v in rows.items())
            print(f"fold {f} recipe {json.dumps(recipe)} ({seconds[r][-1]:.0f} s): {cells}", flush=True)
    print(f"cross-validated over {len(train)} train questions ({args.folds} folds), recall@5 / MRR:")
    for r, recipe in enumerate(recipes):
        cells = "  ".join(f"{k} {_mean(v)['recall@5']:.3f} / {_mean(v)['mrr']:.3f}" for k, v in per[r].items())
        print(f"  {json.dumps(recipe):<60} {cells}  (tune {statistics.mean(seconds[r]):.0f} s)", flush=True)
    best = max(
        range(len(recipes)),
        key=lambda r: (round(_mean(per[r]["hybrid"])["mrr"], 6), round(_mean(per[r]["hybrid"])["recall@5"], 6)),
    )
    print(f"best by CV hybrid MRR (default fusion): {json.dumps(recipes[best])}", flush=True)
    if not args.heldout:
        return
    held = [q for q in load_questions(DEMO / "qa.jsonl") if q.split != "train"]
    print("held-out questions (recall@5 / MRR), evaluated once, tables tuned on the whole train split:")
    for r in dict.fromkeys([0, best]):
        with tempfile.TemporaryDirectory() as tmp:
            from finetune.retriever import RetrieverConfig, tune

            settings = _settings(Path(tmp), {"name": "minilm"})
            tune(settings, RetrieverConfig(embedder="static", name="final", qa_file=DEMO / "qa.jsonl", **recipes[r]))
            rows = score_table(Path(tmp), "final", held)
        cells = "  ".join(f"{k} {_mean(v)['recall@5']:.3f} / {_mean(v)['mrr']:.3f}" for k, v in rows.items())
        print(f"  {json.dumps(recipes[r]):<60} {cells}", flush=True)


if __name__ == "__main__":
    main()
