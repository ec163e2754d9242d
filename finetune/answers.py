"""`bot eval answers`: the real pipeline on the demo questions, scored against their reference answers."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.contracts import Message, Reply
from bot.errors import ServicebotError
from finetune.data import _qa_check
from finetune.jsonl import read_jsonl
from finetune.metrics import citations, containment, token_f1
from finetune.store import adapters_root
from plugins.responders.adapters import resolve

SPLITS = ("heldout", "train", "all")


def with_adapter(settings: Settings, adapter: str | None) -> Settings:
    """Settings whose responder uses `adapter` (a name or path; "none" = the base model; None = as configured).

    Raises:
        ServicebotError: the responder takes no adapter, or no adapter has that name or path.
    """
    if adapter is None:
        return settings
    if "adapter" not in settings.responder.config and settings.responder.name != "hf":
        raise ServicebotError(f"The responder '{settings.responder.name}' does not use adapters.")
    value = None if adapter.lower() == "none" else str(resolve(adapter, adapters_root(settings.data_dir)))
    responder = settings.responder.model_copy(update={"config": {**settings.responder.config, "adapter": value}})
    return settings.model_copy(update={"responder": responder})


def score_reply(reply: Reply, reference: str, article_ids: list[str]) -> dict[str, Any]:
    """One answer's scores: token F1, containment, cited passages from the right articles, grounding verdict."""
    cited = [n for n in citations(reply.answer) if 1 <= n <= len(reply.sources)]
    right = [n for n in cited if reply.sources[n - 1].doc_id in article_ids]
    grounding = next((v for v in reply.verdicts if v.plugin == "grounding"), None)
    return {
        "f1": token_f1(reply.answer, reference),
        "containment": containment(reply.answer, reference),
        "cited": len(cited),
        "cited_right": len(right),
        "unsupported": bool(grounding and "replaced" in grounding.reason),
        "refused": reply.refused,
        "handoff": reply.handoff,
        "latency_ms": float(reply.latency_ms.get("total", 0.0)),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    cited = sum(r["cited"] for r in rows)
    latencies = sorted(r["latency_ms"] for r in rows)
    answered = [r for r in rows if not r["refused"] and not r["handoff"]]
    return {
        "questions": n,
        "token_f1": round(sum(r["f1"] for r in rows) / n, 4),
        "containment": round(sum(r["containment"] for r in rows) / n, 4),
        "citation_precision": round(sum(r["cited_right"] for r in rows) / cited, 4) if cited else None,
        "cited_answers": round(sum(1 for r in rows if r["cited"]) / n, 4),
        "unsupported_rate": round(sum(r["unsupported"] for r in answered) / len(answered), 4) if answered else None,
        "refusal_rate": round(sum(r["refused"] for r in rows) / n, 4),
        "handoff_rate": round(sum(r["handoff"] for r in rows) / n, 4),
        "latency_ms": {
            "median": round(statistics.median(latencies), 1),
            "p95": round(latencies[min(n - 1, int(0.95 * n))], 1),
        },
    }


def evaluate_answers(
    settings: Settings,
    qa_file: Path,
    split: str = "heldout",
    adapter: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Answer every question of the split through guards, retrieval and responder, and score the replies.

    Raises:
        ServicebotError: an unknown split, an unreadable QA file or adapter, or no question to ask.
    """
    from bot.service import Service

    if split not in SPLITS:
        raise ServicebotError(f"--split must be one of {', '.join(SPLITS)}, not '{split}'.")
    rows = [r for r in read_jsonl(qa_file, _qa_check, strict=True) if split == "all" or r.get("split") == split]
    rows = rows[:limit] if limit else rows
    if not rows:
        raise ServicebotError(f"{qa_file} has no questions in the '{split}' split.")
    settings = with_adapter(settings, adapter)
    t0 = time.perf_counter()
    service = Service.start(settings, warm=True)
    load_s = time.perf_counter() - t0
    scored: list[dict[str, Any]] = []

    async def ask_all() -> None:
        # One event loop for the whole run: the responder's decode thread outlives any single question.
        for i, row in enumerate(rows, 1):
            reply = await service.answer([Message("user", row["question"])])
            scored.append(
                {"id": row.get("id"), "answer": reply.answer, **score_reply(reply, row["answer"], row["article_ids"])}
            )
            if progress:
                progress(i, len(rows))

    asyncio.run(ask_all())
    return {
        "split": split,
        "qa_file": str(qa_file),
        "adapter": settings.responder.config.get("adapter"),
        "responder": settings.responder.name,
        "model_load_s": round(load_s, 1),
        **_summary(scored),
        "per_question": scored,
    }
