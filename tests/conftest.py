"""Shared fixtures: a tiny real Llama model on disk, a demo index in tmp, honest test plugins."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.contracts import Passage, Turn, Verdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "knowledge" / "demo"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with a real BPE tokenizer, saved so from_pretrained runs for real."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = [p.read_text(encoding="utf-8") for p in sorted((DEMO / "articles").glob("*.md"))[:10]]
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    raw.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<|im_end|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with a data dir in tmp and the fast extractive responder."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        responder={"name": "extractive"},
        guards={"input": ["max_length", "instruction_override"]},
        knowledge={"source": DEMO / "articles"},
    )


@pytest.fixture(scope="session")
def demo_service(demo_settings: Settings) -> Any:
    """A real Service (real embedder, real Chroma) over the demo KB, indexed once per session."""
    from bot.service import Service

    service = Service.start(demo_settings, warm=False)
    service.index.rebuild(DEMO / "articles")
    service.warm()
    return service


class EchoResponder:
    """Honest Responder: repeats the question and cites passage 1."""

    name = "echo"

    async def stream(self, turn: Turn, passages: Sequence[Passage]) -> AsyncIterator[str]:
        for word in f"You asked: {turn.text} [1]".split(" "):
            yield word + " "


class StaticRetriever:
    """Honest Retriever over a fixed list of passages."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = list(passages)
        self.calls = 0

    async def search(self, query: str, k: int) -> list[Passage]:
        self.calls += 1
        return self.passages[:k]


class FixedGuard:
    """Honest guard returning a fixed verdict and counting its calls."""

    def __init__(self, name: str, blocked: bool, score: float = 0.0) -> None:
        self.name, self.blocked, self.score, self.calls = name, blocked, score, 0

    async def check(self, turn: Turn) -> Verdict:
        self.calls += 1
        return Verdict(self.name, self.blocked, self.score, "test", "fixed verdict", message="blocked by test")

    async def check_output(self, turn: Turn, draft: Any, passages: Sequence[Passage]) -> Verdict:
        return await self.check(turn)
