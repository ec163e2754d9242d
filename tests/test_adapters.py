"""Adapters in the `hf` responder: LoRA and prefix tuning made by PEFT on the tiny model, listed and switched live."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.contracts import Message, Passage, Turn
from bot.errors import PluginError
from bot.registry import PluginContext
from plugins.responders.hf import HFResponder

PASSAGES = [Passage("p#0", "Reset your password in Settings > Security. The link is valid for 30 minutes.", 0.9)]
TURN = Turn((Message("user", "forgot my password"),))


def peft_save(base_dir: Path, target: Path, method: str, seed: int = 1) -> None:
    """Save a PEFT adapter with random (non-zero) weights, so it visibly changes answers."""
    import torch
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config: Any = (
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
        if method == "lora"
        else PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 2)
    model.save_pretrained(str(target))


@pytest.fixture(scope="module")
def data_dir(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("adapters-data")
    adapters = root / "adapters"
    peft_save(tiny_llama, adapters / "kestrel-lora", "lora")
    (adapters / "kestrel-lora" / "card.json").write_text(
        json.dumps({"base_model": "tiny", "metrics": {"after": {"answer_f1": 0.5}}})
    )
    peft_save(tiny_llama, adapters / "kestrel-prefix", "prefix")
    corrupt = adapters / "corrupt"
    peft_save(tiny_llama, corrupt, "lora", seed=2)
    (corrupt / "adapter_model.safetensors").write_bytes(b"this is not a safetensors file")
    other = root / "other-base"  # a different base model: wider hidden size
    config = LlamaConfig(
        vocab_size=600, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(other)
    peft_save(other, adapters / "other-model", "lora")
    return root


def responder(tiny_llama: Path, data_dir: Path, **kw: Any) -> HFResponder:
    settings = Settings(data_dir=data_dir)
    config = HFResponder.Config(model=str(tiny_llama), max_new_tokens=16, **kw)
    return HFResponder(config, PluginContext(settings))


async def answer(r: HFResponder) -> str:
    return "".join([d async for d in r.stream(TURN, PASSAGES)])


async def test_lora_switches_live_and_back_to_the_base_model(tiny_llama: Path, data_dir: Path) -> None:
    r = responder(tiny_llama, data_dir)
    base = await answer(r)
    r.use_adapter("kestrel-lora")
    tuned = await answer(r)
    assert tuned != base
    r.use_adapter(None)
    assert await answer(r) == base


@pytest.mark.parametrize("name", ["kestrel-lora", "kestrel-prefix"])
async def test_fast_engine_answers_like_peft_generate(tiny_llama: Path, data_dir: Path, name: str) -> None:
    fast = responder(tiny_llama, data_dir, adapter=name)
    slow = responder(tiny_llama, data_dir, adapter=name, engine="transformers")
    assert await answer(fast) == await answer(slow)
    assert await answer(fast) != await answer(responder(tiny_llama, data_dir))


async def test_prefix_tuning_adapter_is_served_through_generate(tiny_llama: Path, data_dir: Path) -> None:
    r = responder(tiny_llama, data_dir)
    r.use_adapter(str(data_dir / "adapters" / "kestrel-prefix"))  # a path works as well as a name
    assert r._serving is not None and r._serving.method == "prefix" and r._serving.fast is None
    assert await answer(r)


def test_adapters_lists_methods_cards_and_the_active_one(tiny_llama: Path, data_dir: Path) -> None:
    r = responder(tiny_llama, data_dir, adapter="kestrel-lora")
    r.warm()
    listed = {a["name"]: a for a in r.adapters()}
    assert set(listed) == {"corrupt", "kestrel-lora", "kestrel-prefix", "other-model"}
    assert listed["kestrel-lora"]["method"] == "lora" and listed["kestrel-lora"]["active"]
    assert listed["kestrel-lora"]["metrics"] == {"after": {"answer_f1": 0.5}}
    assert listed["kestrel-lora"]["base_model"] == "tiny"
    assert listed["kestrel-prefix"]["method"] == "prefix" and not listed["kestrel-prefix"]["active"]
    r.use_adapter(None)
    assert not any(a["active"] for a in r.adapters())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("corrupt", "Adapter 'corrupt' could not be loaded"),
        ("other-model", "Adapter 'other-model' was made for another base model"),
        ("no-such-adapter", "Adapter 'no-such-adapter' was not found"),
    ],
)
async def test_bad_adapter_is_a_clear_error_and_the_serving_model_keeps_working(
    tiny_llama: Path, data_dir: Path, name: str, message: str
) -> None:
    r = responder(tiny_llama, data_dir, adapter="kestrel-lora")
    before = await answer(r)
    with pytest.raises(PluginError, match=message) as err:
        r.use_adapter(name)
    assert "\n" not in str(err.value)
    assert await answer(r) == before
    assert [a["name"] for a in r.adapters() if a["active"]] == ["kestrel-lora"]


def test_corrupt_config_json_is_a_clear_error(tiny_llama: Path, data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(PluginError, match="adapter_config.json is missing or corrupt"):
        responder(tiny_llama, data_dir, adapter=str(bad)).warm()


async def test_switch_during_an_answer_lets_it_finish_on_the_old_weights(tiny_llama: Path, data_dir: Path) -> None:
    r = responder(tiny_llama, data_dir)
    r.config.max_new_tokens = 200
    base_full = await answer(r)
    stream = r.stream(TURN, PASSAGES)
    first = await stream.__anext__()
    await asyncio.to_thread(r.use_adapter, "kestrel-lora")
    rest = "".join([d async for d in stream])
    assert rest and first + rest == base_full
    r.use_adapter(None)
    r.config.max_new_tokens = 16


def test_adapters_shipped_in_the_package_are_found_by_name_after_the_data_dirs(
    tiny_llama: Path, data_dir: Path, tmp_path: Path
) -> None:
    import os
    import shutil

    from plugins.responders.adapters import PACKAGED

    name = f"test-shipped-{os.getpid()}"
    shipped = PACKAGED / name
    try:
        peft_save(tiny_llama, shipped, "lora", seed=3)
        plain = responder(tiny_llama, tmp_path / "empty-data", adapter=name)  # no adapters folder of its own
        plain.warm()
        listed = {a["name"]: a for a in plain.adapters()}
        assert listed[name]["active"] and listed[name]["path"] == str(shipped.resolve())
        # An adapter of the same name in the data dir is the operator's own: it is the one found and listed.
        peft_save(tiny_llama, data_dir / "adapters" / name, "lora", seed=4)
        own = responder(tiny_llama, data_dir, adapter=name)
        own.warm()
        mine = [a for a in own.adapters() if a["name"] == name]
        assert len(mine) == 1 and mine[0]["active"] and mine[0]["path"] == str((data_dir / "adapters" / name).resolve())
        assert asyncio.run(answer(plain)) != asyncio.run(answer(own))
    finally:
        shutil.rmtree(shipped, ignore_errors=True)
        shutil.rmtree(data_dir / "adapters" / name, ignore_errors=True)
        if PACKAGED.is_dir() and not any(PACKAGED.iterdir()):
            PACKAGED.rmdir()
