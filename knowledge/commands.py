"""Commands knowledge adds to the `bot` CLI (through the `servicebot.cli` entry point): `bot eval retrieval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.cli import ConfigOpt, _settings, friendly
from bot.errors import ServicebotError

METRICS = ("recall@1", "recall@5", "mrr", "ndcg@5")


def format_report(report: dict[str, Any]) -> str:
    """A readable table: each mode overall and per split, then hybrid per category."""
    lines = [f"{report['questions']} questions from {report['qa_file']} on version {report['version']}"]
    lines.append(f"{'mode':<8} {'subset':<10} " + " ".join(f"{m:>9}" for m in METRICS))
    modes = [m for m in ("vector", "bm25", "hybrid") if m in report]
    for mode in modes:
        for subset in [k for k in report[mode] if k not in {"by_category", "misses"}]:
            row = report[mode][subset]
            lines.append(f"{mode:<8} {subset:<10} " + " ".join(f"{row[m]:>9.3f}" for m in METRICS))
    last = modes[-1] if modes else None
    if last:
        lines.append(f"{last} by category:")
        for cat, row in report[last]["by_category"].items():
            lines.append(f"  {cat:<22} " + " ".join(f"{row[m]:>9.3f}" for m in METRICS) + f"  ({row['questions']})")
    return "\n".join(lines)


def register(groups: dict[str, typer.Typer]) -> None:
    """Add `bot eval retrieval` to the CLI."""

    @groups["eval"].command("retrieval")
    @friendly
    def retrieval(
        qa: Annotated[Path | None, typer.Option("--qa", help="QA JSONL (default: knowledge.qa_file).")] = None,
        config: ConfigOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    ) -> None:
        """Recall@1/5, MRR and nDCG@5 of vector-only, BM25-only and hybrid retrieval, per split and category."""
        from bot.service import Service

        settings = _settings(config)
        qa_file = qa or settings.knowledge.qa_file or Path("knowledge/demo/qa.jsonl")
        retriever = Service.start(settings, warm=False).pipeline.retriever
        if not hasattr(retriever, "evaluate"):
            raise ServicebotError(f"The retriever '{settings.retriever.name}' cannot be evaluated.")
        report = retriever.evaluate(qa_file)
        print(json.dumps(report) if as_json else format_report(report))
