"""Builds SFT conversations from the knowledge base, accepted transcripts and safety examples, and mixes them."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Message, Passage, Turn
from bot.errors import ServicebotError
from finetune.jsonl import read_jsonl

SearchFn = Callable[[str, int], list[Passage]]
SOURCES = ("knowledge", "articles", "transcripts", "safety")
OBJECTIVE = {"knowledge": "helpful", "articles": "helpful", "transcripts": "helpful", "safety": "safe"}
REFUSAL = (
    "I'm sorry, but I can't help with that. I'm happy to help with your Kestrel Home devices, orders, billing "
    "or account."
)
MAX_WEIGHT = 4.0  # a tiny source with a big weight would otherwise dominate every step it appears in


class DataConfig(BaseModel):
    """Where training conversations come from and how much of each."""

    model_config = ConfigDict(extra="forbid")
    qa_file: Path = Path("knowledge/demo/qa.jsonl")  # only its `train` split is ever trained on
    articles: bool = True  # one "what does this article say" conversation per article
    transcripts: list[Path] = Field(default_factory=list)  # JSONL of {"messages": [...], "rating": "up"}
    records: bool = True  # also the answers customers rated thumbs-up (the records store's feedback)
    refusals: int = Field(default=40, ge=0)  # harmful requests -> kind refusal
    benign: int = Field(default=40, ge=0)  # alarming-sounding in-domain questions -> helpful answer
    passages: int | None = Field(default=None, ge=1)  # passages per prompt (default: knowledge.k)
    # The knowledge target: `reference` = the QA file's answer, cited; `extract` = the one or two consecutive
    # sentences of an answering passage that best match that answer (token F1), cited: the model learns to find
    # and quote the answer in its passages rather than to paraphrase, which a small model does unfaithfully.
    answers: Literal["reference", "extract"] = "reference"


@dataclass(frozen=True)
class Example:
    """One training conversation; the last message is the assistant's target answer."""

    id: str
    source: str
    messages: tuple[Message, ...]

    @property
    def objective(self) -> str:
        """`helpful` or `safe`: the two objectives the weighted-sum loss balances."""
        return OBJECTIVE[self.source]


@dataclass
class DataReport:
    """What went into a training set, and what was left out and why."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def normalise(text: str) -> str:
    """The key used to keep held-out questions out of training."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def prompt_messages(question: Turn, passages: Sequence[Passage], system: str) -> tuple[Message, ...]:
    """Exactly the chat the `hf` responder builds at inference time."""
    from plugins.responders.prompt import build_messages

    return tuple(Message(m["role"], m["content"]) for m in build_messages(question, passages, system))  # type: ignore[arg-type]


def grounded(search: SearchFn, question: str, doc_ids: Sequence[str], k: int) -> tuple[list[Passage], int] | None:
    """The passages retrieval gives for `question`, with one from an answering article guaranteed.

    Returns the passages and the 1-based number of the first answering one, or None when no chunk of the
    answering articles is found at all.
    """
    found = search(question, k)
    gold = next((i for i, p in enumerate(found) if p.doc_id in doc_ids), None)
    if gold is None:
        deeper = next((p for p in search(question, 20) if p.doc_id in doc_ids), None)
        if deeper is None:
            return None
        found, gold = [*found[: k - 1], deeper], min(len(found), k - 1)
    return found, gold + 1


def _qa_check(row: dict[str, Any]) -> str | None:
    if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
        return "needs string 'question' and 'answer'"
    if not isinstance(row.get("article_ids"), list) or not row["article_ids"]:
        return "needs a non-empty 'article_ids' list"
    return None


def heldout_questions(qa_file: Path) -> list[dict[str, Any]]:
    """The held-out rows of the QA file (evaluation only)."""
    return [r for r in read_jsonl(qa_file, _qa_check) if r.get("split") != "train"]


def _knowledge(
    cfg: DataConfig, search: SearchFn, k: int, system: str, report: DataReport, strict: bool
) -> list[Example]:
    out: list[Example] = []
    for row in read_jsonl(cfg.qa_file, _qa_check, strict, report.problems):
        if row.get("split") != "train":  # held-out questions never reach training
            continue
        found = grounded(search, row["question"], row["article_ids"], k)
        if found is None:
            report.skipped.append(f"{row.get('id')}: no chunk of {row['article_ids']} is indexed")
            continue
        passages, n = found
        text = row["answer"].strip()
        if cfg.answers == "extract":
            text, n = best_extract(passages, row["article_ids"], text) or (text, n)
        answer = Message("assistant", f"{text} [{n}]")
        msgs = prompt_messages(Turn((Message("user", row["question"]),)), passages, system)
        out.append(Example(str(row.get("id", len(out))), "knowledge", (*msgs, answer)))
    return out


def best_extract(passages: Sequence[Passage], doc_ids: Sequence[str], reference: str) -> tuple[str, int] | None:
    """The one or two consecutive sentences of an answering passage with the best token F1 against `reference`,
    and that passage's 1-based number; None when no answering passage has a sentence sharing a word with it."""
    from finetune.metrics import token_f1
    from plugins.responders.extractive import passage_sentences

    best: tuple[float, str, int] | None = None
    for number, passage in enumerate(passages, 1):
        if passage.doc_id not in doc_ids:
            continue
        sentences = passage_sentences(passage)
        for width in (1, 2):
            for i in range(len(sentences) - width + 1):
                text = " ".join(sentences[i : i + width])
                score = token_f1(text, reference)
                if score > 0 and (best is None or score > best[0]):
                    best = (score, text, number)
    return (best[1], best[2]) if best else None


def _articles(source: Path, search: SearchFn, k: int, system: str, report: DataReport) -> list[Example]:
    """An article's title as the question and its opening sentences, cited, as the answer."""
    out = []
    for path in sorted(source.glob("*.md")):
        text = path.read_text(encoding="utf-8", errors="replace")
        meta = dict(re.findall(r"^(id|title):\s*(.+)$", text.split("\n---", 1)[0], re.M))
        body = text.split("\n---", 1)[-1]
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip() and not p.lstrip().startswith("#")]
        if not meta.get("title") or not paragraphs:
            report.skipped.append(f"{path.name}: no title or body")
            continue
        doc_id = meta.get("id", path.stem).strip()
        question = f"Can you help me with this: {meta['title'].strip().lower()}?"
        found = grounded(search, question, [doc_id], k)
        if found is None:
            report.skipped.append(f"{path.name}: not indexed")
            continue
        passages, n = found
        sentences = re.split(r"(?<=[.!?])\s+", " ".join(paragraphs[0].split()))
        msgs = prompt_messages(Turn((Message("user", question),)), passages, system)
        out.append(
            Example(f"article:{doc_id}", "articles", (*msgs, Message("assistant", " ".join(sentences[:2]) + f" [{n}]")))
        )
    return out


def _safety(cfg: DataConfig, search: SearchFn, k: int, system: str, seed: int, held: set[str]) -> list[Example]:
    """Kind refusals of harmful requests and helpful answers to alarming-sounding benign questions."""
    from plugins.guards.intent import safety_data_dir
    from plugins.responders.extractive import extractive_answer
    from plugins.safety.dataset import OURS, build_dataset

    # build_dataset drops anything that also appears in the safety holdout sets; test splits stay out too.
    pool = [e for e in build_dataset(safety_data_dir(), None) if e.split == "train" and normalise(e.text) not in held]
    allowed = {normalise(e.text) for e in pool}
    harmful = sorted(
        e.text
        for e in pool
        if "harmful" in e.labels and "jailbreak" not in e.labels and e.category != "self_harm" and len(e.text) < 400
    )
    benign = sorted(
        r["text"]
        for name in ("benign_en", "benign2_en")
        for r in read_jsonl(OURS / f"{name}.jsonl")
        if r.get("split") == "train"
        and r.get("category") in ("alarming_in_domain", "in_domain")
        and normalise(str(r.get("text", ""))) in allowed
    )
    rng = random.Random(seed)
    out = []
    for text in rng.sample(harmful, min(cfg.refusals, len(harmful))):
        prompt = prompt_messages(Turn((Message("user", text),)), search(text, k), system)
        out.append(Example(f"refuse:{normalise(text)[:40]}", "safety", (*prompt, Message("assistant", REFUSAL))))
    for text in rng.sample(benign, len(benign)):
        if sum(1 for e in out if e.id.startswith("benign:")) >= cfg.benign:
            break
        passages = search(text, k)
        answer = extractive_answer(text, passages) if passages else ""
        if answer:
            prompt = prompt_messages(Turn((Message("user", text),)), passages, system)
            out.append(Example(f"benign:{normalise(text)[:40]}", "safety", (*prompt, Message("assistant", answer))))
    return out


def build_examples(
    cfg: DataConfig,
    search: SearchFn,
    *,
    k: int,
    system: str,
    source: Path,
    database: str | Path,
    weights: dict[str, float],
    seed: int = 0,
    strict: bool = False,
) -> tuple[list[Example], DataReport]:
    """Every training conversation from the sources with a non-zero weight, and a report of what was skipped.

    Raises:
        ServicebotError: a file is unreadable, a line is malformed under `strict`, or nothing is left to train on.
    """
    report = DataReport()
    k = cfg.passages or k
    held = {normalise(r["question"]) for r in heldout_questions(cfg.qa_file)} if cfg.qa_file.is_file() else set()
    examples: list[Example] = []
    if weights.get("knowledge", 0) > 0:
        examples += _knowledge(cfg, search, k, system, report, strict)
    if weights.get("articles", 0) > 0 and cfg.articles:
        examples += _articles(source, search, k, system, report)
    if weights.get("transcripts", 0) > 0:
        from finetune.transcripts import transcript_examples

        examples += transcript_examples(cfg, database, report, strict, search, k, system, held)
    if weights.get("safety", 0) > 0:
        examples += _safety(cfg, search, k, system, seed, held)
    report.counts = dict(Counter(e.source for e in examples))
    if not examples:
        raise ServicebotError("The training set is empty: no source with a non-zero weight produced any example.")
    return examples, report


def loss_weights(examples: Sequence[Example], weights: dict[str, float]) -> list[float]:
    """Per-example loss weights so that an epoch's loss is sum_s (w_s / sum w) * mean loss of source s.

    This is the weighted-sum multi-objective loss: each source counts by its operator-set weight, however
    many examples it has (capped at MAX_WEIGHT per example so a tiny source cannot swamp a step).
    """
    counts = Counter(e.source for e in examples)
    total = sum(weights.get(s, 0.0) for s in counts)
    return [min(MAX_WEIGHT, weights[e.source] / total * len(examples) / counts[e.source]) for e in examples]


def data_hash(examples: Sequence[Example]) -> str:
    """A content hash of the training conversations (recorded on the adapter's card)."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.source, [[m.role, m.content] for m in e.messages]]).encode())
    return digest.hexdigest()[:16]
