"""HTML pieces of the operator console: transcripts with each turn's verdicts, the plugin table, the editor."""

from __future__ import annotations

from typing import Any

import yaml

from bot.auth import ConsoleSession
from bot.config import Settings
from bot.pages import esc, form, js, table

STAGES = ("input", "passages", "output")


def guards_table(settings: Settings, session: ConsoleSession) -> str:
    """Active guards per stage, in order, with their config, policy weight and disable / move-up buttons."""
    rows = []
    weights = settings.policy.weights
    for stage in STAGES:
        specs = getattr(settings.guards, stage)
        for i, spec in enumerate(specs):
            fields = {"stage": stage, "index": i, "name": spec.name}
            actions = form("/console/plugins/disable", session, "Disable", fields)
            if i > 0:
                actions += " " + form("/console/plugins/up", session, "Move up", fields)
            rows.append(
                [
                    esc(stage),
                    str(i + 1),
                    f"<strong>{esc(spec.name)}</strong>",
                    f"<pre>{js(spec.config)}</pre>",
                    esc(weights.get(spec.name, "default")),
                    actions,
                ]
            )
    return table(["stage", "order", "plugin", "config (thresholds)", "policy weight", ""], rows)


def editable(settings: Settings) -> str:
    """The part of the settings the console edits, as YAML."""
    return yaml.safe_dump(
        {"guards": settings.guards.model_dump(mode="json"), "policy": settings.policy.model_dump(mode="json")},
        sort_keys=False,
        allow_unicode=True,
    )


def transcript(messages: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> str:
    """A conversation's messages, each bot turn with its outcome, sources and every guard's verdict."""
    rated = {f["message_id"]: f for f in feedback}
    parts = []
    for m in messages:
        who = {"user": "Customer", "assistant": "Bot", "human": f"Team: {m.get('author', '')}"}.get(
            m["role"], m["role"]
        )
        extra = ""
        if m["role"] == "assistant" and m.get("verdicts"):
            outcome = "handed off" if m.get("handoff") else "refused" if m.get("refused") else "answered"
            rows = [
                [
                    esc(v["plugin"]),
                    "blocked" if v["blocked"] else "allowed",
                    f"{v['score']:.2f}",
                    esc(v.get("category", "")),
                    esc(v.get("reason", "")),
                ]
                for v in m["verdicts"]
            ]
            sources = ", ".join(esc(s.get("id", "")) for s in m.get("sources") or [])
            extra = (
                f"<p><small>{outcome} — {esc(m.get('reason', ''))}; sources: {sources or 'none'}</small></p>"
                + table(["plugin", "verdict", "score", "category", "reason"], rows)
            )
        if m["id"] in rated:
            f = rated[m["id"]]
            extra += f"<p>Customer rating: {'👍' if f['rating'] > 0 else '👎'} {esc(f['comment'])}</p>"
        parts.append(
            f"<div class='msg {esc(m['role'])}'><strong>{esc(who)}</strong> <small>{esc(m['at'])}</small>"
            f"<pre>{esc(m['content'])}</pre>{extra}</div>"
        )
    return "".join(parts) or "<p>No messages yet.</p>"
