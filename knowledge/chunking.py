"""Heading-aware chunking: each chunk keeps the heading trail it sits under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from knowledge.documents import Document

_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document ready to embed."""

    id: str
    doc_id: str
    text: str
    metadata: dict[str, Any]


def chunk_document(doc: Document, size: int, overlap: int) -> list[Chunk]:
    """Split a document by headings, then by size, prefixing each chunk with its title and section."""
    by_heading = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True).split_text(doc.text)
    splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=min(overlap, size // 2))
    chunks: list[Chunk] = []
    for part in by_heading:
        trail = [part.metadata[h] for _, h in _HEADERS if part.metadata.get(h)]
        section = " > ".join(t for t in trail if t != doc.title)
        for piece in splitter.split_text(part.page_content):
            header = f"{doc.title} — {section}" if section else doc.title
            meta = {**doc.metadata, "doc_id": doc.id, "title": doc.title, "section": section, "source": doc.source}
            chunks.append(Chunk(f"{doc.id}#{len(chunks)}", doc.id, f"{header}\n{piece}", meta))
    return chunks
