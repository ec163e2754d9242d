"""Finds source files safely (size limit, symlinks, duplicates) and reads them into documents."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knowledge.loaders import SUPPORTED, Document, FileInfo, reader_for

__all__ = ["Document", "SourceFile", "Skipped", "load_folder", "read_file", "scan"]


@dataclass(frozen=True)
class Skipped:
    """A file that was not indexed, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class SourceFile:
    """A candidate file: where it is, its path relative to its source folder, and its content hash."""

    path: Path
    rel: str
    hash: str
    mtime: float


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / name for name in files if not name.startswith(".")]
        found += [Path(folder) / d for d in dirs if (Path(folder) / d).is_symlink()]
    return sorted(found)


def _problem(path: Path, root: Path, max_bytes: int) -> str | None:
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root.resolve()):
            return "symlink points outside the source folder"
        if target.is_dir():
            return "symlinked folder not followed (its files are indexed from their real place)"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in SUPPORTED:
        return f"unsupported file type '{path.suffix or '(none)'}'"
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    if size > max_bytes:
        return f"file is over the size limit ({size / 1e6:.1f} MB > {max_bytes / 1e6:.1f} MB)"
    return None


def scan(roots: Sequence[Path], max_bytes: int) -> tuple[list[SourceFile], list[Skipped]]:
    """List indexable files under each root with content hashes; report everything left out.

    Raises:
        ValueError: a root does not exist or is not a folder.
    """
    files: list[SourceFile] = []
    skipped: list[Skipped] = []
    by_hash: dict[str, str] = {}
    for root in roots:
        if not root.is_dir():
            raise ValueError(f"Knowledge source {root} does not exist or is not a folder.")
        for path in _walk(root):
            rel = path.relative_to(root).as_posix()
            try:
                problem = _problem(path, root, max_bytes)
                data = b"" if problem else path.read_bytes()
            except OSError as exc:
                problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
            if problem:
                skipped.append(Skipped(rel, problem))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in by_hash:
                skipped.append(Skipped(rel, f"duplicate of {by_hash[digest]} (same content)"))
                continue
            by_hash[digest] = rel
            files.append(SourceFile(path, rel, digest, path.stat().st_mtime))
    return files, skipped


def read_file(file: SourceFile, language: str = "en") -> list[Document]:
    """Read one scanned file into documents (several for a FAQ file).

    Raises:
        ValueError: the file cannot be parsed (binary, not UTF-8, corrupt or encrypted PDF, malformed FAQ...).
    """
    reader = reader_for(file.path.suffix)
    if reader is None:
        raise ValueError(f"unsupported file type '{file.path.suffix}'")
    updated = dt.datetime.fromtimestamp(file.mtime, dt.UTC).date().isoformat()
    info = FileInfo(file.rel, file.path.stem, updated, language)
    try:
        return reader(file.path.read_bytes(), info)
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None


def load_folder(
    root: Path | Sequence[Path], max_bytes: int = 20_000_000, language: str = "en"
) -> tuple[list[Document], list[Skipped]]:
    """Load every supported document under the root(s); unreadable files are reported, not fatal."""
    roots = [root] if isinstance(root, Path) else list(root)
    files, skipped = scan(roots, max_bytes)
    docs: list[Document] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            found = read_file(file, language)
        except ValueError as exc:
            skipped.append(Skipped(file.rel, str(exc)))
            continue
        for doc in found:
            if doc.id in seen:
                skipped.append(Skipped(file.rel, f"duplicate document id '{doc.id}' (already in {seen[doc.id]})"))
                continue
            seen[doc.id] = file.rel
            docs.append(doc)
    return docs, skipped
