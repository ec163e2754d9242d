"""The turn pipeline: input guards -> retrieval -> responder -> output guards -> policy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field

from bot.contracts import Draft, InputGuard, OutputGuard, Reply, Responder, Retriever, Turn, Verdict
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


async def _guarded(name: str, check: Awaitable[object], timeout_s: float) -> Verdict:
    """Run one guard check; an exception or a timeout blocks the turn (fail closed)."""
    try:
        verdict = await asyncio.wait_for(check, timeout_s)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"returned {type(verdict).__name__}, not a Verdict")
        return verdict
    except Exception as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        log.error("guard %s failed closed: %s", name, reason)
        return Verdict(plugin=name, blocked=True, score=1.0, category="guard_error", reason=f"guard_error: {reason}")


async def _nothing() -> AsyncIterator[str]:
    for _ in ():
        yield ""


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def stream_turn(turn: Turn, p: Pipeline) -> AsyncIterator[Delta | Reply]:
    """Run one turn, yielding answer deltas as they are generated and the final Reply last."""
    t0 = time.perf_counter()
    latency: dict[str, float] = {}
    verdicts: list[Verdict] = []
    for guard in p.input_guards:  # operator-ordered, short-circuiting
        verdict = await _guarded(guard.name, guard.check(turn), p.guard_timeout_s)
        verdicts.append(verdict)
        if verdict.blocked:
            break
    latency["guards_in"] = _ms(t0)
    if any(v.blocked for v in verdicts):
        latency["total"] = _ms(t0)
        yield p.policy.decide(turn, None, [], verdicts, latency)
        return

    t = time.perf_counter()
    passages = await p.retriever.search(turn.text, k=p.k)
    latency["retrieval"] = _ms(t)

    usable = p.policy.usable(passages)
    t = time.perf_counter()
    parts: list[str] = []
    # Without a usable passage the policy answers "I don't know"; generating would only invent.
    async for delta in p.responder.stream(turn, usable) if usable else _nothing():
        if not parts:
            latency["first_token"] = _ms(t)
        parts.append(delta)
        yield Delta(delta)
    latency["generation"] = _ms(t)
    draft = Draft(text="".join(parts).strip(), tokens=len(parts))

    t = time.perf_counter()
    for out_guard in p.output_guards:
        verdict = await _guarded(out_guard.name, out_guard.check_output(turn, draft, passages), p.guard_timeout_s)
        verdicts.append(verdict)
        if verdict.blocked:
            break
    latency["guards_out"] = _ms(t)
    latency["total"] = _ms(t0)
    yield p.policy.decide(turn, draft, passages, verdicts, latency)


async def respond(turn: Turn, p: Pipeline) -> Reply:
    """Run one turn to completion and return its Reply."""
    async for event in stream_turn(turn, p):
        if isinstance(event, Reply):
            return event
    raise RuntimeError("pipeline ended without a reply")
