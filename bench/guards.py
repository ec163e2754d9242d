"""Guard-chain latency per turn, LLM excluded: the full default suite vs the two foundation guards (baseline).

Run: .venv/bin/python bench/guards.py [--turns 200] [--against-quantize none | --against-sentences 0]
Prints median and p95 of the input-guard chain per turn (and each guard's own median) over demo questions,
XSTest-style benign and attack prompts from our own test split, both chains in the same run so machine noise
shows in both; the full suite's figures are also given for the demo questions and our rows apart (harmful_intent's
review model runs only on turns that score high enough, so attack-heavy traffic costs more). "all run" makes every
guard check every turn (the worst case); "as served" stops where the pipeline does, at the first verdict the policy
acts on; conversation turns read the window of recent messages as well. Then the passage guards on each demo
question's retrieved passages (needs the index: `bot index rebuild`), reading the index's stored passage vectors vs
embedding every passage, on passages neither has seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.config import PluginSpec, load_settings
from bot.contracts import Message, Turn, Warmable
from bot.errors import ServicebotError
from bot.pipeline import _check_views
from bot.service import build_pipeline
from plugins.guards.intent import sentences

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_common import percentiles  # noqa: E402

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


async def chain_ms(
    pipeline: Any,
    text: str,
    served: bool = False,
    earlier: tuple[Message, ...] = (),
    per_guard: dict[str, list[float]] | None = None,
) -> float:
    """One turn through the input guards: every guard, or `served` as the pipeline runs them (it stops at the
    first verdict the policy acts on, so a refused jailbreak never pays for the harm classifier's review).
    `per_guard` collects each guard's own time."""
    turn = Turn((*earlier, Message("user", text)))
    views: list[str] = []
    verdicts = []
    start = time.perf_counter()
    for guard in pipeline.input_guards:
        began = time.perf_counter()
        verdict = await _check_views(guard, turn, views, 5.0)
        if per_guard is not None:
            per_guard.setdefault(guard.name, []).append((time.perf_counter() - began) * 1000)
        verdicts.append(verdict)
        views += list(verdict.views)
        if verdict.rewrite is not None:
            turn = turn.with_text(verdict.rewrite)
        if served and pipeline.policy.stops(verdicts):
            break
    return (time.perf_counter() - start) * 1000


async def passages_ms(pipeline: Any, question: str, tag: str, stored: bool) -> float:
    """The passage guards on one question's retrieved passages, made unseen by `tag`: with the index's stored
    vectors (as served) or without (each passage embedded, as before passages carried them)."""
    found = await pipeline.retriever.search(question, k=pipeline.k)
    passages = [replace(p, text=f"{p.text} {tag}", vector=p.vector if stored else None) for p in found]
    turn = Turn((Message("user", question),))
    start = time.perf_counter()
    for guard in pipeline.passage_guards:
        passages, _ = await guard.check_passages(turn, passages)
    return (time.perf_counter() - start) * 1000


def warmed(pipeline: Any) -> Any:
    """`pipeline` with its input guards' models loaded, so no turn measured pays for loading them."""
    for guard in pipeline.input_guards:
        if isinstance(guard, Warmable):
            guard.warm()
    return pipeline


def show(name: str, values: list[float]) -> None:
    print(f"{name:<38} {percentiles(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument(
        "--against-quantize",
        choices=["none", "int8"],
        default=None,
        help="also run the full suite with MiniLM in this setting (none: float32), every turn, interleaved with the "
        "defaults' in the same process, so the two compare under the same machine load",
    )
    parser.add_argument(
        "--against-sentences",
        type=int,
        default=None,
        help="also run the full suite with harmful_intent's `sentences` at this value (0: messages judged only as "
        "a whole), every turn, interleaved with the defaults' in the same process",
    )
    args = parser.parse_args()
    settings = load_settings()
    settings = settings.model_copy(update={"responder": PluginSpec(name="extractive")})
    full = warmed(build_pipeline(settings))
    base_settings = settings.model_copy(
        update={
            "guards": settings.guards.model_copy(
                update={"input": [PluginSpec(name="max_length"), PluginSpec(name="instruction_override")]}
            )
        }
    )
    base = build_pipeline(base_settings)
    texts = prompts(args.turns)

    per_guard: tuple[dict[str, list[float]], dict[str, list[float]]] = ({}, {})

    other, other_label = None, ""
    if args.against_quantize is not None:
        embedder = PluginSpec(name="minilm", config={"quantize": args.against_quantize})
        other = warmed(build_pipeline(settings.model_copy(update={"embedder": embedder})))
        other_label = f"MiniLM quantize: {args.against_quantize}"
    elif args.against_sentences is not None:
        specs = [
            PluginSpec(name=g.name, config={**g.config, "sentences": args.against_sentences})
            if g.name == "harmful_intent"
            else g
            for g in settings.guards.input
        ]
        other = warmed(
            build_pipeline(settings.model_copy(update={"guards": settings.guards.model_copy(update={"input": specs})}))
        )
        other_label = f"harmful_intent sentences: {args.against_sentences}"
    other_ms: list[float] = []

    async def run() -> tuple[list[float], list[float], list[float]]:
        a, b, c = [], [], []
        for i, t in enumerate(texts):
            a.append(await chain_ms(full, f"{t} ({i})", per_guard=per_guard[i % 2]))  # fresh text: no cache hits
            if other is not None:
                other_ms.append(await chain_ms(other, f"{t} <{i}>"))  # its own fresh text: caches may be shared
            b.append(await chain_ms(full, f"{t} [{i}]", served=True))
            c.append(await chain_ms(base, f"{t} ({i})"))
        return a, b, c

    full_ms, served_ms, base_ms = asyncio.run(run())
    label = f"full suite ({len(full.input_guards)} input guards)"
    # The prompts alternate: demo questions (honest, in-domain) at even positions, our safety examples at odd ones.
    rows = [
        (label + ", all run", full_ms),
        ("  of which demo questions", full_ms[0::2]),
        ("  of which our safety examples", full_ms[1::2]),
        ("full suite as served", served_ms),
        ("  of which our safety examples", served_ms[1::2]),
        ("baseline (2 pattern guards)", base_ms),
    ]
    several = [i for i, t in enumerate(texts) if len(sentences(t, 6)) > 1]
    rows.append((f"  of which messages of several sentences ({len(several)})", [full_ms[i] for i in several]))
    if other is not None:
        rows += [
            (f"{other_label}, all run", other_ms),
            ("  of which demo questions", other_ms[0::2]),
            ("  of which our safety examples", other_ms[1::2]),
            ("  of which messages of several sentences", [other_ms[i] for i in several]),
        ]
    for name, values in rows:
        show(name, values)
    for which, times in zip(("demo questions", "our safety examples"), per_guard, strict=True):
        print(
            f"  per guard, {which} (all run): "
            + ", ".join(f"{g} {statistics.median(v):.2f}" for g, v in times.items())
            + " ms (p50)"
        )

    questions = texts[0::2]

    async def run_conversations() -> list[float]:
        """Turns 2-5 of conversations of five demo questions: the learned guards also read the window of recent
        messages (the previous turn's window comes from the score cache)."""
        out = []
        for c in range(0, len(questions) - 4, 5):
            earlier: tuple[Message, ...] = ()
            for t, q in enumerate(questions[c : c + 5]):
                ms = await chain_ms(full, q, served=True, earlier=earlier)
                out += [ms] if t else []
                earlier += (Message("user", q), Message("assistant", "Okay."))
        return out

    show("conversation turns 2-5, as served", asyncio.run(run_conversations()))

    async def run_passages() -> tuple[list[float], list[float]]:
        a, b = [], []
        for i, q in enumerate(questions):
            a.append(await passages_ms(full, q, f"(s{i})", stored=True))
            b.append(await passages_ms(full, q, f"(e{i})", stored=False))
        return a, b

    try:
        stored_ms, embedded_ms = asyncio.run(run_passages())
    except ServicebotError as exc:
        print(f"passage guards: not measured ({exc})")
        return
    show(f"passage guards, top {full.k}, stored vectors", stored_ms)
    show("  baseline: embedding each passage", embedded_ms)


if __name__ == "__main__":
    main()
