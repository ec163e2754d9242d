"""Can the model choose the sentence that answers? Token F1 against the demo reference answers when the answer is
one sentence of the retrieved passages, chosen four ways: by word overlap with the question (the `extractive`
responder's rule), by the language model's likelihood of the sentence as its answer (mean log-probability per token
of "sentence [n]" after the responder's own prompt), the same with a LoRA adapter (`--adapter`), and the best
sentence in hindsight (the ceiling). Held-out questions are the figure; train questions show what an adapter
memorised.

The `extractive_answer` rows are the cited extract the `extractive` responder and the grounding and over-refusal
guards give: two sentences of the top passage by shared words (without an embedder), or of the passage holding the
sentence closest in meaning to the question, by the index embedder's cosine (with one, the default).

Usage: python bench/answer_choice.py [--data-dir var] [--adapter NAME|PATH] [--limit N] [--no-model]
(needs a built demo index: bot prepare). About 4 s a question for each model scored on 2 cores; --no-model
leaves the language model out (seconds in all).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.contracts import Message, Passage, Turn
from bot.service import Service
from finetune.metrics import token_f1
from plugins.responders import adapters
from plugins.responders.extractive import extractive_answer, passage_sentences
from plugins.responders.model_cache import resolve
from plugins.responders.prompt import build_messages

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "knowledge" / "demo"
QA = DEMO / "qa.jsonl"

Candidates = list[tuple[int, str]]  # (passage number, sentence)


def likelihood_chooser(model: Any, tok: Any) -> Callable[[str, Sequence[Passage], Candidates], str]:
    """Pick the candidate the model finds likeliest as its answer: the prompt is run once, and every candidate is
    scored in one batch on copies of its KV cache."""
    import torch

    def choose(question: str, passages: Sequence[Passage], cands: Candidates) -> str:
        turn = Turn((Message("user", question),))
        enc = tok.apply_chat_template(build_messages(turn, passages), add_generation_prompt=True, return_dict=True)
        ids = list(enc["input_ids"])
        texts = [tok(f"{s} [{n}]", add_special_tokens=False)["input_ids"] for n, s in cands]
        width = max(len(t) for t in texts)
        with torch.no_grad():
            out = model(torch.tensor([ids]), use_cache=True)
            first = out.logits[0, -1].log_softmax(-1)
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(texts))
            batch = torch.tensor([t + [0] * (width - len(t)) for t in texts])
            mask = torch.tensor([[1] * (len(ids) + len(t)) + [0] * (width - len(t)) for t in texts])
            logp = model(batch, attention_mask=mask, past_key_values=cache).logits.log_softmax(-1)
        scores = []
        for i, t in enumerate(texts):
            per_token = [float(first[t[0]])] + [float(logp[i, j, t[j + 1]]) for j in range(len(t) - 1)]
            scores.append(statistics.mean(per_token))
        return cands[max(range(len(cands)), key=scores.__getitem__)][1]

    return choose


def _uncited(answer: str) -> str:
    """The extract without its closing citation, as the reference answers are written."""
    return re.sub(r" \[\d+\]$", "", answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--adapter", help="an adapter name in <data-dir>/adapters, or a folder")
    parser.add_argument("--limit", type=int, default=0, help="at most this many questions (0 = all)")
    parser.add_argument("--no-model", action="store_true", help="only the choosers that need no language model")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    settings = Settings.model_validate(
        {"data_dir": args.data_dir, "responder": "extractive", "knowledge": {"source": DEMO / "articles"}}
    )
    service = Service.start(settings, warm=False)
    retriever = service.pipeline.retriever
    k = settings.knowledge.k
    rows = [json.loads(line) for line in QA.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    embedder = service.pipeline.guard_embedder  # what the grounding and over-refusal guards extract with
    choosers: dict[str, Callable[[str, Sequence[Passage], Candidates], str]] = {
        "word overlap, 1 sentence": lambda q, ps, _: _uncited(extractive_answer(q, ps, 1)),
        "extractive_answer, shared words (2)": lambda q, ps, _: _uncited(extractive_answer(q, ps, 2)),
        "extractive_answer, meaning (2)": lambda q, ps, _: _uncited(extractive_answer(q, ps, 2, embedder)),
    }
    if not args.no_model:
        path = resolve("default")
        tok = AutoTokenizer.from_pretrained(path)
        base = AutoModelForCausalLM.from_pretrained(path).eval()
        choosers["base model likelihood"] = likelihood_chooser(base, tok)
    if args.adapter and not args.no_model:
        model, _ = adapters.load(base, adapters.resolve(args.adapter, adapters.adapters_root(args.data_dir)))
        choosers[f"{args.adapter} likelihood"] = likelihood_chooser(model, tok)
    f1: dict[str, dict[str, list[float]]] = {
        name: {"heldout": [], "train": []} for name in [*choosers, "best sentence (ceiling)"]
    }
    seconds: dict[str, float] = dict.fromkeys(choosers, 0.0)
    for row in rows:
        passages = retriever.search_sync(row["question"], k)  # type: ignore[attr-defined]
        cands = [(n, s) for n, p in enumerate(passages, 1) for s in passage_sentences(p)]
        if not cands:
            continue
        split = "train" if row.get("split") == "train" else "heldout"
        for name, choose in choosers.items():
            start = time.perf_counter()
            answer = choose(row["question"], passages, cands)
            seconds[name] += time.perf_counter() - start
            f1[name][split].append(token_f1(answer, row["answer"]))
        f1["best sentence (ceiling)"][split].append(max(token_f1(s, row["answer"]) for _, s in cands))
    print(f"{'sentence chosen by':42} {'held-out F1':>11} {'train F1':>9} {'s/question':>10}")
    for name, scores in f1.items():
        per_q = seconds.get(name, 0.0) / max(len(rows), 1)
        held, train = (statistics.mean(scores[s]) if scores[s] else float("nan") for s in ("heldout", "train"))
        print(f"{name:42} {held:11.3f} {train:9.3f} {per_q:10.2f}")
    ceiling = f1["best sentence (ceiling)"]
    print(f"questions: {len(ceiling['heldout'])} held-out, {len(ceiling['train'])} train")


if __name__ == "__main__":
    main()
