"""The `hf` responder on a tiny random Llama saved to disk: real from_pretrained, streaming and PEFT paths."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from bot.contracts import Message, Passage, Turn
from bot.errors import PluginError
from plugins.responders.hf import HFResponder
from plugins.responders.prompt import build_messages

PASSAGES = [Passage("p#0", "Reset your password in Settings > Security.", 0.9, doc_id="reset")]
TURN = Turn((Message("user", "hi"), Message("assistant", "hello"), Message("user", "forgot my password")))


def responder(model: Path | str, **kw: object) -> HFResponder:
    return HFResponder(HFResponder.Config(model=str(model), **kw))  # type: ignore[arg-type]


async def test_streams_one_delta_per_token_up_to_max_new_tokens(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=12)
    deltas = [d async for d in r.stream(TURN, PASSAGES)]
    assert 1 <= len(deltas) <= 12
    assert isinstance("".join(deltas), str)


async def test_greedy_generation_is_deterministic(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=8)
    first = "".join([d async for d in r.stream(TURN, PASSAGES)])
    second = "".join([d async for d in r.stream(TURN, PASSAGES)])
    assert first == second


def test_prompt_numbers_passages_and_keeps_history() -> None:
    messages = build_messages(TURN, PASSAGES)
    assert messages[0]["role"] == "system"
    assert [m["content"] for m in messages[1:3]] == ["hi", "hello"]
    last = messages[-1]["content"]
    assert last.startswith("[1] Reset your password") and last.endswith("forgot my password")


def test_missing_model_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(PluginError, match="could not be loaded"):
        responder(tmp_path / "no-such-model").warm()
    with pytest.raises(PluginError, match="could not be loaded"):
        responder("nobody/no-such-model-on-any-hub").warm()
    assert time.perf_counter() - start < 10


async def test_lora_adapter_loads_and_changes_output(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"], init_lora_weights=False),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 3)
    model.save_pretrained(str(tmp_path / "adapter"))
    base = "".join([d async for d in responder(tiny_llama, max_new_tokens=10).stream(TURN, PASSAGES)])
    tuned_r = responder(tiny_llama, max_new_tokens=10, adapter=str(tmp_path / "adapter"))
    tuned = "".join([d async for d in tuned_r.stream(TURN, PASSAGES)])
    assert tuned_r._serving is not None and tuned_r._serving.method == "lora"
    assert tuned != base


def test_corrupt_adapter_is_a_clear_error(tiny_llama: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(PluginError, match="Adapter .* could not be loaded"):
        responder(tiny_llama, adapter=str(bad)).warm()


async def test_consumer_leaving_stops_generate(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=2000, engine="transformers")
    stream = r.stream(TURN, PASSAGES)
    assert isinstance(stream, AsyncGenerator)
    await stream.__anext__()
    await stream.aclose()  # the client went away
    start = time.perf_counter()
    with r._gen_lock:  # acquired only once the abandoned generation has stopped
        pass
    assert time.perf_counter() - start < 5
