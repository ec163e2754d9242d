"""Loads a folder of help-centre documents (Markdown or text, optional YAML front matter)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {".md", ".markdown", ".txt"}


@dataclass(frozen=True)
class Document:
    """One source document."""

    id: str
    title: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A file that was not indexed, and why."""

    source: str
    reason: str


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        raise ValueError("front matter is not closed by '---'")
    meta = yaml.safe_load(text[3:end]) or {}
    if not isinstance(meta, dict):
        raise ValueError("front matter is not a mapping")
    return meta, text[end + 4 :].lstrip("\n")


def _title(meta: dict[str, Any], body: str, path: Path) -> str:
    if meta.get("title"):
        return str(meta["title"])
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("-", " ").replace("_", " ").capitalize()


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def read_document(path: Path, root: Path) -> Document:
    """Read one file into a Document.

    Raises:
        ValueError: the file is binary, not UTF-8, empty, or has malformed front matter.
    """
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ValueError("binary file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        meta, body = _front_matter(text)
    except yaml.YAMLError:
        raise ValueError("malformed YAML front matter") from None
    if not body.strip():
        raise ValueError("empty document")
    rel = path.relative_to(root).as_posix()
    doc_id = str(meta.get("id") or rel.rsplit(".", 1)[0])
    metadata = {k: _scalar(v) for k, v in meta.items() if k not in {"id", "title"} and v is not None}
    metadata.setdefault("updated", dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date().isoformat())
    return Document(id=doc_id, title=_title(meta, body, path), text=body, source=rel, metadata=metadata)


def load_folder(root: Path) -> tuple[list[Document], list[Skipped]]:
    """Load every supported document under `root`; unreadable files are reported, not fatal."""
    docs: list[Document] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in SUPPORTED:
            skipped.append(Skipped(rel, f"unsupported file type '{path.suffix or '(none)'}'"))
            continue
        try:
            doc = read_document(path, root)
        except (OSError, ValueError) as exc:
            skipped.append(Skipped(rel, str(exc)))
            continue
        if doc.id in seen:
            skipped.append(Skipped(rel, f"duplicate document id '{doc.id}' (already in {seen[doc.id]})"))
            continue
        seen[doc.id] = rel
        docs.append(doc)
    return docs, skipped
