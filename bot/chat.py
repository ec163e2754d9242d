"""The customer chat (Gradio): streamed, cited answers, feedback, a human on request, and reload-proof history."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from bot.appstate import TOO_FAST, AppState
from bot.contracts import Message, Turn
from bot.errors import InputError
from bot.language import Language, Phrase, language_of
from bot.markup import ChatHistory, escape_answer, escape_markdown, render_reply, render_stored, to_raw_messages
from bot.pipeline import Delta
from bot.service import parse_messages

log = logging.getLogger(__name__)

TITLE = "Kestrel Home support"
SORRY = Phrase("Sorry, something went wrong on our side; please try again.", "抱歉，我们这边出了点问题，请再试一次。")
TO_HUMAN = Phrase(
    "I've asked a member of our team to join this conversation; they will reply right here. "
    "You can keep writing meanwhile, and nothing you've said so far is lost.",
    "我已请我们的工作人员加入这段对话，他们会直接在这里回复您。在此期间您可以继续留言，之前说的内容都不会丢失。",
)
WITH_HUMAN = Phrase(
    "Your message is with our team; they will reply right here.", "您的消息已转给我们的团队，他们会直接在这里回复您。"
)
SLOW_DOWN = Phrase(TOO_FAST, "您发消息的速度太快，我们来不及回复；请稍等片刻再试。")
_CONVERSATION = re.compile(r"^[0-9a-f]{32}$")
UI = {
    "en": {
        "title": f"## {TITLE}",
        "intro": "Ask about your account, orders, billing or Kestrel devices.",
        "placeholder": "Type your question and press Enter",
        "send": "Send",
        "human": "Talk to a human",
        "new": "New conversation",
        "comment": "Tell us more (optional)",
        "comment_send": "Send feedback",
        "greeting": "Hello! How can we help you today?",
    },
    "zh": {
        "title": "## Kestrel Home 客服",
        "intro": "有关账户、订单、账单或 Kestrel 设备的问题，请在这里提问。",
        "placeholder": "输入您的问题，按回车发送",
        "send": "发送",
        "human": "转人工客服",
        "new": "新对话",
        "comment": "告诉我们更多（可选）",
        "comment_send": "提交反馈",
        "greeting": "您好！今天有什么可以帮您？",
    },
}


CSS = "#actions button{min-width:0} @media (max-width:640px){#actions{flex-wrap:wrap}}"


def chat_i18n() -> gr.I18n:
    """The chat's UI text in English and Chinese (picked by the browser's language)."""
    return gr.I18n(**UI)


def _language(history: ChatHistory, request: gr.Request | None) -> Language:
    """The customer's language: that of their messages when they say enough to tell, else their browser's."""
    accept = request.headers.get("accept-language", "") if request is not None else ""
    browser: Language = "zh" if accept.strip().lower().startswith("zh") else "en"
    try:
        said = [Message("user", m["content"]) for m in to_raw_messages(history) if m["role"] == "user"]
    except Exception:  # a history the browser mangled: its language setting still says something
        said = []
    return language_of(said, browser)


def _conversation(value: Any) -> str:
    """The browser's conversation id when it is one of ours, else a fresh one."""
    return value if isinstance(value, str) and _CONVERSATION.match(value) else uuid.uuid4().hex


def build_chat(state: AppState) -> gr.Blocks:
    """Build the Gradio chat UI over the service, records and limits in `state`."""
    service, records = state.service, state.records
    limit = service.settings.server.max_message_chars
    t = chat_i18n()

    async def load(conversation: Any) -> tuple[ChatHistory, str, dict[str, int], int]:
        conversation = _conversation(conversation)
        stored = await state.db(records.messages, conversation)
        history = [render_stored(m) for m in stored]
        ids = {str(i): m["id"] for i, m in enumerate(stored) if m["role"] == "assistant"}
        return history, conversation, ids, max((m["id"] for m in stored if m["role"] == "human"), default=0)

    def add_user(text: str, history: ChatHistory) -> tuple[str, ChatHistory]:
        # Shown escaped so a customer's text appears exactly as typed and never as markup.
        return "", [*history, {"role": "user", "content": escape_markdown(text or "")}]

    async def redacted(text: str) -> str:
        """The message with personal data removed by the configured `pii` guard (none configured: as is)."""
        for guard in service.pipeline.input_guards:
            if guard.name == "pii":
                verdict = await guard.check(Turn((Message("user", text),)))
                text = verdict.rewrite if verdict.rewrite is not None else text
        return text

    async def answer(
        history: ChatHistory, conversation: Any, ids: dict[str, int], request: gr.Request
    ) -> AsyncIterator[tuple[ChatHistory, str, dict[str, int]]]:
        history, conversation, ids = list(history), _conversation(conversation), dict(ids or {})
        client = request.client.host if request is not None and request.client else "unknown"
        lang = _language(history, request)  # what the bot itself says below is in the customer's language
        if state.limited(client, conversation):
            yield [*history, {"role": "assistant", "content": SLOW_DOWN.say(lang)}], conversation, ids
            return
        shown = ""
        try:
            messages = parse_messages(to_raw_messages(history), limit, lang)
            row = await state.db(records.conversation, conversation)
            if row is not None and row["status"] == "human":  # a person has this conversation: no bot answer
                text = await redacted(messages[-1].content)
                await state.db(records.add_message, conversation, "user", text)
                yield [*history, {"role": "assistant", "content": WITH_HUMAN.say(lang)}], conversation, ids
                return
            async for event in service.stream(messages, conversation, state.admission):
                if isinstance(event, Delta):
                    shown += event.text
                    yield [*history, {"role": "assistant", "content": escape_answer(shown)}], conversation, ids
                    continue
                ids[str(len(history))] = await state.record_turn(conversation, "web", messages[-1].content, event)
                yield [*history, {"role": "assistant", "content": render_reply(event)}], conversation, ids
        except InputError as exc:
            log.info("web turn rejected: %s", exc)
            yield [*history, {"role": "assistant", "content": str(exc)}], conversation, ids
        except Exception:
            log.exception("web turn failed")
            state.metrics.inc("servicebot_errors_total", channel="web")
            yield [*history, {"role": "assistant", "content": SORRY.say(lang)}], conversation, ids

    async def rate(conversation: Any, ids: dict[str, int], like: gr.LikeData) -> tuple[Any, Any]:
        index = like.index if isinstance(like.index, int) else like.index[0]
        message_id = (ids or {}).get(str(index))
        if message_id is None or not isinstance(conversation, str):
            return gr.update(visible=False), gr.update(value="")
        up = like.liked is True or like.liked == "Like"
        await state.db(records.add_feedback, conversation, message_id, 1 if up else -1)
        state.metrics.inc("servicebot_feedback_total", rating="up" if up else "down")
        return gr.update(visible=True), gr.update(value="")

    async def comment(text: str, conversation: Any) -> tuple[Any, Any, ChatHistory | Any]:
        if text.strip() and isinstance(conversation, str):
            await state.db(records.comment_feedback, conversation, text.strip()[:2000])
        return gr.update(visible=False), gr.update(value=""), gr.update()

    async def to_human(history: ChatHistory, conversation: Any, request: gr.Request) -> tuple[ChatHistory, str]:
        conversation = _conversation(conversation)
        told = TO_HUMAN.say(_language(history, request))
        stored = await state.db(records.messages, conversation)
        transcript = [{"role": m["role"], "content": m["content"]} for m in stored]
        await state.db(records.ensure_conversation, conversation, "web", "asked for a person")
        await state.db(records.add_handoff, conversation, "", "the customer pressed 'Talk to a human'", transcript, [])
        await state.db(records.add_message, conversation, "assistant", told)
        state.metrics.inc("servicebot_handoffs_total", via="button")
        return [*history, {"role": "assistant", "content": told}], conversation

    async def poll(history: ChatHistory, conversation: Any, seen: int) -> tuple[ChatHistory | Any, int]:
        if not isinstance(conversation, str) or not _CONVERSATION.match(conversation):
            return gr.update(), seen
        new = [m for m in await state.db(records.messages, conversation, seen or 0) if m["role"] == "human"]
        if not new:
            return gr.update(), seen
        return [*history, *(render_stored(m) for m in new)], max(m["id"] for m in new)

    def fresh() -> tuple[ChatHistory, str, dict[str, int], int, Any]:
        return [], uuid.uuid4().hex, {}, 0, gr.update(visible=False)

    with gr.Blocks(title=TITLE, fill_height=True, analytics_enabled=False) as chat:
        stored_id = gr.BrowserState(None, storage_key="servicebot-conversation", secret=state.browser_secret)
        ids = gr.State({})
        seen = gr.State(0)
        gr.Markdown(t("title"))
        gr.Markdown(t("intro"))
        chatbot = gr.Chatbot(
            show_label=False,
            scale=1,
            height=None,
            min_height=300,
            elem_id="chat",
            sanitize_html=True,
            latex_delimiters=[],  # prices like $5 and $10 are not maths
            feedback_options=("Like", "Dislike"),
            buttons=["copy"],
            placeholder=str(t("greeting")),  # an i18n marker the page translates
        )
        with gr.Row(visible=False, elem_id="feedback") as feedback_row:
            note = gr.Textbox(show_label=False, placeholder=t("comment"), scale=4, elem_id="comment", max_length=2000)
            note_send = gr.Button(t("comment_send"), scale=1, elem_id="comment-send")
        box = gr.Textbox(
            show_label=False,
            placeholder=t("placeholder"),
            submit_btn=str(t("send")),
            autofocus=True,
            elem_id="question",
        )
        with gr.Row(elem_id="actions"):
            human = gr.Button(t("human"), size="sm", elem_id="human")
            new = gr.Button(t("new"), size="sm", elem_id="new")
        timer = gr.Timer(2.0)

        chat.load(load, stored_id, [chatbot, stored_id, ids, seen], show_progress="hidden")
        box.submit(add_user, [box, chatbot], [box, chatbot], queue=False).then(
            answer, [chatbot, stored_id, ids], [chatbot, stored_id, ids], concurrency_limit=32
        )
        chatbot.like(rate, [stored_id, ids], [feedback_row, note], show_progress="hidden")
        note_send.click(comment, [note, stored_id], [feedback_row, note, chatbot])
        note.submit(comment, [note, stored_id], [feedback_row, note, chatbot])
        human.click(to_human, [chatbot, stored_id], [chatbot, stored_id])
        new.click(fresh, None, [chatbot, stored_id, ids, seen, feedback_row], queue=False)
        timer.tick(poll, [chatbot, stored_id, seen], [chatbot, seen], show_progress="hidden")
    return chat
