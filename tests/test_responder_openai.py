"""The `openai` responder: failures of the remote engine reach the customer as a handoff, never a traceback."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DEMO, StaticRetriever

from bot.contracts import Message, Passage, Turn
from bot.errors import PluginError
from bot.language import RESPONDER_DOWN
from bot.pipeline import Pipeline, respond
from bot.service import Service
from plugins.responders.openai_compat import OpenAIResponder, _chunk, _text

KEY = "engine-test-key"
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
    assert reply.answer == RESPONDER_DOWN.en
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
    assert not reply.refused and not reply.handoff and re.search(r"\[[1-3]\]", reply.answer)


def _delta(line: str) -> str | None:
    """The text of one SSE line as the responder reads it: '' for keep-alives and role-only chunks, None at the end."""
    chunk = _chunk(line)
    return None if chunk is None else _text(chunk)


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
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", out["answer"])}
    assert len(cited) == 1  # the extractive answer quotes one passage and cites its number
    for source in out["sources"]:
        assert source["cited"] is bool(cited & set(source["n"]))
    assert sum(s["cited"] for s in out["sources"]) == 1


@pytest.fixture(scope="module")
def engine_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible server in its own process: `bot serve` (extractive responder) on 127.0.0.1."""
    home = tmp_path_factory.mktemp("engine")
    cfg = home / "engine.yaml"
    cfg.write_text(f"data_dir: {home / 'data'}\nresponder: extractive\nknowledge:\n  source: {DEMO / 'articles'}\n")
    port = free_port()
    env = {**os.environ, "SERVICEBOT_API_KEYS": KEY, "HF_HUB_OFFLINE": "1"}
    bot = Path(sys.executable).with_name("bot")
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(bot), "serve", "--config", str(cfg), "--port", str(port)], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"bot serve did not start: {(home / 'serve.log').read_text()[-2000:]}")
        time.sleep(0.5)
    try:
        yield f"{url}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def remote(url: str, **config: object) -> OpenAIResponder:
    os.environ["TEST_ENGINE_KEY"] = KEY
    return OpenAIResponder(
        OpenAIResponder.Config(**{"base_url": url, "model": "servicebot", "api_key_env": "TEST_ENGINE_KEY", **config})  # type: ignore[arg-type]
    )


async def collect(responder: OpenAIResponder, text: str, limit: int | None = None) -> list[str]:
    out: list[str] = []
    turn = Turn((Message("user", text),))
    async for delta in responder.stream(turn, [PASSAGE]):
        out.append(delta)
        if limit and len(out) >= limit:
            break
    return out


def test_streams_an_answer_from_a_real_openai_compatible_server(engine_url: str) -> None:
    responder = remote(engine_url)
    responder.warm()
    deltas = asyncio.run(collect(responder, "I forgot my password and can't log in"))
    # Streamed in pieces, not one blob: the engine here (`bot serve`, extractive) sends its first words at once and
    # the rest, ready at the same moment, as one more chunk.
    assert len(deltas) >= 2
    answer = "".join(deltas)
    assert "password" in answer.lower() and re.search(r"\[[1-3]\]", answer)
    body = responder.payload(Turn((Message("user", "hi"),)), [PASSAGE])
    assert body["stream"] is True and "[1] Reset your password" in body["messages"][-1]["content"]


def test_leaving_early_closes_the_stream_and_the_server_keeps_serving(engine_url: str) -> None:
    responder = remote(engine_url)
    assert len(asyncio.run(collect(responder, "How do I reset my password?", limit=1))) == 1  # leaves mid-answer
    assert asyncio.run(collect(responder, "How do I reset my password?"))  # the next request is served


def test_a_wrong_model_or_key_is_refused_at_start_with_one_sentence(engine_url: str) -> None:
    with pytest.raises(PluginError, match="does not serve model 'gpt-4o'"):
        remote(engine_url, model="gpt-4o").warm()
    os.environ["TEST_ENGINE_WRONG_KEY"] = "nope"
    wrong = OpenAIResponder(OpenAIResponder.Config(base_url=engine_url, api_key_env="TEST_ENGINE_WRONG_KEY"))
    with pytest.raises(PluginError, match="refused the API key"):
        wrong.warm()
    with pytest.raises(PluginError, match="answered 401"):
        asyncio.run(collect(wrong, "hello"))


def test_finish_reason_and_counts_the_server_reports_are_kept(engine_url: str) -> None:
    from bot.contracts import Usage

    usage = Usage()

    async def run() -> str:
        turn = Turn((Message("user", "I forgot my password and can't log in"),))
        return "".join([d async for d in remote(engine_url).stream_metered(turn, [PASSAGE], usage)])

    assert "password" in asyncio.run(run()).lower()
    # `bot serve` sends usage in its last chunk: its extractive responder names no prompt count, only pieces.
    assert usage.finish_reason == "stop" and usage.completion_tokens >= 2 and usage.prompt_tokens == 0
