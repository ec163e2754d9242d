"""Builds a running servicebot from settings and answers turns (the library behind the CLI and web app)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from bot.config import Settings
from bot.contracts import Indexed, InputGuard, Message, OutputGuard, PassageGuard, Reply, Turn, Warmable
from bot.errors import InputError, PluginError
from bot.pipeline import Delta, Pipeline, respond, stream_turn
from bot.policy import Policy
from bot.registry import PluginContext, build


def build_pipeline(settings: Settings) -> Pipeline:
    """Build every configured plugin, in the operator's order.

    Raises:
        PluginError: a plugin is unknown, misconfigured, or of the wrong kind for its place.
    """
    embedder = build("embedder", settings.embedder, PluginContext(settings))
    ctx = PluginContext(settings, embedder=embedder)
    inputs = [build("guard", spec, ctx) for spec in settings.guards.input]
    outputs = [build("guard", spec, ctx) for spec in settings.guards.output]
    passage_guards = [build("guard", spec, ctx) for spec in settings.guards.passages]
    for guard in passage_guards:
        if not isinstance(guard, PassageGuard):
            raise PluginError(f"Guard '{guard.name}' cannot check passages (it has no check_passages method).")
    for guard in inputs:
        if not isinstance(guard, InputGuard):
            raise PluginError(f"Guard '{guard.name}' cannot check input (it has no check method).")
    for guard in outputs:
        if not isinstance(guard, OutputGuard):
            raise PluginError(f"Guard '{guard.name}' cannot check output (it has no check_output method).")
    return Pipeline(
        input_guards=inputs,
        retriever=build("retriever", settings.retriever, ctx),
        responder=build("responder", settings.responder, ctx),
        output_guards=outputs,
        policy=Policy(
            min_score=settings.knowledge.min_score,
            weights=dict(settings.policy.weights),
            refuse_threshold=settings.policy.refuse_threshold,
            helpfulness_weight=settings.policy.helpfulness_weight,
        ),
        passage_guards=passage_guards,
        k=settings.knowledge.k,
        guard_timeout_s=settings.guards.timeout_s,
    )


def parse_messages(raw: Any, limit: int) -> tuple[Message, ...]:
    """Validate a list of {"role", "content"} dicts from outside.

    Raises:
        InputError: the list is malformed, has no user message, or exceeds `limit` characters in a message.
    """
    if not isinstance(raw, list) or not raw:
        raise InputError("'messages' must be a non-empty list of {role, content} objects.")
    messages = []
    for i, m in enumerate(raw):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise InputError(
                f"Message {i + 1} must be an object with role 'user' or 'assistant' and a string 'content'."
            )
        if len(m["content"]) > limit:
            which = "Your message" if i == len(raw) - 1 else f"Message {i + 1}"
            raise InputError(f"{which} has {len(m['content']):,} characters; the limit is {limit:,}.")
        messages.append(Message(m["role"], m["content"]))
    if messages[-1].role != "user":
        raise InputError("The last message must come from the user.")
    return tuple(messages)


@dataclass
class Service:
    """A configured servicebot: the settings and the pipeline built from them."""

    settings: Settings
    pipeline: Pipeline

    @classmethod
    def start(cls, settings: Settings, warm: bool = True) -> Service:
        """Build the pipeline and (by default) load models and open the index up front."""
        service = cls(settings, build_pipeline(settings))
        if warm:
            service.warm()
        return service

    def warm(self) -> None:
        """Load heavy components now rather than on the first turn."""
        p = self.pipeline
        for part in (*p.input_guards, *p.passage_guards, *p.output_guards, p.retriever, p.responder):
            if isinstance(part, Warmable):
                part.warm()

    @property
    def index(self) -> Indexed:
        """The retriever's index, for rebuild and status."""
        retriever = self.pipeline.retriever
        if not isinstance(retriever, Indexed):
            raise PluginError(f"The retriever '{self.settings.retriever.name}' does not manage an index.")
        return retriever

    def turn(self, messages: Sequence[Message], session_id: str = "") -> Turn:
        """Make a Turn with a fresh id."""
        return Turn(tuple(messages), id=uuid.uuid4().hex, session_id=session_id)

    async def answer(self, messages: Sequence[Message], session_id: str = "") -> Reply:
        """Answer one turn."""
        return await respond(self.turn(messages, session_id), self.pipeline)

    async def stream(self, messages: Sequence[Message], session_id: str = "") -> AsyncIterator[Delta | Reply]:
        """Answer one turn, streaming."""
        async for event in stream_turn(self.turn(messages, session_id), self.pipeline):
            yield event

    def ask(self, text: str) -> Reply:
        """Answer one question synchronously (CLI use)."""
        return self.ask_messages([Message("user", text)])

    def ask_messages(self, messages: Sequence[Message]) -> Reply:
        """Answer one conversation synchronously."""
        return asyncio.run(self.answer(messages))


def sources(reply: Reply) -> list[dict[str, Any]]:
    """One entry per source document (its best-scoring passage), best first."""
    seen: dict[str, dict[str, Any]] = {}
    for p in reply.sources:
        key = p.doc_id or p.id
        if key not in seen:
            seen[key] = {"id": key, "title": p.title, "score": p.score, "section": p.section, "source": p.source}
    return [{"id": s["id"], "title": s["title"], "score": s["score"]} for s in seen.values()]


def reply_json(reply: Reply, request_id: Any = None) -> dict[str, Any]:
    """The stable `bot ask --json` output contract."""
    keys = ("guards_in", "retrieval", "first_token", "generation", "guards_out", "total")
    return {
        "id": request_id,
        "answer": reply.answer,
        "refused": reply.refused,
        "handoff": reply.handoff,
        "sources": sources(reply),
        "verdicts": [
            {"plugin": v.plugin, "blocked": v.blocked, "score": v.score, "reason": v.reason} for v in reply.verdicts
        ],
        "tokens": reply.tokens,
        "latency_ms": {k: reply.latency_ms.get(k, 0.0) for k in keys},
    }
