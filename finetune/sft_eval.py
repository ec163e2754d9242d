"""Before/after measures for an SFT run: per-objective loss on held-out examples and answer F1 on held-out questions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.contracts import Message, Turn
from finetune.data import REFUSAL, Example, SearchFn, grounded, heldout_questions, normalise, prompt_messages
from finetune.metrics import token_f1


def encode(tok: Any, example: Example, max_length: int) -> tuple[list[int], int] | None:
    """Token ids of prompt + answer + end-of-turn, and how many trailing ids are the target; None if too long."""
    prompt = [{"role": m.role, "content": m.content} for m in example.messages[:-1]]
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    target = tok(example.messages[-1].content, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if len(ids) + len(target) > max_length:
        return None
    return list(ids) + list(target), len(target)


def _device(model: Any) -> Any:
    """Where the model's weights live (cpu or a CUDA device): its inputs go there too."""
    return next(model.parameters()).device


def example_loss(model: Any, ids: list[int], n_target: int) -> Any:
    """Mean cross-entropy over the answer tokens only (logits are computed for those positions alone)."""
    import torch
    import torch.nn.functional as F

    x = torch.tensor([ids], device=_device(model))
    out = model(input_ids=x, attention_mask=torch.ones_like(x), logits_to_keep=n_target + 1)
    return F.cross_entropy(out.logits[0, :-1].float(), x[0, -n_target:])


def dev_examples(qa_file: Any, search: SearchFn, k: int, system: str, limit: int) -> list[Example]:
    """Held-out conversations, never trained on: demo held-out questions, and our own harmful test prompts."""
    from finetune.jsonl import read_jsonl
    from plugins.safety.dataset import OURS

    out = []
    for row in heldout_questions(qa_file)[:limit]:
        found = grounded(search, row["question"], row["article_ids"], k)
        if found:
            msgs = prompt_messages(Turn((Message("user", row["question"]),)), found[0], system)
            out.append(Example(row["id"], "knowledge", (*msgs, Message("assistant", f"{row['answer']} [{found[1]}]"))))
    harmful = [r["text"] for r in read_jsonl(OURS / "harmful_en.jsonl") if r.get("split") == "test"]
    for text in harmful[:limit]:
        msgs = prompt_messages(Turn((Message("user", text),)), search(text, k), system)
        out.append(Example(f"refuse:{normalise(text)[:40]}", "safety", (*msgs, Message("assistant", REFUSAL))))
    return out


def objective_losses(model: Any, tok: Any, examples: Sequence[Example], max_length: int) -> dict[str, float]:
    """Mean answer loss per objective (helpful, safe) on held-out conversations."""
    import torch

    sums: dict[str, list[float]] = {}
    model.eval()
    with torch.no_grad():
        for e in examples:
            enc = encode(tok, e, max_length)
            if enc:
                sums.setdefault(e.objective, []).append(float(example_loss(model, *enc)))
    return {k: round(sum(v) / len(v), 4) for k, v in sums.items()}


def answer_f1(model: Any, tok: Any, examples: Sequence[Example], max_new_tokens: int = 64) -> float | None:
    """Mean token F1 of greedy answers to the held-out helpful conversations (the model alone, no guards)."""
    import torch

    helpful = [e for e in examples if e.objective == "helpful"]
    if not helpful:
        return None
    scores = []
    model.eval()
    for e in helpful:
        chat = [{"role": m.role, "content": m.content} for m in e.messages[:-1]]
        enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        enc = {k: v.to(_device(model)) for k, v in enc.items()}
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=1.05,
                pad_token_id=tok.eos_token_id,
            )
        answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        scores.append(token_f1(answer, e.messages[-1].content))
    return round(sum(scores) / len(scores), 4)
