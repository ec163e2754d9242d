"""A training set written to a folder and read back: build it where the knowledge index lives, train elsewhere.

`bot finetune data --out DIR` writes `train.jsonl` (the conversations), `dev.jsonl` (the held-out conversations
the run evaluates before and after) and `build.json` (what was skipped and why). `bot finetune sft --data DIR`
trains on exactly those conversations, so a GPU machine needs neither the index nor the embedder, and the
adapter's data hash is the one a run on the serving machine would have recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.contracts import Message
from bot.errors import ServicebotError
from finetune.data import SOURCES, Example, data_hash
from finetune.jsonl import read_jsonl

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TrainingSet:
    """The conversations a run trains on, the held-out ones it evaluates on, and what was left out."""

    examples: list[Example]
    dev: list[Example]
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _row(e: Example) -> dict[str, Any]:
    return {"id": e.id, "source": e.source, "messages": [{"role": m.role, "content": m.content} for m in e.messages]}


def _check(row: dict[str, Any]) -> str | None:
    if not isinstance(row.get("id"), str) or row.get("source") not in SOURCES:
        return f"needs a string 'id' and a 'source' among {', '.join(SOURCES)}"
    msgs = row.get("messages")
    if not isinstance(msgs, list) or len(msgs) < 2:
        return "needs a 'messages' list of at least two messages"
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return "each message needs a 'role' (system, user or assistant) and a string 'content'"
    if msgs[-1]["role"] != "assistant":
        return "the last message must be the assistant's answer (the training target)"
    return None


def _example(row: dict[str, Any]) -> Example:
    return Example(row["id"], row["source"], tuple(Message(m["role"], m["content"]) for m in row["messages"]))


def save(ts: TrainingSet, folder: Path) -> dict[str, Any]:
    """Write the set into `folder` (created); returns the summary also written to build.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", ts.examples), ("dev.jsonl", ts.dev)):
        text = "".join(json.dumps(_row(e), ensure_ascii=False) + "\n" for e in rows)
        (folder / name).write_text(text, encoding="utf-8")
    summary = {
        "examples": len(ts.examples),
        "dev_examples": len(ts.dev),
        "by_source": {s: sum(1 for e in ts.examples if e.source == s) for s in SOURCES},
        "data_hash": data_hash(ts.examples),
        "problems": ts.problems,
        "skipped": ts.skipped,
    }
    (folder / "build.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {**summary, "folder": str(folder)}


def load(folder: Path, strict: bool = False) -> TrainingSet:
    """Read a set written by `save`; malformed lines are reported by number and skipped (or fail, strict).

    Raises:
        ServicebotError: the folder or its train.jsonl is missing, a line is malformed under `strict`, or no
            training conversation is left.
    """
    train = folder / "train.jsonl"
    if not train.is_file():
        raise ServicebotError(f"{folder} holds no train.jsonl: write one with `bot finetune data --out {folder}`.")
    problems: list[str] = []
    examples = [_example(r) for r in read_jsonl(train, _check, strict, problems)]
    dev_file = folder / "dev.jsonl"
    dev = [_example(r) for r in read_jsonl(dev_file, _check, strict, problems)] if dev_file.is_file() else []
    if not examples:
        raise ServicebotError(f"The training set in {folder} is empty: train.jsonl has no usable conversation.")
    try:
        built = json.loads((folder / "build.json").read_text(encoding="utf-8"))
        earlier, skipped = list(built.get("problems", [])), list(built.get("skipped", []))
    except (OSError, ValueError, AttributeError):
        earlier, skipped = [], []
    return TrainingSet(examples, dev, earlier + problems, skipped)
