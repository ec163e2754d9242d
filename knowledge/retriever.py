"""The `chroma` retriever plugin: vector search over the serving collection version."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.contracts import BuildReport, Passage, ProgressFn
from bot.errors import PluginError
from knowledge.store import KnowledgeStore


class ChromaRetriever:
    """Searches the collection the alias points at, following the alias when a rebuild switches it."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    name = "chroma"

    def __init__(self, config: Config, ctx: Any) -> None:
        if ctx.embedder is None:
            raise PluginError("The chroma retriever needs an embedder.")
        self._settings = ctx.settings
        kn = ctx.settings.knowledge
        self.store = KnowledgeStore(ctx.settings.index_dir, kn.collection, ctx.embedder)
        self._embedder = ctx.embedder
        self._lock = threading.Lock()
        self._collection: Any = None
        self._stamp = -1.0

    def _current(self) -> Any:
        stamp = self.store.alias_stamp()
        with self._lock:
            if self._collection is None or stamp != self._stamp:
                self._collection, self._stamp = self.store.open(), stamp
            return self._collection

    def _search(self, query: str, k: int) -> list[Passage]:
        vector = self._embedder.embed_query(query)
        res = self._current().query(
            query_embeddings=[vector], n_results=k, include=["documents", "metadatas", "distances"]
        )
        passages = []
        for cid, text, meta, dist in zip(
            res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True
        ):
            meta = dict(meta or {})
            passages.append(
                Passage(
                    id=cid,
                    text=text,
                    score=round(1.0 - float(dist), 4),
                    doc_id=str(meta.get("doc_id", "")),
                    title=str(meta.get("title", "")),
                    section=str(meta.get("section", "")),
                    source=str(meta.get("source", "")),
                    metadata=meta,
                )
            )
        return passages

    async def search(self, query: str, k: int) -> list[Passage]:
        """Top-k passages by cosine similarity (score in [-1, 1], higher is closer)."""
        return await asyncio.to_thread(self._search, query, k)

    def warm(self) -> None:
        """Open the collection ahead of the first turn."""
        self._current()

    def rebuild(self, source: Path, progress: ProgressFn | None = None) -> BuildReport:
        """Build a new index version from `source` and switch to it."""
        kn = self._settings.knowledge
        return self.store.rebuild(source, kn.chunk_size, kn.chunk_overlap, progress)

    def status(self) -> dict[str, Any]:
        """Describe the serving index."""
        return self.store.status()
