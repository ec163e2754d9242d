"""Chat markup: customer and document text escaped for Markdown, answers rendered with their cited sources."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from bot.contracts import Reply
from bot.service import sources

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


_ANSWER_ACTIVE = re.compile(r"([<>&\[\]])")


def escape_answer(text: str) -> str:
    """An answer's Markdown with raw HTML, links and images neutralised (emphasis and lists still render).

    Answers quote knowledge-base text and model output, neither of which may put markup or remote images in the page.
    """
    return _ANSWER_ACTIVE.sub(r"\\\1", text)


def unescape_answer(text: str) -> str:
    """Undo `escape_answer`."""
    return re.sub(r"\\([<>&\[\]])", r"\1", text)


def render_reply(reply: Reply) -> str:
    """The final answer as shown in the chat: the policy's answer, then each source document once.

    Args:
        reply: the turn's final Reply.

    Returns:
        Markdown: the answer, and a "Sources" list of titles and article ids when there are sources.
    """
    listed = sources(reply)
    if not listed:
        return escape_answer(reply.answer)
    return escape_answer(reply.answer) + SOURCES_MARK + "\n".join(_source_line(s) for s in listed)


def _source_line(source: dict[str, Any]) -> str:
    """One citation: a link when the document has a web address, else title, section and article id."""
    title = escape_markdown(source["title"] or source["id"])
    section = f" — {escape_markdown(source['section'])}" if source.get("section") else ""
    url = str(source.get("url") or "")
    if re.match(r"https?://[^\s()<>]+$", url):
        return f"- [{title}]({url}){section} ({escape_markdown(source['id'])})"
    if url and not url.startswith("/") and ".." not in url.split("/"):  # a path in the knowledge source: served at /kb/
        return f"- [{title}](/kb/{urllib.parse.quote(url)}){section} ({escape_markdown(source['id'])})"
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
            raw.append({"role": "assistant", "content": unescape_answer(text.split(SOURCES_MARK, 1)[0])})
    return raw


def render_stored(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message (see `Records.messages`) as the chat shows it, in Gradio's messages format."""
    content = str(message["content"])
    if message["role"] == "user":
        return {"role": "user", "content": escape_markdown(content)}
    if message["role"] == "human":
        who = escape_markdown(str(message.get("author") or "Support"))
        return {"role": "assistant", "content": f"**{who}** (Kestrel Home team): {escape_markdown(content)}"}
    listed = message.get("sources") or []
    if not listed:
        return {"role": "assistant", "content": escape_answer(content)}
    cited = SOURCES_MARK + "\n".join(_source_line(s) for s in listed)
    return {"role": "assistant", "content": escape_answer(content) + cited}
