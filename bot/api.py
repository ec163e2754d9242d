"""The HTTP API: OpenAI-compatible chat completions (streamed or not), models, health and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import fastapi
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.appstate import TOO_FAST, AppState
from bot.contracts import Reply
from bot.errors import InputError, ServicebotError
from bot.pipeline import Delta
from bot.records import verdict_rows
from bot.service import parse_messages, sources

log = logging.getLogger(__name__)
MODEL = "servicebot"
SORRY = "Sorry, something went wrong on our side; please try again."
COALESCE_S = 0.03  # streamed text is written at most this often (a chunk may then carry several tokens)


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code or kind

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The error as a JSON response."""
        body = {"error": {"message": self.message, "type": self.kind, "code": self.code, "param": None}}
        return JSONResponse(body, status_code=self.status, headers=headers)


class TextPart(BaseModel):
    """One part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(max_length=40)
    text: str = ""


class ChatMessage(BaseModel):
    """One message as OpenAI clients send it."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class ChatRequest(BaseModel):
    """A chat completion request; OpenAI's sampling options are accepted and ignored (the operator sets them)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(MODEL, max_length=200, json_schema_extra={"enum": [MODEL]})  # others get 404
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    stream: bool = False
    user: str | None = Field(None, max_length=200, description="An id for the end user (rate-limited per user).")
    conversation_id: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="servicebot extension: continue (and store under) this conversation.",
    )


class Usage(BaseModel):
    """Token counts of the model's turn: what it read and what it wrote (0 for a turn no model answered, e.g. a
    refusal; a responder that does not report counts gives its streamed pieces and no prompt count)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "".join(part.text for part in message.content if part.type == "text")
    return message.content or ""


def _extras(reply: Reply, conversation_id: str, streamed: str | None = None) -> dict[str, Any]:
    extra = {
        "conversation_id": conversation_id,
        "refused": reply.refused,
        "handoff": reply.handoff,
        "reason": reply.reason,
        "sources": sources(reply),
        "verdicts": verdict_rows(reply),
        "latency_ms": dict(reply.latency_ms),
    }
    if streamed is not None:
        extra["answer"] = reply.answer
        extra["replaced"] = streamed.strip() != reply.answer.strip()
    return extra


def _usage(reply: Reply) -> dict[str, int]:
    total = reply.prompt_tokens + reply.tokens
    return Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.tokens, total_tokens=total).model_dump()


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def build_api(state: AppState) -> fastapi.APIRouter:
    """The API routes over `state` (mounted by `create_app`)."""
    router = fastapi.APIRouter()
    service = state.service

    async def authorize(request: fastapi.Request) -> None:  # async: a sync dependency costs a thread hop
        if not state.secrets.api_keys:
            raise ApiError(403, "The API is closed on this server: set SERVICEBOT_API_KEYS to open it.", "forbidden")
        if not state.secrets.api_key_ok(request.headers.get("authorization")):
            raise ApiError(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.", "invalid_api_key")

    @router.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        """Liveness plus the serving index version (null when there is no index)."""
        try:
            version = service.index.status().get("version")
        except ServicebotError:  # a retriever without an index is still healthy
            version = None
        except Exception:
            log.exception("health check could not read the index status")
            return JSONResponse({"status": "error", "index": None}, status_code=503)
        return JSONResponse({"status": "ok", "index": version})

    @router.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics(request: fastapi.Request) -> PlainTextResponse:
        """Counters and latency histograms in the Prometheus text format (behind SERVICEBOT_METRICS_TOKEN when set)."""
        if not state.secrets.metrics_ok(request.headers.get("authorization")):
            raise ApiError(
                401, "Missing or wrong metrics token: send 'Authorization: Bearer <token>'.", "invalid_token"
            )
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/v1/models", tags=["api"], dependencies=[fastapi.Depends(authorize)])
    def models() -> dict[str, Any]:
        """The one model this server answers as."""
        return {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": int(state.started), "owned_by": "servicebot"}],
        }

    @router.post("/v1/chat/completions", tags=["api"], dependencies=[fastapi.Depends(authorize)])
    async def chat_completions(body: ChatRequest, request: fastapi.Request) -> Any:
        """Answer the conversation's last user message, OpenAI-style, plus a `servicebot` field (sources, verdicts).

        System and developer messages are ignored: the operator's configuration decides how the bot behaves.
        """
        if body.model != MODEL:
            raise ApiError(
                404,
                f"The model '{body.model}' does not exist; this server answers as '{MODEL}'.",
                code="model_not_found",
            )
        limit = service.settings.server.max_message_chars
        raw = [{"role": m.role, "content": _text(m)} for m in body.messages if m.role in ("user", "assistant")]
        if raw and len(raw[-1]["content"]) > limit:
            raise ApiError(
                413,
                f"Your message has {len(raw[-1]['content']):,} characters; the limit is {limit:,}.",
                code="message_too_long",
            )
        try:
            messages = parse_messages(raw, limit)
        except InputError as exc:
            raise ApiError(400, str(exc)) from None
        conversation = body.conversation_id or uuid.uuid4().hex
        client = request.client.host if request.client else "unknown"
        if state.limited(client, body.conversation_id or body.user or "") is not None:
            raise ApiError(429, TOO_FAST, "rate_limit_exceeded")
        created, completion = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            # The turn runs up to its first event before the response starts: a refused turn (or any answer
            # that comes in one piece) is then sent as one plain response, without a streaming task per turn.
            events = service.stream(messages, conversation, state.admission)
            first = await _first(events)
            chunks = _stream(state, _chain(first, events), messages, completion, created, conversation)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            if isinstance(first, Delta):
                return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
            text = "".join([chunk async for chunk in chunks])
            return fastapi.Response(text, media_type="text/event-stream", headers=headers)
        reply = await service.answer(messages, conversation, state.admission)
        state.record_later(conversation, "api", messages[-1].content, reply)
        return {
            "id": completion,
            "object": "chat.completion",
            "created": created,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.answer},
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(reply),
            "servicebot": _extras(reply, conversation),
        }

    return router


async def _first(events: AsyncIterator[Delta | Reply]) -> Delta | Reply | Exception:
    """The turn's first event, or the exception it failed with."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return RuntimeError("the turn ended without a reply")
    except Exception as exc:
        return exc


async def _chain(first: Delta | Reply | Exception, rest: AsyncIterator[Delta | Reply]) -> AsyncIterator[Delta | Reply]:
    """The events again, the prefetched first one included (an exception is raised where it happened)."""
    if isinstance(first, Exception):  # the turn's generator is already finished
        raise first
    yield first
    async for event in rest:
        yield event


async def _stream(
    state: AppState,
    events: AsyncIterator[Delta | Reply],
    messages: Any,
    completion: str,
    created: int,
    conversation: str,
) -> AsyncIterator[str]:
    """Server-sent chunks in OpenAI's format; with output guards configured, text is sent only once they pass it."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        body = {"id": completion, "object": "chat.completion.chunk", "created": created, "model": MODEL}
        return _sse({**body, "choices": [choice], **extra})

    live = not state.service.pipeline.output_guards
    head = chunk({"role": "assistant", "content": ""})  # goes out with the first text: one write, not two
    sent: list[str] = []
    held: list[str] = []
    flushed = 0.0
    try:
        async for event in events:
            if isinstance(event, Delta):
                if live:
                    # Text that arrives within COALESCE_S of the last write waits for the next one: a model's
                    # tokens still flow about as they come, a burst (an extractive answer, or tokens that piled
                    # up while the loop was busy) goes out as one chunk rather than a write per word.
                    held.append(event.text)
                    now = time.monotonic()
                    if now - flushed >= COALESCE_S:
                        text, flushed = "".join(held), now
                        held.clear()
                        sent.append(text)
                        yield head + chunk({"content": text})
                        head = ""
                continue
            reply: Reply = event
            tail = ""
            if held:
                sent.append("".join(held))
                tail = chunk({"content": sent[-1]})
            elif not sent:  # nothing streamed (guarded, refused, or no knowledge): the answer in one piece
                sent.append(reply.answer)
                tail = chunk({"content": reply.answer})
            state.record_later(conversation, "api", messages[-1].content, reply)
            # One write for the rest: each write is a trip through the event loop, which is busy under load.
            yield (
                head
                + tail
                + chunk(
                    {}, reply.finish_reason, usage=_usage(reply), servicebot=_extras(reply, conversation, "".join(sent))
                )
                + "data: [DONE]\n\n"
            )
            return
    except Exception:
        log.exception("API stream failed")
        state.metrics.inc("servicebot_errors_total", channel="api")
        yield head + _sse({"error": {"message": SORRY, "type": "server_error", "code": "server_error", "param": None}})
    yield "data: [DONE]\n\n"
