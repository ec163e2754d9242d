"""Retrieval evaluation on a question file: recall@1, recall@5, MRR and nDCG@5, per split and category."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.contracts import Passage
from bot.errors import ServicebotError

SearchFn = Callable[[str, int], list[Passage]]
DEPTH = 20  # passages fetched per question; documents are ranked by their best passage


@dataclass(frozen=True)
class Question:
    """One evaluation question and the documents that answer it."""

    id: str
    text: str
    doc_ids: tuple[str, ...]
    category: str = ""
    split: str = ""


def load_questions(path: Path) -> list[Question]:
    """Read a JSONL file of {id, question, article_ids, category, split}.

    Raises:
        ServicebotError: the file is missing or a line is malformed.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise ServicebotError(f"QA file {path} cannot be read.") from None
    questions = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids = row.get("article_ids") or row.get("doc_ids")
            questions.append(
                Question(
                    str(row.get("id", n)),
                    str(row["question"]),
                    tuple(map(str, ids)),
                    row.get("category", ""),
                    row.get("split", ""),
                )
            )
        except (ValueError, KeyError, TypeError):
            raise ServicebotError(f"QA file {path}, line {n}: needs 'question' and 'article_ids'.") from None
    return questions


def file_hash(path: Path) -> str:
    """A short content hash (to know whether a stored score still applies)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def ranked_docs(passages: Iterable[Passage]) -> list[str]:
    """Document ids in order of their best passage."""
    out: list[str] = []
    for p in passages:
        if p.doc_id not in out:
            out.append(p.doc_id)
    return out


def scores(docs: Sequence[str], relevant: Sequence[str]) -> dict[str, float]:
    """Per-question metrics for a document ranking."""
    rel = set(relevant)
    first = next((i for i, d in enumerate(docs, 1) if d in rel), 0)
    dcg = sum(1 / math.log2(i + 1) for i, d in enumerate(docs[:5], 1) if d in rel)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(rel), 5) + 1))
    return {
        "recall@1": len(rel & set(docs[:1])) / len(rel),
        "recall@5": len(rel & set(docs[:5])) / len(rel),
        "mrr": 1 / first if first else 0.0,
        "ndcg@5": dcg / ideal if ideal else 0.0,
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: round(sum(r[key] for r in rows) / len(rows), 4) for key in rows[0]} | {"questions": len(rows)}


def evaluate(search: SearchFn, questions: Sequence[Question]) -> dict[str, Any]:
    """Run every question through `search` and average the metrics overall, per split and per category."""
    per: list[tuple[Question, dict[str, float]]] = []
    for q in questions:
        per.append((q, scores(ranked_docs(search(q.text, DEPTH)), q.doc_ids)))
    report: dict[str, Any] = {"overall": _mean([s for _, s in per])}
    for split in sorted({q.split for q in questions if q.split}):
        report[split] = _mean([s for q, s in per if q.split == split])
    report["by_category"] = {
        cat: _mean([s for q, s in per if q.category == cat]) for cat in sorted({q.category for q in questions})
    }
    report["misses"] = [q.id for q, s in per if not s["recall@5"]]
    return report


def recall_at_5(search: SearchFn, questions: Sequence[Question], known_docs: set[str]) -> float | None:
    """Mean recall@5 over the questions, or None when none of their documents is indexed."""
    if not any(d in known_docs for q in questions for d in q.doc_ids):
        return None
    return float(evaluate(search, questions)["overall"]["recall@5"])
