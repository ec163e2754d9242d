"""The harmful-intent guard with and without its review model, on our own test rows (never trained on).

Run: .venv/bin/python bench/harm_review.py [--limit N] [--show] [--exclude GLOB] [--bars 0.7,0.74,0.8]
For each group of test rows (harmful and benign, English and Chinese, in-domain questions) prints the share the
guard blocks with the review model on (the default) and off, and the guard's latency per turn (median and p95,
sentence embedding included) for both, measured alternately in the same run on texts neither has seen.

--bars prints instead the share blocked at each `review_threshold` (review on): how the bar is set for a retrained
review model, whose operating point moves with each retraining (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.config import PluginSpec, load_settings
from bot.contracts import Message, Turn
from bot.service import build_pipeline
from plugins.safety.cedict import has_chinese

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_common import percentiles  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "plugins/safety/data"


def rows(limit: int, exclude: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(group, text) for every test row of our example files, but those whose name matches an `exclude` glob."""
    out: list[tuple[str, str]] = []
    for path in sorted(DATA.glob("*.jsonl")):
        if any(path.match(pattern) for pattern in exclude):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("split") != "test" or row["label"] not in ("harmful", "benign"):
                continue
            lang = "zh" if has_chinese(row["text"]) else "en"
            kind = "in_domain" if row["label"] == "benign" and row["category"] == "in_domain" else row["label"]
            out.append((f"{kind} {lang}", row["text"]))
    return out[:limit] if limit else out


def guard(review: bool, bar: float | None = None) -> Any:
    settings = load_settings()
    extra = {} if bar is None else {"review_threshold": bar}
    specs = [
        PluginSpec(name="harmful_intent", config={**s.config, "review": review, **extra})
        for s in settings.guards.input
        if s.name == "harmful_intent"
    ]
    settings = settings.model_copy(
        update={
            "responder": PluginSpec(name="extractive"),
            "guards": settings.guards.model_copy(update={"input": specs, "output": []}),
        }
    )
    g: Any = build_pipeline(settings).input_guards[0]
    g.warm()
    return g


def bars(texts: list[tuple[str, str]], values: list[float]) -> None:
    """The share of each group blocked at each review bar (the classifier and review model shared by all)."""
    guards = {bar: guard(True, bar) for bar in values}
    blocked: dict[str, dict[float, int]] = defaultdict(lambda: defaultdict(int))
    total: dict[str, int] = defaultdict(int)

    async def run() -> None:
        for group, text in texts:
            total[group] += 1
            for bar, g in guards.items():
                blocked[group][bar] += (await g.check(Turn((Message("user", text),)))).blocked

    asyncio.run(run())
    print(f"{'blocked at review_threshold':<28}{'n':>6}" + "".join(f"{bar:>8.2f}" for bar in values))
    for group in sorted(total):
        cells = "".join(f"{100 * blocked[group][bar] / total[group]:>7.1f}%" for bar in values)
        print(f"{group:<28}{total[group]:>6}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=0, help="first N test rows only (0: all)")
    parser.add_argument("--show", action="store_true", help="print the rows the review model changes the verdict on")
    parser.add_argument(
        "--exclude", action="append", default=[], help="skip data files matching this glob (e.g. a new batch)"
    )
    parser.add_argument("--bars", default="", help="comma-separated review_threshold values to compare (review on)")
    args = parser.parse_args()
    if args.bars:
        bars(rows(args.limit, args.exclude), [float(b) for b in args.bars.split(",")])
        return
    on, off = guard(True), guard(False)
    texts = rows(args.limit, args.exclude)
    blocked: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total: dict[str, int] = defaultdict(int)
    ms: dict[str, list[float]] = {"review on": [], "review off": []}

    async def run() -> None:
        for i, (group, text) in enumerate(texts):
            total[group] += 1
            verdicts = {
                name: await g.check(Turn((Message("user", text),)))
                for name, g in (("review on", on), ("review off", off))
            }
            for name, v in verdicts.items():
                blocked[group][name] += v.blocked
            if args.show and verdicts["review on"].blocked != verdicts["review off"].blocked:
                print(
                    f"{group}: {'blocked' if verdicts['review on'].blocked else 'allowed'} with review: {text!r} "
                    f"({verdicts['review on'].reason})"
                )
            # Timing on fresh texts (the guards share the classifier's score cache), alternating which goes first.
            pair = [("review on", on), ("review off", off)][:: 1 if i % 2 else -1]
            for name, g in pair:
                turn = Turn((Message("user", f"{text} (#{i} {name})"),))
                start = time.perf_counter()
                await g.check(turn)
                ms[name].append((time.perf_counter() - start) * 1000)

    asyncio.run(run())
    print(f"{'test rows':<16}{'n':>6}{'blocked, review on':>22}{'review off':>14}")
    for group in sorted(total):
        n = total[group]
        print(
            f"{group:<16}{n:>6}{100 * blocked[group]['review on'] / n:>21.1f}%"
            f"{100 * blocked[group]['review off'] / n:>13.1f}%"
        )
    for name, values in ms.items():
        print(f"harmful_intent latency, {name}: {percentiles(values)}")


if __name__ == "__main__":
    main()
