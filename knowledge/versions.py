"""Index versions on disk: manifests, the alias file that names the serving version, and the build lock."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ServicebotError


@dataclass
class DocEntry:
    """One indexed document: where it came from, which segment holds its chunks, and their ids."""

    title: str
    source: str
    segment: str
    chunks: list[str]
    meta: dict[str, Any] = field(default_factory=dict)  # filterable: language, category, tags, updated, url


@dataclass
class Manifest:
    """Everything a version is: embedder, chunking, segments, files and documents (with content hashes)."""

    version: str
    embedder: str
    dimension: int
    chunking: dict[str, int]
    segments: dict[str, int]  # segment name -> records it holds (live or superseded)
    files: dict[str, dict[str, Any]]  # relative path -> {"hash": sha256, "docs": [doc ids]}
    docs: dict[str, DocEntry]
    built_at: str = ""
    sources: list[str] = field(default_factory=list)
    skipped: list[list[str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def chunk_count(self) -> int:
        """Live chunks in this version."""
        return sum(len(d.chunks) for d in self.docs.values())

    def fits(self, embedder: Any) -> bool:
        """Whether `embedder` made this version's vectors (same id and dimension), so it can query them."""
        return bool(self.embedder == embedder.id and self.dimension == embedder.dimension)

    def live(self) -> dict[str, str]:
        """Live chunk id -> the segment holding its current text and vector."""
        return {cid: d.segment for d in self.docs.values() for cid in d.chunks}

    def to_json(self) -> str:
        """Serialise (documents as plain dicts)."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by `to_json`."""
        raw = json.loads(text)
        raw["docs"] = {k: DocEntry(**v) for k, v in raw["docs"].items()}
        return cls(**raw)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: readers see the old file or the new one, never a torn one


class Versions:
    """The versions of one index under `root`: `<name>.alias.json` plus `<name>.versions/<version>/`."""

    def __init__(self, root: Path, name: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.name = root, name
        self.alias = root / f"{name}.alias.json"
        self.dir = root / f"{name}.versions"

    def _alias(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.alias.read_text())
            return raw if isinstance(raw, dict) and "version" in raw else {}
        except (OSError, ValueError):
            return {}

    def current(self) -> str | None:
        """The serving version, or None before the first build."""
        version = self._alias().get("version")
        return str(version) if version else None

    def history(self) -> list[str]:
        """Earlier versions, newest first (what rollback goes back to)."""
        return [str(v) for v in self._alias().get("history", [])]

    def stamp(self) -> int:
        """Changes whenever the alias switches (servers compare it on each query)."""
        try:
            st = self.alias.stat()
            return st.st_mtime_ns ^ st.st_ino
        except OSError:
            return 0

    def path(self, version: str) -> Path:
        """The folder holding a version's manifest and BM25 index."""
        return self.dir / version

    def load(self, version: str) -> Manifest:
        """Read a version's manifest.

        Raises:
            ServicebotError: the manifest is missing or unreadable.
        """
        try:
            return Manifest.from_json((self.path(version) / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ServicebotError(f"Index version {version} is incomplete or damaged ({type(exc).__name__}).") from None

    def save(self, manifest: Manifest) -> None:
        """Write a version's manifest (last step of a build, before the switch)."""
        folder = self.path(manifest.version)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / "manifest.json", manifest.to_json())

    def switch(self, version: str, keep: int) -> None:
        """Point the alias at `version`, remembering up to `keep - 1` earlier versions for rollback."""
        current = self.current()
        history = ([current] if current and current != version else []) + self.history()
        history = [v for v in history if v != version][: max(keep - 1, 0)]
        _write_atomic(self.alias, json.dumps({"version": version, "history": history}))

    def rollback(self) -> str:
        """Switch back to the previous version.

        Raises:
            ServicebotError: there is no earlier version to go back to.
        """
        history = self.history()
        if not history:
            raise ServicebotError("There is no earlier index version to roll back to.")
        _write_atomic(self.alias, json.dumps({"version": history[0], "history": history[1:]}))
        return history[0]

    def retained(self) -> list[str]:
        """The serving version and those kept for rollback."""
        current = self.current()
        return ([current] if current else []) + self.history()

    def on_disk(self) -> list[str]:
        """Every version folder present (complete or left by a crashed build)."""
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir()) if self.dir.is_dir() else []

    def remove(self, version: str) -> None:
        """Delete a version's folder."""
        shutil.rmtree(self.path(version), ignore_errors=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the build lock: one rebuild at a time. The OS frees it if the process dies (even kill -9).

        Raises:
            ServicebotError: another rebuild holds the lock.
        """
        path = self.root / f"{self.name}.lock"
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                raise ServicebotError(f"Another rebuild of '{self.name}' is running ({fh.read().strip()}).") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
