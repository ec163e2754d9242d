"""Demo QA retrieval quality per embedder: vector-only and BM25-only baselines vs hybrid, per split.

Usage: python bench/retrieval.py [--embedder minilm|static|static:NAME ...] [--quantize int8] [--data-dir var]
`--embedder` may be given several times to compare in one run; `static:NAME` is a table tuned by
`bot finetune retriever --embedder static --name NAME`, found in `<data-dir>/embedders/NAME`. A held-out summary
(the split no tuning sees) closes the run.
(fusion was tuned on the train split with bench/retrieval_tune.py, with the default embedder)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bot.config import PluginSpec, Settings
from bot.service import Service
from knowledge.commands import format_report

DEMO = Path(__file__).resolve().parent.parent / "knowledge" / "demo"


def run(spec: str, quantize: str | None, data_dir: Path, retriever: dict[str, Any] | None = None) -> dict[str, Any]:
    """Index the demo articles with one embedder (`name` or `name:tuned-name`) and evaluate the demo QA (with the
    `chroma` retriever's `retriever` config, default: its defaults)."""
    name, _, model = spec.partition(":")
    config: dict[str, Any] = {"quantize": quantize} if quantize and name == "minilm" else {}
    with tempfile.TemporaryDirectory() as tmp:
        if model:  # the tuned embedder is found by name, as `embedder: {config: {model: NAME}}` finds it
            shutil.copytree(data_dir / "embedders" / model, Path(tmp) / "embedders" / model)
            config["model"] = model
        settings = Settings.model_validate(
            {
                "data_dir": Path(tmp),
                "responder": "extractive",
                "embedder": {"name": name, "config": config},
                "retriever": PluginSpec(name="chroma", config=retriever or {}),
                "knowledge": {"source": DEMO / "articles"},
            }
        )
        service = Service.start(settings, warm=False)
        service.index.rebuild(DEMO / "articles")
        report: dict[str, Any] = service.pipeline.retriever.evaluate(DEMO / "qa.jsonl")  # type: ignore[attr-defined]
        report["embedder"] = service.pipeline.embedder.id
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedder", action="append", help="minilm, static or static:NAME (repeatable)")
    parser.add_argument("--quantize", default=None, help="minilm's quantize setting (none | int8)")
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="where tuned embedders are (var)")
    args = parser.parse_args()
    summary = []
    for spec in args.embedder or ["minilm"]:
        report = run(spec, args.quantize, args.data_dir)
        print(f"== {spec} ({report['embedder']})")
        print(format_report(report))
        print("hybrid misses at 5:", ", ".join(report["hybrid"]["misses"]) or "none")
        summary.append((spec, report))
    print("held-out questions (recall@5 / MRR):")
    for spec, report in summary:
        cells = [
            f"{m} {report[m]['heldout']['recall@5']:.3f} / {report[m]['heldout']['mrr']:.3f}"
            for m in ("hybrid", "vector", "bm25")
            if "heldout" in report[m]
        ]
        print(f"  {spec:<24} " + "   ".join(cells))


if __name__ == "__main__":
    main()
