"""End-to-end figures on the demo KB with the default model: retrieval, first token, decode speed, whole turn.

Run: .venv/bin/python bench/e2e.py [--questions 20] [--config FILE]
Prints medians and p95 over the questions; the extractive responder runs on the same questions as a baseline
(same index, same guards, no LLM) so noise on a shared machine shows up in both columns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from bot.config import load_settings
from bot.contracts import Message, Reply
from bot.service import Service

QA = Path(__file__).resolve().parent.parent / "knowledge" / "demo" / "qa.jsonl"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, values: list[float], unit: str) -> str:
    return f"{name:<28} median {statistics.median(values):8.1f} {unit:<6} p95 {pct(values, 0.95):8.1f} {unit}"


def run(service: Service, questions: list[str]) -> list[Reply]:
    return [asyncio.run(service.answer([Message("user", q)])) for q in questions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    settings = load_settings(args.config)
    questions = [json.loads(x)["question"] for x in QA.read_text().splitlines()][: args.questions]

    t = time.perf_counter()
    service = Service.start(settings, warm=False)
    if not service.index.status().get("built"):
        service.index.rebuild(settings.knowledge.source)
    service.warm()
    print(f"load (models + index): {time.perf_counter() - t:.1f} s")
    service.ask("warm-up question about shipping")

    replies = run(service, questions)
    baseline = Service.start(
        settings.model_copy(
            update={"responder": settings.responder.model_copy(update={"name": "extractive", "config": {}})}
        ),
        warm=True,
    )
    base = run(baseline, questions)

    answered = [r for r in replies if r.tokens > 1]
    decode = [(r.tokens - 1) / ((r.latency_ms["generation"] - r.latency_ms["first_token"]) / 1000) for r in answered]
    print(f"questions: {len(questions)} (answered by the LLM: {len(answered)})")
    print(row("retrieval (embed + search)", [r.latency_ms["retrieval"] for r in replies], "ms"))
    print(row("input guards", [r.latency_ms["guards_in"] for r in replies], "ms"))
    print(row("passage guards", [r.latency_ms.get("guards_passages", 0.0) for r in replies], "ms"))
    print(row("output guards", [r.latency_ms.get("guards_out", 0.0) for r in replies], "ms"))
    print(row("time to first token", [r.latency_ms["first_token"] for r in answered], "ms"))
    print(row("decode speed", decode, "tok/s"))
    print(row("tokens per answer", [float(r.tokens) for r in answered], "tok"))
    print(row("whole turn (hf)", [r.latency_ms["total"] for r in replies], "ms"))
    print(row("whole turn (extractive)", [r.latency_ms["total"] for r in base], "ms"))
    print(row("retrieval (extractive run)", [r.latency_ms["retrieval"] for r in base], "ms"))


if __name__ == "__main__":
    main()
