"""Hybrid fusion (rrf_k, BM25 weight, candidates) for a tuned static table, chosen by cross-validation in train.

A table tuned on the train split ranks train questions almost perfectly, so they cannot choose its fusion, and the
held-out questions must not. So: the train split is cut into folds (stratified by category, round-robin in file
order); for each fold a table is tuned exactly as `bot finetune retriever --embedder static` tunes one, on the other
folds' questions only (plus the articles), the demo articles are indexed with it, and every grid point is scored on
the fold's questions. The setting with the best cross-validated MRR (then recall@5) over all train questions is
evaluated once on the held-out questions, beside MiniLM at its default fusion and the tuned table at the default
fusion, through the real retriever.

Usage: python bench/static_fusion_cv.py [--folds 3] [--model kestrel-static] [--data-dir var]
The held-out rows use `<data-dir>/embedders/<model>` (made by `bot finetune retriever --embedder static`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from retrieval import run  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.service import Service  # noqa: E402
from knowledge.evaluation import DEPTH, Question, load_questions, scores  # noqa: E402
from knowledge.hybrid import Fusion, fuse  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "knowledge" / "demo"
DEFAULT = Fusion()  # the retriever's defaults (tuned for MiniLM with bench/retrieval_tune.py)
Point = tuple[int, float, int]  # rrf_k, bm25_weight, candidates (vector_weight stays 1: only the ratio counts)


def folds_of(questions: Sequence[Question], k: int) -> list[list[Question]]:
    """Train questions in `k` folds: within each category, round-robin in file order (the categories' running
    offset keeps the folds' sizes within one of each other)."""
    out: list[list[Question]] = [[] for _ in range(k)]
    n = 0
    for cat in sorted({q.category for q in questions}):
        for q in (q for q in questions if q.category == cat):
            out[n % k].append(q)
            n += 1
    return out


def _settings(data_dir: Path, embedder: dict[str, Any], retriever: dict[str, Any] | None = None) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "responder": "extractive",
            "embedder": embedder,
            "retriever": {"name": "chroma", "config": retriever or {}},
            "knowledge": {"source": DEMO / "articles"},
        }
    )


def tune_fold(
    data_dir: Path, qa_rows: Sequence[dict[str, Any]], train_ids: set[str], name: str, **recipe: Any
) -> dict[str, Any]:
    """Tune a static table on `train_ids` only (the product recipe, `RetrieverConfig(embedder="static")`, with any
    `recipe` changes)."""
    from finetune.retriever import RetrieverConfig, tune

    qa = data_dir / f"{name}.jsonl"
    rows = [{**r, "split": "train" if r["id"] in train_ids else "cv"} for r in qa_rows]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = _settings(data_dir, {"name": "minilm"})
    return tune(settings, RetrieverConfig(embedder="static", name=name, qa_file=qa, **recipe))


def candidate_lists(retriever: Any, questions: Sequence[Question], depths: Sequence[int]) -> dict[tuple[str, int], Any]:
    """Per question and candidate count: the vector and BM25 chunk ids `hybrid_search` would fuse."""
    view, embed = retriever.store.view(), retriever._embedder
    out = {}
    for q in questions:
        vec = embed.embed_query(q.text)
        for n in depths:
            n = max(n, DEPTH)  # hybrid_search asks for max(candidates, k) of each; evaluation asks k = DEPTH
            out[q.id, n] = ([h.id for h in view.vector(vec, n)], [c for c, _ in view.keyword(q.text, n)])
    return out


def fused_docs(lists: tuple[list[str], list[str]], point: Point, doc_of: dict[str, str]) -> list[str]:
    """Documents in the order of their best chunk among the top DEPTH fused ones (what `evaluate` ranks)."""
    rrf_k, bw, _ = point
    docs: list[str] = []
    for cid, _ in fuse([(lists[0], 1.0), (lists[1], bw)], rrf_k)[:DEPTH]:
        if doc_of[cid] not in docs:
            docs.append(doc_of[cid])
    return docs


def cross_validate(
    args: argparse.Namespace, grid: list[Point]
) -> tuple[dict[Point, list[dict[str, float]]], list[int]]:
    """Per grid point, the scores of every train question (fold by fold) by the table that did not train on it;
    and the folds' sizes."""
    qa_rows = [json.loads(line) for line in (DEMO / "qa.jsonl").read_text(encoding="utf-8").splitlines() if line]
    train = [q for q in load_questions(DEMO / "qa.jsonl") if q.split == "train"]
    qa_rows = [r for r in qa_rows if r.get("split") == "train"]  # held-out questions never enter cross-validation
    per: dict[Point, list[dict[str, float]]] = {p: [] for p in grid}
    for f, fold in enumerate(folds_of(train, args.folds)):
        fold_ids = {q.id for q in fold}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            card = tune_fold(Path(tmp), qa_rows, {q.id for q in train} - fold_ids, f"cv{f}")
            settings = _settings(Path(tmp), {"name": "static", "config": {"model": f"cv{f}"}})
            service = Service.start(settings, warm=False)
            report = service.index.rebuild(DEMO / "articles")
            retriever = service.pipeline.retriever
            view = retriever.store.view()  # type: ignore[attr-defined]
            doc_of = {cid: d for d, e in view.manifest.docs.items() for cid in e.chunks}
            lists = candidate_lists(retriever, fold, sorted({p[2] for p in grid}))
            fold_rows: dict[Point, list[dict[str, float]]] = {}
            for point in grid:
                n = max(point[2], DEPTH)
                fold_rows[point] = [scores(fused_docs(lists[q.id, n], point, doc_of), q.doc_ids) for q in fold]
                per[point] += fold_rows[point]
            # the cached lists must rank as the retriever itself does: check at the default fusion
            real = retriever.evaluate(_fold_file(Path(tmp), qa_rows, fold_ids), ("hybrid",))  # type: ignore[attr-defined]
            mine = _mean(fold_rows[DEFAULT.rrf_k, DEFAULT.bm25_weight, DEFAULT.candidates])
            if abs(real["hybrid"]["overall"]["mrr"] - mine["mrr"]) > 1e-3:
                raise SystemExit(f"fold {f}: cached fusion disagrees with the retriever ({mine} vs {real['hybrid']})")
            vec = card["metrics"]["after"]["heldout"]
            print(
                f"fold {f}: {len(fold)} questions, table tuned on {len(train) - len(fold)} "
                f"({time.perf_counter() - t0:.0f} s), {report.chunks} chunks; fold vector-only (exact) "
                f"R@5 {vec['recall@5']:.3f} MRR {vec['mrr']:.3f}; default fusion hybrid "
                f"R@5 {mine['recall@5']:.3f} MRR {mine['mrr']:.3f}",
                flush=True,
            )
    return per, [len(fold) for fold in folds_of(train, args.folds)]


def _fold_file(tmp: Path, qa_rows: Sequence[dict[str, Any]], ids: set[str]) -> Path:
    path = tmp / "fold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows if r["id"] in ids), encoding="utf-8")
    return path


def _mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {m: statistics.mean(r[m] for r in rows) for m in ("recall@5", "mrr")}


def heldout(spec: str, retriever: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Demo QA through the real retriever: index the articles with `spec` (minilm | static:NAME) and evaluate."""
    return run(spec, None, data_dir, retriever)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--model", default="kestrel-static", help="the tuned table for the held-out rows")
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="where tuned embedders are (var)")
    parser.add_argument("--rrf-k", default="1,3,5,10,20,30,60")
    parser.add_argument("--bm25-weights", default="0,0.2,0.3,0.4,0.5,0.6,0.7,0.85,1,1.5")
    parser.add_argument("--candidates", default="20,30,50")
    parser.add_argument("--no-heldout", action="store_true", help="cross-validation only")
    args = parser.parse_args()
    grid: list[Point] = list(
        itertools.product(
            map(int, args.rrf_k.split(",")),
            map(float, args.bm25_weights.split(",")),
            map(int, args.candidates.split(",")),
        )
    )
    default = (DEFAULT.rrf_k, DEFAULT.bm25_weight, DEFAULT.candidates)
    if default not in grid:
        grid.append(default)
    per, sizes = cross_validate(args, grid)
    cv = {p: _mean(rows) for p, rows in per.items()}
    print(f"cross-validated, {len(per[default])} train questions ({args.folds} folds), vector_weight 1.0:")
    for p in grid:
        mark = "  (default)" if p == default else ""
        print(
            f"  rrf_k {p[0]:3d} bm25_w {p[1]:4.2f} candidates {p[2]:3d}  "
            f"R@5 {cv[p]['recall@5']:.3f} MRR {cv[p]['mrr']:.3f}{mark}"
        )
    # best MRR, then recall@5; among exact ties the fewest changes from the defaults, then grid order
    best = max(
        grid,
        key=lambda p: (
            round(cv[p]["mrr"], 6),
            round(cv[p]["recall@5"], 6),
            -sum(a != b for a, b in zip(p, default, strict=True)),
        ),
    )
    print(
        f"chosen: rrf_k {best[0]} bm25_weight {best[1]} candidates {best[2]}  "
        f"CV R@5 {cv[best]['recall@5']:.3f} MRR {cv[best]['mrr']:.3f} "
        f"(default: R@5 {cv[default]['recall@5']:.3f} MRR {cv[default]['mrr']:.3f})",
        flush=True,
    )
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for p, label in ((best, "chosen"), (default, "default")):
        cells = [f"{_mean(per[p][a : a + n])['mrr']:.3f}" for a, n in zip(starts, sizes, strict=True)]
        print(f"  per-fold MRR, {label}: " + " / ".join(cells))
    diff = [b["mrr"] - d["mrr"] for b, d in zip(per[best], per[default], strict=True)]
    print(
        f"  chosen vs default, question by question: {sum(x > 0 for x in diff)} ranked higher, "
        f"{sum(x < 0 for x in diff)} lower, {sum(x == 0 for x in diff)} the same",
        flush=True,
    )
    if args.no_heldout:
        return
    chosen = {"rrf_k": best[0], "bm25_weight": best[1], "candidates": best[2]}
    rows = [
        ("minilm, default fusion", heldout("minilm", {}, args.data_dir)),
        (f"{args.model}, default fusion", heldout(f"static:{args.model}", {}, args.data_dir)),
        (f"{args.model}, chosen fusion", heldout(f"static:{args.model}", chosen, args.data_dir)),
    ]
    held = {q.id for q in load_questions(DEMO / "qa.jsonl") if q.split != "train"}
    print("held-out questions (recall@5 / MRR), evaluated once:")
    for label, report in rows:
        misses = [m for m in report["hybrid"]["misses"] if m in held]
        cells = [
            f"{m} {report[m]['heldout']['recall@5']:.3f} / {report[m]['heldout']['mrr']:.3f}"
            for m in ("hybrid", "vector", "bm25")
        ]
        print(f"  {label:<34} " + "   ".join(cells) + f"   ({report['embedder']})")
        print(f"  {'':<34} hybrid misses at 5: " + (", ".join(misses) or "none"))


if __name__ == "__main__":
    main()
