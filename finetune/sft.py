"""Supervised fine-tuning with PEFT (LoRA or prefix tuning): weighted multi-source data, checkpoints, resume."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.config import Settings, describe_error
from bot.contracts import Passage
from bot.errors import ServicebotError
from finetune.data import SOURCES, DataConfig, Example, build_examples, data_hash, loss_weights
from finetune.prebuilt import TrainingSet
from finetune.prebuilt import load as load_training_set
from finetune.sft_eval import answer_f1, dev_examples, encode, example_loss, objective_losses
from finetune.store import adapters_root, save_adapter, save_atomically

Progress = Callable[[int, int], None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    top_layers: int | None = Field(default=None, ge=1)  # adapt only the top N layers: backward stops below them


class PrefixSettings(_Strict):
    virtual_tokens: int = Field(default=16, ge=1)


class SFTConfig(_Strict):
    """One SFT run, read from the operator's YAML (`bot finetune sft --config FILE`)."""

    name: str = "kestrel-lora"
    method: Literal["lora", "prefix"] = "lora"
    base_model: str = "default"
    seed: int = 7
    epochs: float = Field(default=1.0, gt=0)
    lr: float = Field(default=3e-4, gt=0)
    accumulate: int = Field(default=4, ge=1)  # examples per optimizer step
    max_length: int = Field(default=1024, ge=16)
    checkpoint_every: int = Field(default=10, ge=1)  # optimizer steps
    threads: int | None = Field(default=None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a CUDA GPU when torch sees one, else the CPU
    weights: dict[str, float] = {"knowledge": 1.0, "articles": 0.5, "transcripts": 1.0, "safety": 0.5}
    data: DataConfig = DataConfig()
    lora: LoraSettings = LoraSettings()
    prefix: PrefixSettings = PrefixSettings()
    eval_questions: int = Field(default=17, ge=0)  # held-out questions answered before and after (0: skip)

    @field_validator("weights")
    @classmethod
    def _known_sources(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SOURCES))
        if unknown or any(w < 0 for w in value.values()):
            raise ValueError(
                f"weights take sources {', '.join(SOURCES)} with non-negative values, not {unknown or value}"
            )
        return value


def load_config(path: Path | None, method: str | None = None) -> SFTConfig:
    """The run config from a YAML file (defaults when None); `method` overrides the file's.

    Raises:
        ServicebotError: the file is missing, not YAML, or has an unknown or invalid key.
    """
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError:
            raise ServicebotError(f"Fine-tuning config {path} cannot be read.") from None
        except yaml.YAMLError:
            raise ServicebotError(f"Fine-tuning config {path} is not valid YAML.") from None
        if not isinstance(raw, dict):
            raise ServicebotError(f"Fine-tuning config {path} must hold a mapping of settings.")
    try:
        cfg = SFTConfig(**raw)
        return cfg.model_copy(update={"method": method}) if method else cfg
    except ValidationError as exc:
        raise ServicebotError(describe_error(exc, f"Config error in {path or 'the fine-tuning defaults'}")) from None


def _peft_model(base: Any, cfg: SFTConfig) -> Any:
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    if cfg.method == "prefix":
        return get_peft_model(
            base, PrefixTuningConfig(num_virtual_tokens=cfg.prefix.virtual_tokens, task_type="CAUSAL_LM")
        )
    n = base.config.num_hidden_layers
    layers = list(range(max(0, n - cfg.lora.top_layers), n)) if cfg.lora.top_layers else None
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


def _searcher(settings: Settings) -> tuple[Callable[[str, int], list[Passage]], str, Path]:
    """Retrieval exactly as a turn sees it (min_score applied), the responder's system prompt, the KB source."""
    from bot.registry import PluginContext, build
    from plugins.responders.prompt import SYSTEM

    embedder = build("embedder", settings.embedder, PluginContext(settings))
    retriever = build("retriever", settings.retriever, PluginContext(settings, embedder=embedder))
    min_score = settings.knowledge.min_score

    def search(query: str, k: int) -> list[Passage]:
        return [p for p in asyncio.run(retriever.search(query, k)) if p.score >= min_score]

    return search, str(settings.responder.config.get("system_prompt", SYSTEM)), settings.knowledge.source


def _checkpoint(run: Path, model: Any, opt: Any, state: dict[str, Any]) -> None:
    import torch

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        rng: dict[str, Any] = {"rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": opt.state_dict(), **rng}, folder / "trainer.pt")
        (folder / "state.json").write_text(json.dumps(state), encoding="utf-8")

    save_atomically(run / "checkpoint", write)


def _resume(run: Path, model: Any, opt: Any, fingerprint: str) -> dict[str, Any] | None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = run / "checkpoint"
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint:  # other data or settings: that checkpoint is not this run's
        return None
    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    saved = torch.load(folder / "trainer.pt", weights_only=False, map_location="cpu")
    opt.load_state_dict(saved["optimizer"])  # moves the optimizer state to the parameters' device
    torch.set_rng_state(saved["rng"])
    if "cuda_rng" in saved and torch.cuda.is_available() and len(saved["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return dict(state)


def build_training_set(settings: Settings, cfg: SFTConfig, strict: bool = False) -> TrainingSet:
    """The run's conversations and held-out conversations, built through retrieval exactly as a turn sees it.

    Raises:
        ServicebotError: a file is unreadable, a line is malformed under `strict`, or nothing is left to train on.
    """
    search, system, source = _searcher(settings)
    examples, report = build_examples(
        cfg.data,
        search,
        k=settings.knowledge.k,
        system=system,
        source=source,
        database=settings.database_url or settings.data_dir / "servicebot.db",
        weights=cfg.weights,
        seed=cfg.seed,
        strict=strict,
    )
    dev = dev_examples(cfg.data.qa_file, search, cfg.data.passages or settings.knowledge.k, system, cfg.eval_questions)
    return TrainingSet(examples, dev, report.problems, report.skipped)


def resolve_device(choice: str) -> str:
    """`auto` -> cuda when torch sees a GPU, else cpu.

    Raises:
        ServicebotError: `cuda` was asked for and torch sees no CUDA device.
    """
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ServicebotError(
            "device: cuda was asked for, but torch sees no CUDA GPU (a CPU-only torch build, or no driver). "
            "Use device: auto or cpu."
        )
    return choice


def _dev_subset(dev: list[Example], limit: int) -> list[Example]:
    """At most `limit` held-out conversations per objective, in their order."""
    seen: dict[str, int] = {}
    out = []
    for e in dev:
        seen[e.objective] = seen.get(e.objective, 0) + 1
        if seen[e.objective] <= limit:
            out.append(e)
    return out


def train(
    settings: Settings,
    cfg: SFTConfig,
    progress: Progress | None = None,
    *,
    strict: bool = False,
    restart: bool = False,
    log: Callable[[str], None] = print,
    data: Path | None = None,
) -> dict[str, Any]:
    """Build the data (or read it from `data`, a folder `bot finetune data` wrote), evaluate, train (resuming an
    interrupted run), evaluate again, save adapter and card.

    Returns the report that is also written to the adapter's card.json.

    Raises:
        ServicebotError: bad config or data, or an empty training set.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from plugins.responders.model_cache import resolve

    hf_logging.disable_progress_bar()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ts = load_training_set(data, strict) if data is not None else build_training_set(settings, cfg, strict)
    examples = [e for e in ts.examples if cfg.weights.get(e.source, 0) > 0]
    if not examples:
        raise ServicebotError("The training set is empty: no source with a non-zero weight has any example.")
    for problem in ts.problems:
        log(f"skipped {problem}")
    path = resolve(cfg.base_model)
    tok = AutoTokenizer.from_pretrained(path)
    encoded = [(e, encode(tok, e, cfg.max_length)) for e in examples]
    too_long = [e.id for e, enc in encoded if enc is None]
    kept = [(e, enc) for e, enc in encoded if enc is not None]
    if not kept:
        raise ServicebotError(f"Every training example is longer than max_length={cfg.max_length} tokens.")
    weights = loss_weights([e for e, _ in kept], cfg.weights)
    digest = data_hash([e for e, _ in kept])
    # Where and how fast it runs does not change what is trained: a run resumes on another device or thread count.
    settings_json = cfg.model_dump_json(exclude={"eval_questions", "device", "threads"})
    fingerprint = hashlib.sha256(f"{digest}{settings_json}".encode()).hexdigest()[:16]

    torch.manual_seed(cfg.seed)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    dev = _dev_subset(ts.dev, cfg.eval_questions)
    model = _peft_model(base, cfg).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    run = settings.data_dir / "finetune-runs" / cfg.name
    if restart:
        shutil.rmtree(run, ignore_errors=True)
    state = _resume(run, model, opt, fingerprint) or {
        "fingerprint": fingerprint,
        "position": 0,
        "tokens": 0,
        "seconds": 0.0,
        "steps": 0,
    }
    if state["position"]:
        log(f"Resuming {cfg.name} from its checkpoint after {state['position']} examples.")
    if "before" not in state:
        with model.disable_adapter():
            state["before"] = {
                "loss": objective_losses(model, tok, dev, cfg.max_length),
                "answer_f1": answer_f1(model, tok, dev),
            }

    total = max(1, round(len(kept) * cfg.epochs))
    order = [
        i
        for epoch in range(int(cfg.epochs) + 1)
        for i in random.Random(cfg.seed + epoch).sample(range(len(kept)), len(kept))
    ][:total]
    start, t0 = state["position"], time.perf_counter()
    model.train()
    for position in range(start, total):
        example, (ids, n_target) = kept[order[position]]
        loss = example_loss(model, ids, n_target) * weights[order[position]] / cfg.accumulate
        loss.backward()
        state["tokens"] += len(ids)
        if (position + 1) % cfg.accumulate == 0 or position + 1 == total:
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["steps"] += 1
            if state["steps"] % cfg.checkpoint_every == 0 and position + 1 < total:
                _checkpoint(
                    run,
                    model,
                    opt,
                    {**state, "position": position + 1, "seconds": state["seconds"] + time.perf_counter() - t0},
                )
        if progress:
            progress(position + 1, total)
    seconds = state["seconds"] + time.perf_counter() - t0

    after = {"loss": objective_losses(model, tok, dev, cfg.max_length), "answer_f1": answer_f1(model, tok, dev)}
    result = {
        "name": cfg.name,
        "method": cfg.method,
        "base_model": cfg.base_model,
        "seed": cfg.seed,
        "data_hash": digest,
        "examples": {s: sum(1 for e, _ in kept if e.source == s) for s in cfg.weights},
        "skipped": {"too_long": too_long, "unusable": ts.skipped, "malformed": ts.problems},
        "data_from": str(data) if data is not None else "built",
        "config": json.loads(cfg.model_dump_json()),
        "metrics": {"before": state["before"], "after": after, "dev_examples": len(dev)},
        "training": {
            "examples_seen": total,
            "optimizer_steps": state["steps"],
            "tokens": state["tokens"],
            "wall_s": round(seconds, 1),
            "tokens_per_s": round(state["tokens"] / max(seconds, 1e-9), 1),
            "resumed_at": start,
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        },
    }
    target = save_adapter(model, result, adapters_root(settings.data_dir) / cfg.name)
    shutil.rmtree(run, ignore_errors=True)  # finished: the checkpoint has served its purpose
    return {**result, "adapter": str(target)}
