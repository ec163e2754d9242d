"""The turn pipeline: input guards -> retrieval -> passage guards -> responder -> output guards -> policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.admission import Admission
from bot.contracts import (
    Draft,
    InputGuard,
    Metered,
    OutputGuard,
    PassageGuard,
    Reply,
    Responder,
    Retriever,
    Turn,
    Usage,
    Verdict,
)
from bot.language import RESPONDER_DOWN, Language, language
from bot.policy import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delta:
    """A piece of streamed answer text."""

    text: str


@dataclass
class Pipeline:
    """The components of one turn, in the operator's order."""

    input_guards: Sequence[InputGuard]
    retriever: Retriever
    responder: Responder
    output_guards: Sequence[OutputGuard] = ()
    policy: Policy = field(default_factory=Policy)
    k: int = 3
    guard_timeout_s: float = 2.0
    passage_guards: Sequence[PassageGuard] = ()
    embedder: Any = None  # kept so a live reload can reuse it (and the index built with it)
    guard_embedder: Any = None  # what the learned guards embed with (the same object unless the embedder is static)


def _failed(name: str, exc: BaseException) -> Verdict:
    reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    log.error("guard %s failed closed: %s", name, reason)
    return Verdict(plugin=name, blocked=True, score=1.0, category="guard_error", reason=f"guard_error: {reason}")


def _responder_failed(name: str, exc: BaseException, lang: Language) -> Verdict:
    reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    log.error("responder %s failed: %s", name, reason)
    return Verdict(
        plugin=name,
        blocked=False,
        score=0.0,
        category="responder_error",
        reason=f"responder_error: {reason}",
        handoff=True,
        message=RESPONDER_DOWN.say(lang),
    )


async def _guarded(name: str, check: Awaitable[object], timeout_s: float) -> Verdict:
    """Run one guard check; an exception or a timeout blocks the turn (fail closed)."""
    try:
        # A timeout scope, not wait_for: no task per check, so a guard that answers at once costs no trip
        # through the (under load, long) event loop queue.
        async with asyncio.timeout(timeout_s):
            verdict = await check
        if not isinstance(verdict, Verdict):
            raise TypeError(f"returned {type(verdict).__name__}, not a Verdict")
        return verdict
    except Exception as exc:
        return _failed(name, exc)


def _worst(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: (v.blocked, v.handoff, v.score))


async def _check_views(guard: InputGuard, turn: Turn, views: Sequence[str], timeout_s: float) -> Verdict:
    """Check the raw turn and every decoded view of it; the riskiest verdict stands for all."""
    raw = await _guarded(guard.name, guard.check(turn), timeout_s)
    if not views:
        return raw
    seen = [raw]
    for view in views:
        v = await _guarded(guard.name, guard.check(turn.as_view(view)), timeout_s)
        if v.blocked or v.score > raw.score:
            v = Verdict(**{**v.__dict__, "reason": f"{v.reason} (in decoded view: {view[:60]!r})"})
        seen.append(v)
    worst = _worst(seen)
    # A rewrite (e.g. redaction) only ever applies to what the customer actually wrote.
    return Verdict(**{**worst.__dict__, "rewrite": raw.rewrite, "views": raw.views, "notice": raw.notice})


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _took(latency: dict[str, float], plugin: str, start: float) -> None:
    """Per-plugin time under `guard.<name>` (summed when a plugin checks more than one stage)."""
    latency[f"guard.{plugin}"] = round(latency.get(f"guard.{plugin}", 0.0) + _ms(start), 2)


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[str]) -> AsyncIterator[AsyncIterator[str]]:
    """Close the responder's stream as soon as the turn ends, also when the client left mid-answer (so a model
    stops generating for nobody), rather than whenever the garbage collector gets to it."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


async def _nothing() -> AsyncIterator[str]:
    for _ in ():
        yield ""


async def stream_turn(turn: Turn, p: Pipeline, admit: Admission | None = None) -> AsyncIterator[Delta | Reply]:
    """Run one turn, yielding answer deltas as they are generated and the final Reply last.

    With `admit`, a turn the input guards let through waits at that gate before retrieval (its wait is
    `latency_ms["queued"]`); a refused turn is answered without waiting.
    """
    t0 = time.perf_counter()
    if not turn.language:  # fixed before any guard rewrites the message (a redaction, an English gloss)
        turn = replace(turn, language=language(turn))
    latency: dict[str, float] = {}
    verdicts: list[Verdict] = []
    views: list[str] = []
    for guard in p.input_guards:  # operator-ordered, short-circuiting
        tg = time.perf_counter()
        verdict = await _check_views(guard, turn, views, p.guard_timeout_s)
        _took(latency, guard.name, tg)
        verdicts.append(verdict)
        if verdict.rewrite is not None:
            turn = turn.with_text(verdict.rewrite)
        views += [v for v in verdict.views if v not in views]
        if p.policy.stops(verdicts):
            break
    latency["guards_in"] = _ms(t0)
    if p.policy.stops(verdicts):
        latency["total"] = _ms(t0)
        yield p.policy.decide(turn, None, [], verdicts, latency)
        return
    t = time.perf_counter()
    async with admit() if admit is not None else contextlib.nullcontext():
        if admit is not None:
            latency["queued"] = _ms(t)
        # Closed here, not left to the garbage collector, when the client leaves (see `_closing`).
        async with contextlib.aclosing(_answer(turn, p, t0, latency, verdicts)) as events:
            async for event in events:
                yield event


async def _answer(
    turn: Turn, p: Pipeline, t0: float, latency: dict[str, float], verdicts: list[Verdict]
) -> AsyncGenerator[Delta | Reply, None]:
    """The rest of a turn the input guards let through: retrieval, passage guards, responder, output guards."""
    t = time.perf_counter()
    passages = await p.retriever.search(turn.text, k=p.k)
    latency["retrieval"] = _ms(t)
    t = time.perf_counter()
    for pguard in p.passage_guards:  # indirect prompt injection is removed before the model reads it
        try:
            tg = time.perf_counter()
            async with asyncio.timeout(p.guard_timeout_s):
                passages, verdict = await pguard.check_passages(turn, passages)
            _took(latency, pguard.name, tg)
        except Exception as exc:
            passages, verdict = [], _failed(pguard.name, exc)
        verdicts.append(verdict)
    latency["guards_passages"] = _ms(t)

    usable = p.policy.usable(passages)
    t = time.perf_counter()
    parts: list[str] = []
    usage = Usage()
    try:
        if not usable:  # without a usable passage the policy answers "I don't know"; generating would only invent
            source = _nothing()
        elif isinstance(p.responder, Metered):
            source = p.responder.stream_metered(turn, usable, usage)
        else:
            source = p.responder.stream(turn, usable)
        async with _closing(source) as stream:
            async for delta in stream:
                if not parts:
                    latency["first_token"] = _ms(t)
                parts.append(delta)
                if delta:
                    yield Delta(delta)
    except Exception as exc:  # a broken or unreachable model: the customer gets a human, never a traceback
        verdicts.append(_responder_failed(getattr(p.responder, "name", "responder"), exc, language(turn)))
        latency["generation"] = latency["total"] = _ms(t0)
        yield p.policy.decide(turn, None, [], verdicts, latency)
        return
    latency["generation"] = _ms(t)
    tokens = usage.completion_tokens or len(parts)
    draft = Draft("".join(parts).strip(), tokens, usage.prompt_tokens, usage.finish_reason)

    t = time.perf_counter()
    for out_guard in p.output_guards:
        tg = time.perf_counter()
        verdict = await _guarded(out_guard.name, out_guard.check_output(turn, draft, usable), p.guard_timeout_s)
        _took(latency, out_guard.name, tg)
        verdicts.append(verdict)
        if verdict.rewrite is not None:
            draft = replace(draft, text=verdict.rewrite)
        if verdict.blocked:
            break
    latency["guards_out"] = _ms(t)
    latency["total"] = _ms(t0)
    yield p.policy.decide(turn, draft, usable, verdicts, latency)


async def respond(turn: Turn, p: Pipeline) -> Reply:
    """Run one turn to completion and return its Reply."""
    async for event in stream_turn(turn, p):
        if isinstance(event, Reply):
            return event
    raise RuntimeError("pipeline ended without a reply")
