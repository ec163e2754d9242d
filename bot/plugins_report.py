"""`bot plugins`: installed plugins per kind versus the ones the config activates, with their config."""

from __future__ import annotations

from bot.config import PluginSpec, Settings
from bot.registry import GROUPS, installed, validate_config


def report(settings: Settings) -> str:
    """A readable table of installed and active plugins."""
    active: dict[str, list[tuple[str, PluginSpec]]] = {
        "guard": [(f"input #{i + 1}", s) for i, s in enumerate(settings.guards.input)]
        + [(f"output #{i + 1}", s) for i, s in enumerate(settings.guards.output)],
        "responder": [("active", settings.responder)],
        "retriever": [("active", settings.retriever)],
        "embedder": [("active", settings.embedder)],
    }
    lines = []
    for kind, group in GROUPS.items():
        lines.append(f"{kind}s ({group}):")
        roles = {spec.name: (role, spec) for role, spec in active[kind]}
        for name, ep in sorted(installed(kind).items()):
            if name in roles:
                role, spec = roles[name]
                config = validate_config(kind, spec).model_dump(mode="json")
                lines.append(f"  * {name:<22} {role:<10} {ep.value}\n      config: {config}")
            else:
                lines.append(f"    {name:<22} {'installed':<10} {ep.value}")
    return "\n".join(lines)
