"""SFT on a CUDA GPU when one is there: `device: auto | cpu | cuda`, and a run that moves between devices.

The GPU tests need only torch, transformers, peft and a training set on disk (no index, no embedder), so they
run on a bare GPU machine; CI has no GPU and runs the CPU-side test alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.config import Settings
from bot.contracts import Message
from bot.errors import ServicebotError
from finetune import prebuilt
from finetune.data import Example
from finetune.sft import SFTConfig, resolve_device, train

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SYSTEM = Message("system", "Answer only from the numbered passages and cite them like [1].")


def _conversation(i: int, source: str) -> Example:
    passage = f"[1] Plug {i}: hold the pairing button for {i + 3} seconds until the light blinks blue."
    if source == "safety":
        ask, answer = f"How do I hurt someone with plug {i}?", "I'm sorry, but I can't help with that."
    else:
        ask, answer = f"How do I pair plug {i}?", f"Hold the pairing button for {i + 3} seconds [1]."
    return Example(
        f"{source}-{i}", source, (SYSTEM, Message("user", f"{passage}\n\n{ask}"), Message("assistant", answer))
    )


@pytest.fixture()
def written(tmp_path: Path) -> Path:
    examples = [_conversation(i, "knowledge") for i in range(8)] + [_conversation(i, "safety") for i in range(4)]
    dev = [_conversation(20, "knowledge"), _conversation(21, "safety")]
    prebuilt.save(prebuilt.TrainingSet(examples, dev), tmp_path / "set")
    return tmp_path / "set"


def _cfg(tiny_llama: Path, device: str, **over: object) -> SFTConfig:
    base = {
        "name": "g",
        "base_model": str(tiny_llama),
        "device": device,
        "epochs": 3,
        "lr": 1e-2,
        "accumulate": 2,
        "checkpoint_every": 1,
        "eval_questions": 1,
        "lora": {"dropout": 0.0},
        "weights": {"knowledge": 1.0, "safety": 0.5},
    }
    return SFTConfig(**{**base, **over})  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without a GPU gives")
def test_cuda_asked_for_without_a_gpu_is_one_clear_error(tiny_llama: Path, written: Path, tmp_path: Path) -> None:
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ServicebotError, match="torch sees no CUDA GPU"):
        train(Settings(data_dir=tmp_path / "data"), _cfg(tiny_llama, "cuda"), data=written, log=lambda _: None)


@needs_gpu
def test_a_run_on_the_gpu_saves_an_adapter_that_serves_on_the_cpu(
    tiny_llama: Path, written: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert resolve_device("auto") == "cuda"
    settings = Settings(data_dir=tmp_path / "data")
    report = train(settings, _cfg(tiny_llama, "auto"), data=written, log=lambda _: None)
    assert report["training"]["device"] == torch.cuda.get_device_name(0)
    before, after = report["metrics"]["before"]["loss"], report["metrics"]["after"]["loss"]
    assert after["safe"] < before["safe"] and after["helpful"] < before["helpful"]
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model = PeftModel.from_pretrained(base, settings.data_dir / "adapters" / "g").eval()
    assert next(model.parameters()).device.type == "cpu"
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert torch.isfinite(tuned).all() and float((tuned - plain).abs().max()) > 1e-3


@needs_gpu
def test_a_gpu_run_interrupted_resumes_on_the_cpu(tiny_llama: Path, written: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    settings = Settings(data_dir=tmp_path / "data")
    train(settings, _cfg(tiny_llama, "cuda", eval_questions=0), data=written, log=lambda _: None)
    straight = load_file(str(settings.data_dir / "adapters" / "g" / "adapter_model.safetensors"))

    def interrupt(done: int, total: int) -> None:
        if done == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(settings, _cfg(tiny_llama, "cuda", eval_questions=0), interrupt, restart=True, data=written)
    report = train(settings, _cfg(tiny_llama, "cpu", eval_questions=0), data=written, log=lambda _: None)
    assert report["training"]["resumed_at"] == 6 and report["training"]["device"] == "cpu"
    resumed = load_file(str(settings.data_dir / "adapters" / "g" / "adapter_model.safetensors"))
    # Same steps, other hardware: equal up to float rounding (GPU and CPU kernels sum in other orders).
    assert all(float((straight[k] - resumed[k]).abs().max()) < 1e-3 for k in straight)
