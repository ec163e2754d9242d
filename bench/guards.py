"""Guard-chain latency per turn, LLM excluded: the full default suite vs the two foundation guards (baseline).

Run: .venv/bin/python bench/guards.py [--turns 200]
Prints median and p95 of the input-guard chain per turn over demo questions, XSTest-style benign and attack
prompts from our own test split, both chains in the same run so machine noise shows in both; the full suite's
figures are also given for the demo questions and our rows apart (harmful_intent's review model runs only on
turns that score high enough, so attack-heavy traffic costs more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from bot.config import PluginSpec, load_settings
from bot.contracts import Message, Turn
from bot.pipeline import _check_views
from bot.service import build_pipeline

ROOT = Path(__file__).resolve().parent.parent


def prompts(n: int) -> list[str]:
    qa = [json.loads(x)["question"] for x in (ROOT / "knowledge/demo/qa.jsonl").read_text().splitlines()]
    data = ROOT / "plugins/safety/data"
    ours = [
        json.loads(x)["text"]
        for f in ("harmful_en.jsonl", "benign_en.jsonl", "jailbreak_en.jsonl", "harmful_zh.jsonl")
        for x in (data / f).read_text().splitlines()
    ]
    mixed = [p for pair in zip(qa * 10, ours, strict=False) for p in pair]
    return mixed[:n]


async def chain_ms(pipeline: object, text: str) -> float:
    turn = Turn((Message("user", text),))
    views: list[str] = []
    start = time.perf_counter()
    for guard in pipeline.input_guards:  # type: ignore[attr-defined]
        verdict = await _check_views(guard, turn, views, 5.0)
        views += list(verdict.views)
        if verdict.rewrite is not None:
            turn = turn.with_text(verdict.rewrite)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    settings = load_settings()
    settings = settings.model_copy(update={"responder": PluginSpec(name="extractive")})
    full = build_pipeline(settings)
    for g in full.input_guards:
        if hasattr(g, "warm"):
            g.warm()
    base_settings = settings.model_copy(
        update={
            "guards": settings.guards.model_copy(
                update={"input": [PluginSpec(name="max_length"), PluginSpec(name="instruction_override")]}
            )
        }
    )
    base = build_pipeline(base_settings)
    texts = prompts(args.turns)

    async def run() -> tuple[list[float], list[float]]:
        a, b = [], []
        for i, t in enumerate(texts):
            a.append(await chain_ms(full, f"{t} ({i})"))  # a fresh text each time: no cache hits
            b.append(await chain_ms(base, f"{t} ({i})"))
        return a, b

    full_ms, base_ms = asyncio.run(run())
    label = f"full suite ({len(full.input_guards)} input guards)"
    # The prompts alternate: demo questions (honest, in-domain) at even positions, our safety examples at odd ones.
    rows = [
        (label, full_ms),
        ("  of which demo questions", full_ms[0::2]),
        ("  of which our safety examples", full_ms[1::2]),
        ("baseline (2 pattern guards)", base_ms),
    ]
    for name, values in rows:
        values = sorted(values)
        print(
            f"{name:<30} turns {len(values)}  p50 {statistics.median(values):6.2f} ms  "
            f"p95 {values[int(0.95 * (len(values) - 1))]:6.2f} ms"
        )


if __name__ == "__main__":
    main()
