"""Finds plugins by name in entry-point groups and builds them with their validated config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from bot.config import PluginSpec, Settings, describe_error
from bot.errors import PluginError

log = logging.getLogger(__name__)

GROUPS = {
    "guard": "servicebot.guards",
    "responder": "servicebot.responders",
    "retriever": "servicebot.retrievers",
    "embedder": "servicebot.embedders",
}


@dataclass(frozen=True)
class PluginContext:
    """What a plugin may use besides its own config."""

    settings: Settings
    embedder: Any = None


def installed(kind: str) -> dict[str, EntryPoint]:
    """All installed plugins of a kind, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}


def plugin_class(kind: str, name: str) -> Any:
    """Import the plugin registered under `name` for `kind`.

    Raises:
        PluginError: no such plugin is installed, or it fails to import.
    """
    found = installed(kind)
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise PluginError(f"Unknown {kind} plugin '{name}' (installed: {known}).")
    try:
        return found[name].load()
    except Exception as exc:  # a broken third-party package must not take the CLI down with a traceback
        raise PluginError(f"The {kind} plugin '{name}' failed to import: {exc}.") from exc


def validate_config(kind: str, spec: PluginSpec) -> BaseModel:
    """Validate a plugin's config against its `Config` model without building it."""
    cls = plugin_class(kind, spec.name)
    config_model: type[BaseModel] | None = getattr(cls, "Config", None)
    if config_model is None:
        raise PluginError(f"The {kind} plugin '{spec.name}' declares no Config model.")
    try:
        return config_model(**spec.config)
    except ValidationError as exc:
        raise PluginError(describe_error(exc, f"Config error in {kind} plugin '{spec.name}'")) from None


def build(kind: str, spec: PluginSpec, ctx: PluginContext) -> Any:
    """Build one plugin instance; the instance's `name` is the name it was chosen by.

    Raises:
        PluginError: unknown name, invalid config, or the plugin failed to start.
    """
    config = validate_config(kind, spec)
    cls = plugin_class(kind, spec.name)
    try:
        instance = cls(config, ctx)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"The {kind} plugin '{spec.name}' failed to start: {exc}") from exc
    try:
        instance.name = spec.name
    except AttributeError:
        pass
    return instance
