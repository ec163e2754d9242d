"""PEFT adapters for the `hf` responder: find them by name or path, describe them, load and validate them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from bot.errors import PluginError

METHODS = {"LORA": "lora", "PREFIX_TUNING": "prefix"}
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


# Adapters shipped with servicebot (`finetune/adapters/<name>/`, package data), found by name after the data dir's.
PACKAGED = Path(__file__).resolve().parents[2] / "finetune" / "adapters"


def adapters_root(data_dir: Path | None) -> Path | None:
    """The folder that holds named adapters (`<data_dir>/adapters`), when there is a data dir."""
    return None if data_dir is None else Path(data_dir) / "adapters"


def resolve(name_or_path: str, root: Path | None) -> Path:
    """The folder of an adapter given by name (inside `root`, then among the shipped ones) or by path.

    Raises:
        PluginError: no adapter folder has that name or path.
    """
    named = "/" not in name_or_path and name_or_path not in (".", "..")
    roots = [r for r in (root, PACKAGED) if r is not None] if named else []
    candidates = [r / name_or_path for r in roots] + [Path(name_or_path).expanduser()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    known = ", ".join(a["name"] for a in list_adapters(root, None)) or "none"
    raise PluginError(f"Adapter '{name_or_path}' was not found (not a folder; adapters in {root}: {known}).")


def read_config(folder: Path) -> dict[str, Any]:
    """The adapter's PEFT config, checked for what we can load.

    Raises:
        PluginError: the config is missing or unreadable, the method unsupported, or the weights missing.
    """
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PluginError(
            f"Adapter '{folder.name}' could not be loaded: its adapter_config.json is missing or corrupt "
            f"({type(exc).__name__})."
        ) from None
    if not isinstance(config, dict) or config.get("peft_type") not in METHODS:
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise PluginError(f"Adapter '{folder.name}' has method {kind!r}; only LoRA and prefix tuning are supported.")
    if not any((folder / w).is_file() for w in WEIGHTS):
        raise PluginError(f"Adapter '{folder.name}' could not be loaded: it has no adapter_model.safetensors.")
    return config


def read_card(folder: Path) -> dict[str, Any]:
    """The adapter's card.json (base model, data hash, config, metrics), or {} when it has none."""
    try:
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def describe(folder: Path, active: Path | None) -> dict[str, Any]:
    """One adapter as shown to operators: name, path, method, base model, card metrics, whether it is active."""
    try:
        config: dict[str, Any] = read_config(folder)
        problem = ""
    except PluginError as exc:
        config, problem = {}, str(exc)
    card = read_card(folder)
    return {
        "name": folder.name,
        "path": str(folder),
        "method": METHODS.get(str(config.get("peft_type")), "unknown"),
        "base_model": card.get("base_model") or config.get("base_model_name_or_path"),
        "metrics": card.get("metrics", {}),
        "active": active is not None and folder.resolve() == active,
        **({"problem": problem} if problem else {}),
    }


def list_adapters(root: Path | None, active: Path | None) -> list[dict[str, Any]]:
    """Every adapter folder in `root` and every shipped one that `root` does not shadow (plus the active one if it
    lives elsewhere), sorted by name."""
    found: dict[str, Path] = {}
    for folder in (r for r in (PACKAGED, root) if r is not None and r.is_dir()):
        for p in folder.iterdir():
            if p.is_dir() and (p / "adapter_config.json").exists() and p.name[0] != ".":
                found[p.name] = p  # the data dir's own adapter of the same name wins, as `resolve` finds it
    listed = [describe(found[name], active) for name in sorted(found)]
    if active is not None and not any(a["active"] for a in listed):
        listed.append(describe(active, active))
    return listed


def load(base: Any, folder: Path) -> tuple[Any, str]:
    """The base model with the adapter applied, as a new model; the base model itself is left untouched.

    LoRA is merged into a copy of the weights (a plain model again, fast to run); a prefix-tuning adapter stays
    a PEFT model (its virtual tokens are fed through `generate`).

    Raises:
        PluginError: the adapter is corrupt, unsupported, or made for another base model.
    """
    from peft import PeftModel

    method = METHODS[read_config(folder)["peft_type"]]
    try:
        model = PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
    except Exception as exc:  # PEFT reports bad files and mismatched shapes with many exception types
        text = str(exc)
        if "size mismatch" in text or "shape" in text:
            raise PluginError(
                f"Adapter '{folder.name}' was made for another base model: its weight shapes do not fit this one."
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise PluginError(f"Adapter '{folder.name}' could not be loaded (corrupt files): {first}") from None
    model.eval()
    if method == "lora":
        model = model.merge_and_unload()
    return model, method
