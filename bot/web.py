"""The web front end: a streaming Gradio chat mounted on a FastAPI app with a health check."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastapi
import gradio as gr
import uvicorn
from fastapi.responses import JSONResponse

from bot.config import Settings
from bot.contracts import Reply
from bot.errors import InputError, ServicebotError
from bot.pipeline import Delta
from bot.service import Service, parse_messages, sources

log = logging.getLogger(__name__)

TITLE = "Kestrel Home support"
SORRY = "Sorry, something went wrong on our side; please try again."
# Appended under an answer; everything from here on is display only and is cut before the answer goes back as history.
SOURCES_MARK = "\n\n**Sources**\n"
# Characters that start markup anywhere in a line, and line starts that make lists, quotes or headings.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>#|~&])")
_MD_LINE_MARK = re.compile(r"^([ \t]*)([-+=])|^([ \t]*\d+)([.)])", re.MULTILINE)
_MD_ESCAPE = re.compile(r"\\(.)", re.DOTALL)

ChatHistory = list[dict[str, Any]]


def escape_markdown(text: str) -> str:
    """Backslash-escape what Markdown or HTML would act on, so text shows exactly as typed.

    Only active characters are escaped (plain punctuation stays plain, which keeps copy and screen readers clean).
    Every backslash is escaped too, so `unescape_markdown` reverses this exactly.

    Args:
        text: customer-supplied or document-supplied text.

    Returns:
        Markdown that renders as the literal text.
    """
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_LINE_MARK.sub(lambda m: f"{m[1]}\\{m[2]}" if m[2] else f"{m[3]}\\{m[4]}", text)


def unescape_markdown(text: str) -> str:
    """Undo `escape_markdown`."""
    return _MD_ESCAPE.sub(r"\1", text)


def render_reply(reply: Reply) -> str:
    """The final answer as shown in the chat: the policy's answer, then each source document once.

    Args:
        reply: the turn's final Reply.

    Returns:
        Markdown: the answer, and a "Sources" list of titles and article ids when there are sources.
    """
    listed = sources(reply)
    if not listed:
        return reply.answer
    return reply.answer + SOURCES_MARK + "\n".join(_source_line(s) for s in listed)


def _source_line(source: dict[str, Any]) -> str:
    """One citation: a link when the document has a web address, else title, section and article id."""
    title = escape_markdown(source["title"] or source["id"])
    section = f" — {escape_markdown(source['section'])}" if source.get("section") else ""
    url = str(source.get("url") or "")
    if re.match(r"https?://[^\s()<>]+$", url):
        return f"- [{title}]({url}){section} ({escape_markdown(source['id'])})"
    return f"- {title}{section} ({escape_markdown(source['id'])})"


def _text(content: Any) -> str:
    """The text of a Gradio message's content (a string or a list of typed parts; files are ignored)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", "")) if content.get("type", "text") == "text" else ""
    if isinstance(content, list | tuple):
        return "".join(_text(part) for part in content)
    return ""


def to_raw_messages(history: ChatHistory) -> list[dict[str, str]]:
    """Turn the chat as displayed back into the {role, content} list the service validates.

    Customer messages are shown escaped, so they are unescaped; assistant messages lose their Sources block.

    Args:
        history: the Chatbot's value in Gradio's messages format.

    Returns:
        A list of {"role", "content"} dicts ready for `parse_messages`.
    """
    raw = []
    for message in history:
        role, text = message.get("role"), _text(message.get("content"))
        if role == "user":
            raw.append({"role": "user", "content": unescape_markdown(text)})
        elif role == "assistant":
            raw.append({"role": "assistant", "content": text.split(SOURCES_MARK, 1)[0]})
    return raw


def _health(service: Service) -> fastapi.Response:
    try:
        version = service.index.status().get("version")
    except ServicebotError:  # a retriever without an index is still healthy
        version = None
    except Exception:
        log.exception("health check could not read the index status")
        return JSONResponse({"status": "error", "index": None}, status_code=503)
    return JSONResponse({"status": "ok", "index": version})


def build_chat(service: Service) -> gr.Blocks:
    """Build the Gradio chat UI that streams answers from `service`.

    Args:
        service: a started Service.

    Returns:
        The Blocks, ready to mount.
    """
    limit = service.settings.server.max_message_chars

    def add_user(text: str, history: ChatHistory) -> tuple[str, ChatHistory]:
        # Shown escaped so a customer's text appears exactly as typed and never as markup.
        return "", [*history, {"role": "user", "content": escape_markdown(text or "")}]

    async def answer(history: ChatHistory, request: gr.Request) -> AsyncIterator[ChatHistory]:
        history = list(history)
        shown = ""
        try:
            messages = parse_messages(to_raw_messages(history), limit)
            async for event in service.stream(messages, getattr(request, "session_hash", None) or ""):
                shown = shown + event.text if isinstance(event, Delta) else render_reply(event)
                yield [*history, {"role": "assistant", "content": shown}]
        except InputError as exc:
            log.info("web turn rejected: %s", exc)
            yield [*history, {"role": "assistant", "content": str(exc)}]
        except Exception:
            log.exception("web turn failed")
            yield [*history, {"role": "assistant", "content": SORRY}]

    with gr.Blocks(title=TITLE, fill_height=True, analytics_enabled=False) as chat:
        gr.Markdown(f"## {TITLE}\nAsk about your account, orders, billing or Kestrel devices.")
        chatbot = gr.Chatbot(
            show_label=False,
            scale=1,
            height=None,
            min_height=300,
            elem_id="chat",
            sanitize_html=True,
            latex_delimiters=[],  # prices like $5 and $10 are not maths
            feedback_options=None,
            buttons=["copy"],
            placeholder="Hello! How can we help you today?",
        )
        box = gr.Textbox(
            show_label=False,
            placeholder="Type your question and press Enter",
            submit_btn="Send",
            autofocus=True,
            elem_id="question",
        )
        box.submit(add_user, [box, chatbot], [box, chatbot], queue=False).then(
            answer, chatbot, chatbot, concurrency_limit=32
        )
    return chat


def create_app(service: Service) -> fastapi.FastAPI:
    """Build the web app: `GET /healthz` and the chat UI at "/".

    Args:
        service: a started Service (models loaded, index open).

    Returns:
        A FastAPI app to run with any ASGI server.
    """
    app = fastapi.FastAPI(title=TITLE, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> fastapi.Response:
        """Liveness plus the serving index version (null when there is no index)."""
        return _health(service)

    # Registered after /healthz: a mount at "/" takes every path not matched before it.
    return gr.mount_gradio_app(
        app, build_chat(service), path="/", footer_links=[], run_history=False, ssr_mode=False, show_error=False
    )


def serve(settings: Settings, host: str, port: int, config_path: Path | None = None) -> None:
    """Start the service (load models, open the index) and serve the web app until interrupted.

    Args:
        settings: the validated settings.
        host: address to bind.
        port: port to listen on.
        config_path: the YAML file the settings came from; edits to it are applied live.
    """
    app = create_app(Service.start(settings, config_path=config_path))
    print(f"{TITLE} is running at http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
