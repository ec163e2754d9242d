"""The Chroma store: versioned collections behind an alias that switches only after a complete build."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from bot.contracts import BuildReport, Embedder, ProgressFn
from bot.errors import ServicebotError
from knowledge.chunking import chunk_document
from knowledge.documents import load_folder

log = logging.getLogger(__name__)
BATCH = 128


class _Unbound:
    """Stands in when Chroma reopens a collection on its own: embedding through it is an error."""

    def __init__(self, embedder_id: str) -> None:
        self.id, self.dimension = embedder_id, 0

    def embed_documents(self, texts: Any) -> list[list[float]]:
        raise ServicebotError(f"Open this collection through servicebot with the embedder '{self.id}'.")

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class ChromaEmbedding(EmbeddingFunction[Documents]):
    """Hands our embedder to Chroma so it never falls back to its own downloading default."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's parameter name
        import numpy as np

        return [np.asarray(v, dtype=np.float32) for v in self._embedder.embed_documents(list(input))]

    @staticmethod
    def name() -> str:
        return "servicebot"

    def get_config(self) -> dict[str, Any]:
        return {"embedder": self._embedder.id}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EmbeddingFunction[Documents]:
        return ChromaEmbedding(_Unbound(str(config.get("embedder", "unknown"))))

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"


class KnowledgeStore:
    """A persistent Chroma client plus the alias file that says which collection version serves."""

    def __init__(self, path: Path, name: str, embedder: Embedder) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.name, self.embedder = path, name, embedder
        self.client: ClientAPI = chromadb.PersistentClient(
            path=str(path), settings=chromadb.Settings(anonymized_telemetry=False)
        )
        self._ef = ChromaEmbedding(embedder)
        self._alias = path / f"{name}.alias.json"

    def current_version(self) -> str | None:
        """The collection the alias points at, or None before the first build."""
        try:
            return str(json.loads(self._alias.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None

    def alias_stamp(self) -> float:
        """Changes whenever the alias switches (used by servers to pick up a new version)."""
        try:
            return self._alias.stat().st_mtime_ns
        except OSError:
            return 0

    def open(self) -> Collection:
        """Open the serving collection, refusing one built with another embedder."""
        version = self.current_version()
        if version is None:
            raise ServicebotError(f"The knowledge index '{self.name}' has not been built yet: run `bot index rebuild`.")
        col = self.client.get_collection(version, embedding_function=self._ef)  # type: ignore[arg-type]
        built_with = (col.metadata or {}).get("embedder")
        if built_with != self.embedder.id:
            raise ServicebotError(
                f"The index was built with embedder '{built_with}' but '{self.embedder.id}' is configured: "
                "rebuild it with `bot index rebuild`."
            )
        return col

    def rebuild(self, source: Path, chunk_size: int, overlap: int, progress: ProgressFn | None = None) -> BuildReport:
        """Build a new collection version from `source`; the alias switches only once it is complete."""
        start = time.perf_counter()
        if not source.is_dir():
            raise ServicebotError(f"Knowledge source {source} is not a folder.")
        docs, skipped = load_folder(source)
        chunks = [c for d in docs for c in chunk_document(d, chunk_size, overlap)]
        if not chunks:
            raise ServicebotError(f"No indexable documents in {source}; the current index is unchanged.")
        version = f"{self.name}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}"
        meta = {
            "embedder": self.embedder.id,
            "dimension": self.embedder.dimension,
            "source": str(source),
            "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "documents": len(docs),
        }
        col = self.client.create_collection(
            version,
            metadata=meta,
            embedding_function=self._ef,  # type: ignore[arg-type]
            configuration={"hnsw": {"space": "cosine"}},
        )
        try:
            for i in range(0, len(chunks), BATCH):
                batch = chunks[i : i + BATCH]
                col.add(
                    ids=[c.id for c in batch],
                    documents=[c.text for c in batch],
                    metadatas=[c.metadata for c in batch],
                    embeddings=self.embedder.embed_documents([c.text for c in batch]),  # type: ignore[arg-type]
                )
                if progress:
                    progress(min(i + BATCH, len(chunks)), len(chunks))
        except BaseException:
            self.client.delete_collection(version)  # a failed build never becomes the serving one
            raise
        self._switch(version)
        return BuildReport(
            version,
            len(docs),
            len(chunks),
            tuple((s.source, s.reason) for s in skipped),
            round(time.perf_counter() - start, 2),
        )

    def _switch(self, version: str) -> None:
        previous = self.current_version()
        tmp = self._alias.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": version}))
        os.replace(tmp, self._alias)  # atomic: readers see the old or the new version, never neither
        keep = {version, previous}
        for col in self.client.list_collections():
            if col.name.startswith(f"{self.name}-") and col.name not in keep:
                self.client.delete_collection(col.name)

    def status(self) -> dict[str, Any]:
        """What is indexed: version, counts, embedder, build time."""
        version = self.current_version()
        if version is None:
            return {"collection": self.name, "built": False, "path": str(self.path)}
        col = self.client.get_collection(version, embedding_function=self._ef)  # type: ignore[arg-type]
        meta = dict(col.metadata or {})
        return {
            "collection": self.name,
            "built": True,
            "version": version,
            "chunks": col.count(),
            "path": str(self.path),
            **meta,
        }
