"""The `openai` responder: failures of the remote engine reach the customer as a handoff, never a traceback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from conftest import DEMO, StaticRetriever

from bot.contracts import Message, Passage, Turn
from bot.errors import PluginError
from bot.pipeline import Pipeline, respond
from bot.policy import RESPONDER_DOWN
from bot.service import Service
from plugins.responders.openai_compat import OpenAIResponder, _delta

PASSAGE = Passage("p1", "Reset your password from the sign-in page.", 0.9, title="Reset a password")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_engine() -> OpenAIResponder:
    url = f"http://127.0.0.1:{free_port()}/v1"
    return OpenAIResponder(OpenAIResponder.Config(base_url=url, connect_timeout_s=1.0, timeout_s=2.0))


def test_unreachable_engine_fails_at_start_with_one_sentence() -> None:
    with pytest.raises(PluginError, match="is unreachable"):
        closed_engine().warm()


def test_engine_going_down_mid_service_hands_the_customer_to_a_human() -> None:
    pipeline = Pipeline(input_guards=[], retriever=StaticRetriever([PASSAGE]), responder=closed_engine())
    reply = asyncio.run(respond(Turn((Message("user", "how do I reset my password?"),)), pipeline))
    assert reply.handoff and not reply.refused
    assert reply.answer == RESPONDER_DOWN
    failed = [v for v in reply.verdicts if v.category == "responder_error"]
    assert failed and "ConnectError" in failed[0].reason


def test_switching_live_to_an_unreachable_engine_is_rejected_and_the_old_responder_keeps_serving(
    tmp_path: Path,
) -> None:
    from bot.config import Settings

    settings = Settings(data_dir=tmp_path, responder={"name": "extractive"}, knowledge={"source": DEMO / "articles"})
    service = Service.start(settings, warm=False)
    service.index.rebuild(DEMO / "articles")
    url = f"http://127.0.0.1:{free_port()}/v1"
    broken = settings.model_copy(
        update={"responder": settings.responder.model_copy(update={"name": "openai", "config": {"base_url": url}})}
    )
    with pytest.raises(PluginError, match="unreachable"):
        service.apply(broken, actor="test")
    assert service.settings.responder.name == "extractive"
    reply = service.ask("I forgot my password")
    assert not reply.refused and not reply.handoff and "[1]" in reply.answer


def test_sse_lines_are_parsed_and_a_server_error_event_is_reported() -> None:
    assert _delta('data: {"choices": [{"delta": {"content": "Hi"}}]}') == "Hi"
    assert _delta('data: {"choices": [{"delta": {"role": "assistant"}}]}') == ""
    assert _delta(": keep-alive") == ""
    assert _delta("data: [DONE]") is None
    with pytest.raises(PluginError, match="reported an error"):
        _delta('data: {"error": {"message": "model overloaded"}}')
    with pytest.raises(PluginError, match="not JSON"):
        _delta("data: {oops")


def test_cited_passage_numbers_map_to_sources_in_the_reply(demo_service: Service) -> None:
    from bot.service import reply_json

    out = reply_json(demo_service.ask("I forgot my password and can't log in"))
    first = out["sources"][0]
    assert first["n"][0] == 1 and first["cited"] is True  # the extractive answer cites [1]
    assert all(s["cited"] is False for s in out["sources"][1:])
