"""What a rebuild has to do: compare the source folders with the serving version by content hash."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.contracts import Embedder
from bot.errors import ServicebotError
from knowledge.chunking import Chunk, chunk_document
from knowledge.documents import Skipped, read_file, scan
from knowledge.loaders import Document
from knowledge.versions import DocEntry, Manifest

COMPACT_DEAD_RATIO = 0.3


@dataclass(frozen=True)
class Limits:
    """The knobs a build runs under."""

    chunk_size: int = 900
    chunk_overlap: int = 120
    max_bytes: int = 20_000_000
    language: str = "en"
    max_segments: int = 8


@dataclass
class Plan:
    """Documents to carry over untouched, documents to (re)write, and everything to report."""

    full: bool
    reason: str
    reuse_previous: bool  # stored vectors of the serving version may be reused (same embedder)
    carry: dict[str, DocEntry] = field(default_factory=dict)
    write: list[tuple[Document, list[Chunk]]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def chunk_count(self) -> int:
        """Live chunks the new version would hold."""
        return sum(len(e.chunks) for e in self.carry.values()) + sum(len(c) for _, c in self.write)

    @property
    def document_count(self) -> int:
        """Documents the new version would hold."""
        return len(self.carry) + len(self.write)

    @property
    def is_noop(self) -> bool:
        """Nothing to add, change or delete."""
        return not self.full and not self.write and not self.deleted


def _why_full(prev: Manifest | None, embedder: Embedder, limits: Limits, requested: bool) -> str:
    if requested:
        return "full rebuild requested"
    if prev is None:
        return "no usable serving version"
    if prev.embedder != embedder.id or prev.dimension != embedder.dimension:
        return f"embedder changed from '{prev.embedder}' to '{embedder.id}'"
    if prev.chunking != {"size": limits.chunk_size, "overlap": limits.chunk_overlap}:
        return "chunking settings changed"
    if len(prev.segments) >= limits.max_segments:
        return f"compacting {len(prev.segments)} segments into one"
    stored = sum(prev.segments.values())
    if stored and (stored - prev.chunk_count) / stored > COMPACT_DEAD_RATIO:
        return f"compacting: {100 * (stored - prev.chunk_count) // stored}% of stored chunks are superseded"
    return ""


def doc_entry(doc: Document, chunks: Sequence[Chunk], segment: str) -> DocEntry:
    """The manifest entry for a document written to `segment`."""
    return DocEntry(doc.title, doc.source, segment, [c.id for c in chunks], dict(doc.metadata))


def make_plan(
    roots: Sequence[Path], prev: Manifest | None, embedder: Embedder, limits: Limits, full: bool = False
) -> Plan:
    """Compare the source folders with the serving version.

    Raises:
        ServicebotError: a source folder does not exist.
    """
    try:
        files, skipped = scan(roots, limits.max_bytes)
    except ValueError as exc:
        raise ServicebotError(f"{exc} The serving index is unchanged.") from None
    reason = _why_full(prev, embedder, limits, full)
    plan = Plan(bool(reason), reason, reuse_previous=prev is not None and not full and "embedder" not in reason)
    plan.skipped = skipped
    old_files = prev.files if prev is not None and not plan.full else {}
    old_docs = prev.docs if prev is not None else {}
    seen: dict[str, str] = {}
    for file in files:
        old = old_files.get(file.rel)
        if old and old["hash"] == file.hash and all(d in old_docs and d not in seen for d in old["docs"]):
            for d in old["docs"]:
                plan.carry[d], seen[d] = old_docs[d], file.rel
            plan.files[file.rel], plan.unchanged = old, plan.unchanged + len(old["docs"])
            continue
        try:
            docs = read_file(file, limits.language)
        except ValueError as exc:
            plan.skipped.append(Skipped(file.rel, str(exc)))
            continue
        kept = []
        for doc in docs:
            if doc.id in seen:
                plan.skipped.append(Skipped(file.rel, f"duplicate document id '{doc.id}' (already in {seen[doc.id]})"))
                continue
            chunks = chunk_document(doc, limits.chunk_size, limits.chunk_overlap)
            if not chunks:
                plan.skipped.append(Skipped(file.rel, "no text left after extraction"))
                continue
            seen[doc.id] = file.rel
            kept.append(doc.id)
            before = old_docs.get(doc.id)
            same = before is not None and before.chunks == [c.id for c in chunks] and before.meta == doc.metadata
            if same and before is not None and not plan.full and before.title == doc.title:
                plan.carry[doc.id] = before
                plan.unchanged += 1
                continue
            plan.write.append((doc, chunks))
            (plan.changed if before is not None and not same else plan.added if before is None else []).append(doc.id)
            plan.unchanged += int(same)
        plan.files[file.rel] = {"hash": file.hash, "docs": kept}
    plan.deleted = sorted(d for d in old_docs if d not in seen)
    return plan
