"""The turn pipeline: guard order, fail-closed guards, retrieval, generation and the policy."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from conftest import EchoResponder, FixedGuard, StaticRetriever

from bot.admission import Admission
from bot.contracts import Message, Passage, Reply, Turn, Verdict
from bot.language import NO_KNOWLEDGE
from bot.pipeline import Delta, Pipeline, respond, stream_turn

GOOD = Passage("a#0", "Reset your password from Settings.", 0.8, doc_id="reset-password", title="Reset")
WEAK = Passage("b#0", "Unrelated.", 0.05, doc_id="other", title="Other")


def turn(text: str) -> Turn:
    return Turn((Message("user", text),), id="t1")


class RaisingGuard:
    name = "raiser"

    async def check(self, turn: Turn) -> Verdict:
        raise RuntimeError("boom")


class SlowGuard:
    name = "sleeper"

    async def check(self, turn: Turn) -> Verdict:
        await asyncio.sleep(5)
        return Verdict(self.name, False)


class WrongTypeGuard:
    name = "wrong"

    async def check(self, turn: Turn) -> Any:
        return "allow"


def pipeline(*guards: Any, passages: list[Passage] | None = None, out: tuple[Any, ...] = ()) -> Pipeline:
    return Pipeline(
        list(guards),
        StaticRetriever(passages if passages is not None else [GOOD]),
        EchoResponder(),
        output_guards=out,
        guard_timeout_s=0.2,
    )


async def test_allowed_turn_answers_from_passages_with_sources() -> None:
    reply = await respond(turn("how do i reset"), pipeline(FixedGuard("ok", False)))
    assert not reply.refused and not reply.handoff
    assert "You asked: how do i reset" in reply.answer
    assert [p.doc_id for p in reply.sources] == ["reset-password"]
    assert reply.tokens > 0 and reply.latency_ms["total"] >= reply.latency_ms["generation"]


async def test_first_blocking_guard_short_circuits_the_rest() -> None:
    first, second = FixedGuard("first", True, 0.9), FixedGuard("second", False)
    p = pipeline(first, second)
    reply = await respond(turn("anything"), p)
    assert reply.refused and reply.answer == "blocked by test"
    assert second.calls == 0 and p.retriever.calls == 0  # type: ignore[attr-defined]
    assert [v.plugin for v in reply.verdicts] == ["first"]


async def test_raising_guard_blocks_with_guard_error() -> None:
    reply = await respond(turn("hello"), pipeline(RaisingGuard()))
    assert reply.refused
    assert reply.verdicts[0].category == "guard_error" and "boom" in reply.verdicts[0].reason


async def test_guard_timeout_fails_closed() -> None:
    reply = await respond(turn("hello"), pipeline(SlowGuard()))
    assert reply.refused and "timed out" in reply.verdicts[0].reason


async def test_guard_returning_non_verdict_fails_closed() -> None:
    reply = await respond(turn("hello"), pipeline(WrongTypeGuard()))
    assert reply.refused and reply.verdicts[0].category == "guard_error"


async def test_output_guard_can_block_a_draft() -> None:
    reply = await respond(turn("hello"), pipeline(out=(FixedGuard("out", True),)))
    assert reply.refused and reply.verdicts[-1].plugin == "out"


async def test_no_good_passage_means_no_generation_and_a_handoff_offer() -> None:
    events = [e async for e in stream_turn(turn("what is the meaning of life"), pipeline(passages=[WEAK]))]
    assert not any(isinstance(e, Delta) for e in events)
    reply = events[-1]
    assert isinstance(reply, Reply) and reply.answer == NO_KNOWLEDGE.en and reply.handoff and not reply.sources


async def test_stream_yields_deltas_then_reply() -> None:
    events = [e async for e in stream_turn(turn("track my order"), pipeline())]
    assert isinstance(events[-1], Reply)
    deltas = "".join(e.text for e in events if isinstance(e, Delta))
    assert deltas.strip() == events[-1].answer


def test_turn_text_is_the_newest_user_message() -> None:
    t = Turn((Message("user", "first"), Message("assistant", "reply"), Message("user", "second")))
    assert t.text == "second" and [m.content for m in t.history] == ["first", "reply"]


class GatedResponder:
    """A responder that streams one word, then waits until the test opens its gate."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.closed = 0

    async def stream(self, turn: Turn, passages: Any) -> Any:
        try:
            yield "Working "
            await self.gate.wait()
            yield "done [1]"
        finally:
            self.closed += 1


async def test_a_client_leaving_mid_answer_closes_the_responder_stream_at_once() -> None:
    responder = GatedResponder()
    p = Pipeline([], StaticRetriever([GOOD]), responder)
    first = stream_turn(turn("how do i reset"), p)
    assert isinstance(await first.__anext__(), Delta)
    await first.aclose()  # the customer closed the page: the model must stop now, not at garbage collection
    assert responder.closed == 1
    responder.gate.set()
    reply = await asyncio.wait_for(respond(turn("where is my parcel"), p), 1)
    assert not reply.refused and responder.closed == 2


async def _answer(t: Turn, p: Pipeline, admit: Admission) -> Reply:
    async for event in stream_turn(t, p, admit):
        if isinstance(event, Reply):
            return event
    raise AssertionError("no reply")


async def test_the_admission_gate_holds_answers_back_but_never_refusals() -> None:
    gate = Admission(1)
    async with gate():  # the only place is taken, as by a long answer being generated
        waiting = asyncio.create_task(_answer(turn("how do i reset"), pipeline(FixedGuard("ok", False)), gate))
        refused = await asyncio.wait_for(_answer(turn("attack"), pipeline(FixedGuard("no", True)), gate), 1)
        assert refused.refused and "queued" not in refused.latency_ms
        await asyncio.sleep(0.05)
        assert not waiting.done() and gate.waiting == 1 and gate.active == 1
    reply = await asyncio.wait_for(waiting, 5)
    assert not reply.refused and "You asked: how do i reset" in reply.answer
    assert reply.latency_ms["queued"] >= 40
    assert gate.waiting == 0 and gate.active == 0


async def test_a_turn_that_leaves_while_queued_gives_up_nothing_it_did_not_take() -> None:
    gate = Admission(1)
    async with gate():
        left = asyncio.create_task(_answer(turn("how do i reset"), pipeline(FixedGuard("ok", False)), gate))
        await asyncio.sleep(0.02)
        left.cancel()  # the client went away while the turn waited at the gate
        with contextlib.suppress(asyncio.CancelledError):
            await left
        assert gate.waiting == 0 and gate.active == 1
    reply = await asyncio.wait_for(_answer(turn("how do i reset"), pipeline(FixedGuard("ok", False)), gate), 5)
    assert not reply.refused and gate.active == 0


async def test_admission_zero_lets_every_turn_through() -> None:
    gate = Admission(0)
    async with gate(), gate():
        assert gate.active == 2 and gate.waiting == 0
        reply = await asyncio.wait_for(_answer(turn("how do i reset"), pipeline(FixedGuard("ok", False)), gate), 5)
    assert not reply.refused and reply.latency_ms["queued"] < 1000 and gate.active == 0
