"""Heading-aware chunking: each chunk keeps its heading trail and gets an id from its content."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from knowledge.loaders import Document

_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document ready to embed; `id` is `<doc id>#<hash of its text>`, stable across rebuilds."""

    id: str
    doc_id: str
    text: str
    metadata: dict[str, Any]


def _pieces(doc: Document, size: int, overlap: int) -> list[tuple[str, str]]:
    """(section, text) pairs: split by headings, then by size."""
    if doc.kind == "faq":
        return [("", doc.text)]
    by_heading = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True).split_text(doc.text)
    splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=min(overlap, size // 2))
    out = []
    for part in by_heading:
        trail = [part.metadata[h] for _, h in _HEADERS if part.metadata.get(h)]
        section = " > ".join(t for t in trail if t != doc.title)
        out += [(section, piece) for piece in splitter.split_text(part.page_content)]
    return out


def chunk_document(doc: Document, size: int, overlap: int) -> list[Chunk]:
    """Split a document by headings, then by size, prefixing each chunk with its title and section.

    Args:
        doc: the document.
        size: the largest chunk, in characters (before the title line).
        overlap: characters shared by neighbouring chunks of one section.

    Returns:
        The chunks in document order; a FAQ entry is always exactly one chunk.
    """
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for section, piece in _pieces(doc, size, overlap):
        header = f"{doc.title} — {section}" if section else doc.title
        text = piece if doc.kind == "faq" else f"{header}\n{piece}"
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        cid = f"{doc.id}#{digest}"
        while cid in seen:  # the same text twice in one document
            cid += "+"
        seen.add(cid)
        meta = {
            **doc.metadata,
            "doc_id": doc.id,
            "title": doc.title,
            "section": section,
            "source": doc.source,
            "position": len(chunks),
        }
        chunks.append(Chunk(cid, doc.id, text, meta))
    return chunks
