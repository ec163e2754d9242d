"""The customer chat (Gradio): streamed, cited answers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import gradio as gr

from bot.appstate import AppState
from bot.errors import InputError
from bot.markup import ChatHistory, escape_markdown, render_reply, to_raw_messages
from bot.pipeline import Delta
from bot.service import parse_messages

log = logging.getLogger(__name__)

TITLE = "Kestrel Home support"
SORRY = "Sorry, something went wrong on our side; please try again."


def chat_i18n() -> gr.I18n:
    """The chat's UI text in English and Chinese (picked by the browser's language)."""
    return gr.I18n(en={}, zh={})


def build_chat(state: AppState) -> gr.Blocks:
    """Build the Gradio chat UI that streams answers from the service in `state`."""
    service = state.service
    limit = service.settings.server.max_message_chars

    def add_user(text: str, history: ChatHistory) -> tuple[str, ChatHistory]:
        # Shown escaped so a customer's text appears exactly as typed and never as markup.
        return "", [*history, {"role": "user", "content": escape_markdown(text or "")}]

    async def answer(history: ChatHistory, request: gr.Request) -> AsyncIterator[ChatHistory]:
        history = list(history)
        shown = ""
        session = getattr(request, "session_hash", None) or ""
        try:
            messages = parse_messages(to_raw_messages(history), limit)
            async for event in service.stream(messages, session):
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
            latex_delimiters=[],
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
