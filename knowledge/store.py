"""The knowledge store: versioned, segmented Chroma collections behind an alias that switches only after checks."""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.contracts import BuildReport, Embedder, ProgressFn
from bot.errors import ServicebotError
from knowledge.build import Builder, Checks, RecallFn
from knowledge.chroma import Segments, connect
from knowledge.plan import Limits
from knowledge.search import IndexView
from knowledge.versions import Versions

log = logging.getLogger(__name__)


class KnowledgeStore:
    """One named index: build new versions, serve the current one, roll back, describe."""

    def __init__(
        self,
        path: Path,
        name: str,
        embedder: Embedder,
        limits: Limits | None = None,
        checks: Checks | None = None,
        store: str = "embedded",
        host: str = "127.0.0.1",
        port: int = 8000,
        ssl: bool = False,
    ) -> None:
        self.path, self.name, self.embedder, self.mode = path, name, embedder, store
        self.client = connect(path, store, host, port, ssl)
        self.versions = Versions(path, name)
        self.segments = Segments(self.client, embedder)
        self.builder = Builder(self.versions, self.segments, embedder, limits or Limits(), checks or Checks())
        self._lock = threading.Lock()
        self._view: IndexView | None = None
        self._stamp = -1

    def set_recall(self, recall: RecallFn | None, margin: float, retain: int) -> None:
        """Install the QA recall check (the retriever provides it: it knows how searches are fused)."""
        self.builder.checks = Checks(recall, margin, retain)

    def current_version(self) -> str | None:
        """The serving version, or None before the first build."""
        return self.versions.current()

    def alias_stamp(self) -> int:
        """Changes whenever the alias switches."""
        return self.versions.stamp()

    def view(self, refresh: bool = False) -> IndexView:
        """The serving version, reloaded when the alias has switched since the last call.

        Raises:
            ServicebotError: nothing is built yet, or the index was built with another embedder.
        """
        stamp = self.versions.stamp()
        with self._lock:
            if refresh or self._view is None or stamp != self._stamp:
                version = self.versions.current()
                if version is None:
                    raise ServicebotError(
                        f"The knowledge index '{self.name}' has not been built yet: run `bot index rebuild`."
                    )
                self._view, self._stamp = IndexView(self.versions, self.segments, version), stamp
            return self._view

    def open_version(self, version: str) -> IndexView:
        """A view of any retained version (for evaluation and checks)."""
        return IndexView(self.versions, self.segments, version)

    def rebuild(self, roots: Sequence[Path], full: bool = False, progress: ProgressFn | None = None) -> BuildReport:
        """Build a new version and switch to it when it passes the checks."""
        return self.builder.rebuild(roots, full, progress)

    def diff(self, roots: Sequence[Path], full: bool = False) -> BuildReport:
        """What a rebuild would change."""
        return self.builder.diff(roots, full)

    def rollback(self) -> str:
        """Switch the alias back to the previous version; returns the version now serving."""
        with self.versions.lock():
            version = self.versions.rollback()
            self.builder.prune()
            return version

    def building(self) -> str | None:
        """Who holds the build lock right now ('pid N'), or None."""
        path = self.path / f"{self.name}.lock"
        if not path.exists():
            return None
        with open(path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return fh.read().strip() or "another process"
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None

    def status(self) -> dict[str, Any]:
        """What is serving: version, counts, embedder, build time, rollback history, a running rebuild."""
        base: dict[str, Any] = {"collection": self.name, "store": self.mode, "path": str(self.path)}
        base["rebuilding"] = self.building()
        version = self.versions.current()
        if version is None:
            return {**base, "built": False}
        m = self.versions.load(version)
        return {
            **base,
            "built": True,
            "version": version,
            "documents": len(m.docs),
            "chunks": m.chunk_count,
            "segments": len(m.segments),
            "embedder": m.embedder,
            "dimension": m.dimension,
            "embedder_fits": m.fits(self.embedder),  # false: the configured embedder cannot query it until a rebuild
            "built_at": m.built_at,
            "sources": m.sources,
            "skipped": len(m.skipped),
            "history": self.versions.history(),
            **{k: v for k, v in m.metrics.items() if k != "qa_hash"},
        }
