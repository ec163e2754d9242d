"""Format readers: Markdown/text, HTML (main text via trafilatura), PDF (pypdf) and FAQ files (CSV/JSONL)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

MARKDOWN = {".md", ".markdown"}
TEXT = {".txt"}
HTML = {".html", ".htm"}
PDF = {".pdf"}
FAQ = {".csv", ".jsonl"}
SUPPORTED = MARKDOWN | TEXT | HTML | PDF | FAQ


@dataclass(frozen=True)
class Document:
    """One source document; `kind` 'faq' means one question-answer pair, kept as one chunk."""

    id: str
    title: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "markdown"


@dataclass(frozen=True)
class FileInfo:
    """What a reader knows about the file besides its bytes."""

    rel: str  # path relative to the source folder, posix style
    stem: str
    updated: str  # ISO date from the file's modification time
    language: str  # the default language


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise ValueError("binary file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None


def scalar(value: Any) -> str | int | float | bool:
    """A metadata value Chroma can store (lists become comma-separated strings)."""
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        raise ValueError("front matter is not closed by '---'")
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        raise ValueError("malformed YAML front matter") from None
    if not isinstance(meta, dict):
        raise ValueError("front matter is not a mapping")
    return meta, text[end + 4 :].lstrip("\n")


def _title(meta: dict[str, Any], body: str, info: FileInfo) -> str:
    if meta.get("title"):
        return str(meta["title"])
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return info.stem.replace("-", " ").replace("_", " ").capitalize()


def _document(meta: dict[str, Any], body: str, info: FileInfo, kind: str) -> Document:
    if not body.strip():
        raise ValueError("empty document")
    metadata = {k: scalar(v) for k, v in meta.items() if k not in {"id", "title", "lang"} and v is not None}
    metadata.setdefault("updated", info.updated)
    metadata["language"] = str(meta.get("language") or meta.get("lang") or info.language)
    metadata.setdefault("url", info.rel)
    doc_id = str(meta.get("id") or info.rel.rsplit(".", 1)[0])
    return Document(doc_id, _title(meta, body, info), body, info.rel, metadata, kind)


def read_markdown(data: bytes, info: FileInfo) -> list[Document]:
    """Markdown or plain text with optional YAML front matter (`id`, `title`, `category`, `tags`, ...)."""
    meta, body = _front_matter(_decode(data))
    return [_document(meta, body, info, "markdown")]


def read_html(data: bytes, info: FileInfo) -> list[Document]:
    """The page's main text (navigation, headers and footers dropped), headings kept as Markdown."""
    import lxml.html
    import trafilatura

    text = _decode(data)
    try:
        root = lxml.html.fromstring(text)
    except (ValueError, lxml.etree.ParserError):
        raise ValueError("malformed HTML") from None
    body = trafilatura.extract(text, output_format="markdown", include_tables=True, favor_recall=True) or ""
    meta: dict[str, Any] = {}
    found = trafilatura.extract_metadata(text)
    if found is not None and found.title:
        meta["title"] = found.title
    if found is not None and found.url:
        meta["url"] = found.url
    if root.get("lang"):
        meta["language"] = root.get("lang", "").split("-")[0]
    return [_document(meta, body, info, "html")]


def read_pdf(data: bytes, info: FileInfo) -> list[Document]:
    """A PDF's text, one `## Page N` section per page.

    Raises:
        ValueError: the PDF is corrupt, encrypted, or has no extractable text (scanned images only).
    """
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValueError("encrypted PDF (needs a password)")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        info_meta = reader.metadata
    except ValueError:
        raise
    except (PdfReadError, OSError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"corrupt PDF ({type(exc).__name__})") from None
    except Exception as exc:  # pypdf raises assorted errors on damaged files; any of them means unreadable
        raise ValueError(f"unreadable PDF ({type(exc).__name__})") from None
    if not any(pages):
        raise ValueError("PDF has no extractable text (image-only or scanned?)")
    meta: dict[str, Any] = {}
    if info_meta is not None and info_meta.title:
        meta["title"] = str(info_meta.title)
    body = "\n\n".join(f"## Page {i}\n\n{text}" for i, text in enumerate(pages, 1) if text)
    return [_document(meta, body, info, "pdf")]


def _faq_rows(data: bytes, info: FileInfo) -> list[dict[str, Any]]:
    text = _decode(data)
    if info.rel.lower().endswith(".csv"):
        return [dict(row) for row in csv.DictReader(io.StringIO(text))]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                raise ValueError(f"line {n} is not JSON") from None
            if not isinstance(row, dict):
                raise ValueError(f"line {n} is not a JSON object")
            rows.append(row)
    return rows


def read_faq(data: bytes, info: FileInfo) -> list[Document]:
    """Question-answer pairs (CSV columns or JSONL keys `question`, `answer`, optional `id`, `category`, ...)."""
    docs = []
    for n, row in enumerate(_faq_rows(data, info), 1):
        question, answer = str(row.get("question") or "").strip(), str(row.get("answer") or "").strip()
        if not question or not answer:
            raise ValueError(f"entry {n} needs both a question and an answer")
        key = str(row.get("id") or hashlib.sha256(question.encode()).hexdigest()[:10])
        extra = {k: v for k, v in row.items() if k not in {"question", "answer"} and v not in (None, "")}
        meta = {**extra, "id": f"{info.stem}/{key}", "title": question}
        docs.append(_document(meta, f"Q: {question}\nA: {answer}", info, "faq"))
    if not docs:
        raise ValueError("no question-answer pairs")
    return docs


def reader_for(suffix: str) -> Callable[[bytes, FileInfo], list[Document]] | None:
    """The reader for a file suffix, or None when the type is not supported."""
    suffix = suffix.lower()
    if suffix in MARKDOWN or suffix in TEXT:
        return read_markdown
    if suffix in HTML:
        return read_html
    if suffix in PDF:
        return read_pdf
    if suffix in FAQ:
        return read_faq
    return None
