"""The `openai` responder: streams answers from any OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Passage, Turn, Usage
from bot.errors import PluginError
from plugins.responders.prompt import SYSTEM, build_messages


class OpenAIResponder:
    """Sends the grounded prompt to `POST {base_url}/chat/completions` and yields the streamed deltas.

    The API key is read from the environment variable named by `api_key_env` (secrets never live in YAML).
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        base_url: str = "http://127.0.0.1:8000/v1"
        model: str = "default"
        api_key_env: str = "SERVICEBOT_OPENAI_API_KEY"
        max_tokens: int = Field(default=256, ge=1, le=32_768)
        temperature: float = Field(default=0.0, ge=0, le=2)
        stop: list[str] = Field(default_factory=list)
        system_prompt: str = SYSTEM
        timeout_s: float = Field(default=60.0, gt=0)
        connect_timeout_s: float = Field(default=5.0, gt=0)
        check_model: bool = True  # at start, refuse a server that does not list `model`
        # Turns streaming from the engine at once (server.max_active_turns); the engine does the heavy work.
        max_concurrent: int = Field(default=64, ge=1)

    name = "openai"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        self._base = config.base_url.rstrip("/")
        self.concurrency = config.max_concurrent

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)

    def warm(self) -> None:
        """Check that the server answers and serves the configured model, so a bad URL fails at start.

        Raises:
            PluginError: the server is unreachable, refuses our key, or does not serve the model.
        """
        try:
            resp = httpx.get(f"{self._base}/models", headers=self._headers(), timeout=self._timeout())
        except httpx.HTTPError as exc:
            raise PluginError(f"The OpenAI-compatible server at {self._base} is unreachable ({exc}).") from None
        if resp.status_code in (401, 403):
            raise PluginError(
                f"The OpenAI-compatible server at {self._base} refused the API key "
                f"(set it in the environment variable {self.config.api_key_env})."
            )
        if resp.status_code >= 400:
            raise PluginError(f"The OpenAI-compatible server at {self._base} answered {resp.status_code} to /models.")
        try:
            served = [m.get("id") for m in resp.json().get("data", [])]
        except (ValueError, AttributeError):
            served = []
        if self.config.check_model and served and self.config.model not in served:
            raise PluginError(
                f"The server at {self._base} does not serve model '{self.config.model}' "
                f"(it serves: {', '.join(map(str, served))})."
            )

    def payload(self, turn: Turn, passages: Sequence[Passage]) -> dict[str, Any]:
        """The chat-completions request body for this turn."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": build_messages(turn, passages, self.config.system_prompt),
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
            "stream": True,
        }
        if self.config.stop:
            body["stop"] = self.config.stop
        return body

    def stream(self, turn: Turn, passages: Sequence[Passage]) -> AsyncIterator[str]:
        """Yield the server's text deltas; leaving early closes the connection, which cancels generation.

        Raises:
            PluginError: the server is unreachable, answers with an error, or sends something that is not SSE.
        """
        return self.stream_metered(turn, passages, Usage())

    async def stream_metered(self, turn: Turn, passages: Sequence[Passage], usage: Usage) -> AsyncIterator[str]:
        """`stream`, filling `usage` from what the server reports: `finish_reason` "length" when it says so, and
        token counts when its chunks carry `usage` (many servers send it only when asked; then they stay 0)."""
        url = f"{self._base}/chat/completions"
        try:
            async with httpx.AsyncClient(timeout=self._timeout()) as client:
                async with client.stream("POST", url, json=self.payload(turn, passages), headers=self._headers()) as r:
                    if r.status_code >= 400:
                        detail = (await r.aread()).decode("utf-8", "replace")[:200]
                        raise PluginError(f"The OpenAI-compatible server answered {r.status_code}: {detail}")
                    async for line in r.aiter_lines():
                        chunk = _chunk(line)
                        if chunk is None:
                            return
                        _meter(chunk, usage)
                        delta = _text(chunk)
                        if delta:
                            yield delta
        except httpx.HTTPError as exc:
            raise PluginError(f"The OpenAI-compatible server at {self._base} failed: {exc!r}.") from None


def _chunk(line: str) -> dict[str, Any] | None:
    """One SSE line as a chunk: {} for keep-alives and other non-data lines, None at the end of the stream."""
    if not line.startswith("data:"):
        return {}
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        raise PluginError(f"The OpenAI-compatible server sent a line that is not JSON: {data[:80]!r}") from None
    if not isinstance(chunk, dict):
        return {}
    if "error" in chunk:
        raise PluginError(f"The OpenAI-compatible server reported an error: {str(chunk['error'])[:200]}")
    return chunk


def _text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def _meter(chunk: dict[str, Any], usage: Usage) -> None:
    choices = chunk.get("choices") or [{}]
    if choices[0].get("finish_reason") == "length":
        usage.finish_reason = "length"
    counts = chunk.get("usage")
    if isinstance(counts, dict):
        try:
            usage.prompt_tokens = int(counts.get("prompt_tokens") or 0)
            usage.completion_tokens = int(counts.get("completion_tokens") or 0)
        except (TypeError, ValueError):  # counts are a courtesy: odd ones are ignored, the answer is not lost
            pass
