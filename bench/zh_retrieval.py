"""How well Chinese questions reach English help articles: the top passage score of our Chinese in-domain questions
(and, for the retrieval rail's other side, our Chinese harmful requests) with the safety gloss alone vs the
`zh_gloss` table (safety + support vocabulary), and with the CC-CEDICT rendering appended too
(`zh_gloss: {dictionary: true}`), each word's first reading (the classifiers') vs its everyday one (what `zh_gloss`
appends). English in-domain questions are the baseline.

Usage: python bench/zh_retrieval.py [--data-dir var]   (needs a built demo index: bot prepare)
All rows are our own (plugins/safety/data); train rows were used to write the support gloss, test rows were not.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bot.config import Settings
from bot.service import Service
from plugins.guards.gloss import TABLE
from plugins.safety.cedict import Readings, render
from plugins.safety.gloss import gloss

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "plugins" / "safety" / "data"


def rows(pattern: str, category: str | None) -> list[dict[str, str]]:
    out = []
    for path in sorted(DATA.glob(pattern)):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else None
            if row and (category is None or row["category"] == category):
                out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var")
    args = parser.parse_args()
    settings = Settings.model_validate(
        {
            "data_dir": args.data_dir,
            "responder": "extractive",
            "knowledge": {"source": ROOT / "knowledge/demo/articles"},
        }
    )
    retriever = Service.start(settings, warm=False).pipeline.retriever

    def top(text: str, words: Callable[[str], str], readings: Readings | None = None) -> float:
        g = words(text)
        query = f"{text}\n[{g}]" if g else text
        if readings is not None:
            query = f"{query}\n{render(text, readings)}"
        return max((p.score for p in retriever.search_sync(query, 3)), default=0.0)  # type: ignore[attr-defined]

    glosses: dict[str, tuple[Callable[[str], str], Readings | None]] = {
        "safety gloss only": (gloss, None),
        "zh_gloss (safety + support)": (lambda t: gloss(t, TABLE), None),
        "zh_gloss + CEDICT, first": (lambda t: gloss(t, TABLE), "first"),
        "zh_gloss + CEDICT, everyday": (lambda t: gloss(t, TABLE), "everyday"),
    }
    zh, en, harmful = (
        rows("benign*_zh.jsonl", "in_domain"),
        rows("benign*_en.jsonl", "in_domain"),
        rows("harmful*_zh.jsonl", None),
    )
    for name, (words, readings) in glosses.items():
        for split in ("train", "test"):
            s = np.array([top(r["text"], words, readings) for r in zh if r["split"] == split])
            print(
                f"{name:28s} ZH in-domain {split:5s} n={len(s):3d}: median {np.median(s):.3f}, "
                f"< 0.2 {100 * np.mean(s < 0.2):4.1f} %, < 0.25 {100 * np.mean(s < 0.25):4.1f} %"
            )
        s = np.array([top(r["text"], words, readings) for r in harmful if r["split"] == "train"])
        print(
            f"{name:28s} ZH harmful train n={len(s)}: >= 0.2 {100 * np.mean(s >= 0.2):4.1f} %, "
            f">= 0.25 {100 * np.mean(s >= 0.25):4.1f} %"
        )
    s = np.array([top(r["text"], gloss) for r in en if r["split"] == "train"])
    print(
        f"{'baseline':28s} EN in-domain train n={len(s)}: median {np.median(s):.3f}, "
        f"< 0.2 {100 * np.mean(s < 0.2):4.1f} %, < 0.25 {100 * np.mean(s < 0.25):4.1f} %"
    )


if __name__ == "__main__":
    main()
