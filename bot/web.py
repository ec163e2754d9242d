"""The web app: the customer chat (Gradio), the API, the consoles and knowledge pages on one FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fastapi
import gradio as gr
import uvicorn
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from markdown_it import MarkdownIt
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.api import SORRY, ApiError, build_api
from bot.appstate import AppState
from bot.auth import Secrets
from bot.chat import CSS, TITLE, build_chat, chat_i18n
from bot.config import Settings
from bot.console import build_console
from bot.markup import (  # noqa: F401  (the chat's markup helpers, importable from here as before)
    SOURCES_MARK,
    escape_markdown,
    render_reply,
    to_raw_messages,
    unescape_markdown,
)
from bot.ops import build_ops
from bot.pages import NeedsLogin, login_page, page, respond
from bot.service import Service

log = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app reads any of it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        body, more = b"", True
        while more:  # read it all first: a chunked body without a length is counted as it arrives
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._too_large(scope, receive, send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ApiError(413, f"The request is larger than {self.limit:,} bytes.", code="request_too_large")
        await error.response()(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {"type": "", "loc": (), "msg": "invalid request"}
    if first["type"] == "json_invalid":
        return "The request body is not valid JSON."
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    return f"'{where}': {first['msg'][0].lower()}{first['msg'][1:]}."


def _kb_page(service: Service, path: str) -> HTMLResponse:
    """A knowledge-base article cited by the chat, rendered without any HTML it may contain."""
    root = service.settings.knowledge.source.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.suffix not in (".md", ".txt"):
        raise StarletteHTTPException(404, "No such article.")
    text = target.read_text(encoding="utf-8", errors="replace")
    if text.startswith("---\n") and "\n---" in text[4:]:
        text = text[4:].split("\n---", 1)[1]
    body = MarkdownIt("commonmark", {"html": False}).render(text)
    page = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(target.stem)}</title><body style='font-family:sans-serif;max-width:46rem;margin:auto;"
        f"padding:1rem'>{body}</body>"
    )
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


def create_app(service: Service, secrets: Secrets | None = None) -> fastapi.FastAPI:
    """Build the web app: the chat at "/", the API under /v1, /healthz, /metrics, /console, /ops and /kb.

    Args:
        service: a started Service (models loaded, index open).
        secrets: API keys and console passwords; read from the environment when None.

    Returns:
        A FastAPI app to run with any ASGI server.
    """
    state = AppState(service, secrets if secrets is not None else Secrets.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        # Blocking work (retrieval, model calls) runs on as many threads as there are cores: more only makes
        # them fight the event loop for the CPU, and every turn, even one a guard blocks at once, waits on the loop.
        workers = max(2, os.cpu_count() or 2)
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(workers, thread_name_prefix="servicebot"))
        yield
        state.close()  # pending storage writes finish before the process ends

    app = fastapi.FastAPI(
        lifespan=lifespan,
        title="servicebot API",
        version="1",
        description="OpenAI-compatible chat completions over the servicebot pipeline, plus health and metrics.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.servicebot = state

    @app.exception_handler(ApiError)
    async def api_error(request: fastapi.Request, exc: ApiError) -> JSONResponse:
        state.metrics.inc("servicebot_http_requests_total", route=request.url.path[:40], status=str(exc.status))
        headers = {"Retry-After": str(state.session_limit.retry_after())} if exc.status == 429 else None
        return exc.response(headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: fastapi.Request, exc: RequestValidationError) -> JSONResponse:
        return ApiError(400, _validation_message(exc)).response()

    @app.exception_handler(NeedsLogin)
    async def needs_login(request: fastapi.Request, exc: NeedsLogin) -> fastapi.Response:
        return login_page(exc.next_path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: fastapi.Request, exc: StarletteHTTPException) -> Any:
        if request.url.path.startswith(("/console", "/ops")):
            return respond(
                page("Not allowed" if exc.status_code == 403 else "Not found", "", None, ("error", str(exc.detail))),
                exc.status_code,
            )
        kind = {401: "invalid_api_key", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        error = ApiError(exc.status_code, str(exc.detail), kind.get(exc.status_code, "invalid_request_error"))
        return error.response(dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def failed(request: fastapi.Request, exc: Exception) -> JSONResponse:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        state.metrics.inc("servicebot_errors_total", channel="http")
        return ApiError(500, SORRY, "server_error").response()

    app.include_router(build_api(state))
    app.include_router(build_console(state), include_in_schema=False)
    app.include_router(build_ops(state), include_in_schema=False)

    @app.get("/kb/{path:path}", include_in_schema=False)
    def kb(path: str) -> HTMLResponse:
        return _kb_page(service, path)

    app.add_middleware(BodyLimit, limit=service.settings.server.max_body_bytes)
    # Mounted last: a mount at "/" takes every path not matched before it.
    return gr.mount_gradio_app(
        app,
        build_chat(state),
        path="/",
        footer_links=[],
        run_history=False,
        ssr_mode=False,
        show_error=False,
        i18n=chat_i18n(),
        css=CSS,
    )


def serve(settings: Settings, host: str, port: int, config_path: Path | None = None) -> None:
    """Start the service (load models, open the index) and serve the web app until interrupted.

    Args:
        settings: the validated settings.
        host: address to bind.
        port: port to listen on.
        config_path: the YAML file the settings came from; edits to it are applied live.
    """
    service = Service.start(settings, config_path=config_path)
    service.prepare_passages_later()
    app = create_app(service)
    print(f"{TITLE} is running at http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
