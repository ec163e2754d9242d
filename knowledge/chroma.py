"""Chroma access: an embedded or HTTP client, our embedder handed to Chroma, and immutable segment collections."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from bot.contracts import Embedder
from bot.errors import ServicebotError

TOKEN_ENV = "SERVICEBOT_CHROMA_TOKEN"
BATCH = 256


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


def connect(
    path: Path, store: str = "embedded", host: str = "127.0.0.1", port: int = 8000, ssl: bool = False
) -> ClientAPI:
    """A Chroma client: embedded (files under `path`) or a Chroma server over HTTP.

    The HTTP token, when needed, comes only from the environment variable SERVICEBOT_CHROMA_TOKEN.

    Raises:
        ServicebotError: the Chroma server cannot be reached.
    """
    settings = chromadb.Settings(anonymized_telemetry=False)
    if store == "embedded":
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    token = os.environ.get(TOKEN_ENV, "")
    headers = {"Authorization": f"Bearer {token}", "X-Chroma-Token": token} if token else None
    try:
        return chromadb.HttpClient(host=host, port=port, ssl=ssl, headers=headers, settings=settings)
    except Exception as exc:  # connection refused, DNS, TLS: one sentence for the operator
        raise ServicebotError(f"Cannot reach the Chroma server at {host}:{port} ({type(exc).__name__}).") from None


class Segments:
    """Immutable vector segments (one Chroma collection each), written once by a build and then only read."""

    def __init__(self, client: ClientAPI, embedder: Embedder) -> None:
        self.client, self.embedder = client, embedder
        self._ef = ChromaEmbedding(embedder)

    def create(self, name: str, metadata: dict[str, Any]) -> Collection:
        """Create an empty segment recording the embedder that fills it."""
        meta = {**metadata, "embedder": self.embedder.id, "dimension": self.embedder.dimension}
        return self.client.create_collection(
            name,
            metadata=meta,
            embedding_function=self._ef,  # type: ignore[arg-type]
            configuration={"hnsw": {"space": "cosine"}},
        )

    def open(self, name: str) -> Collection:
        """Open a segment, refusing one built with another embedder.

        Raises:
            ServicebotError: the segment was built with a different embedder or dimension.
        """
        col = self.client.get_collection(name, embedding_function=self._ef)  # type: ignore[arg-type]
        meta = col.metadata or {}
        built_with, dim = meta.get("embedder"), meta.get("dimension")
        if built_with != self.embedder.id or (dim and int(dim) != self.embedder.dimension):
            raise ServicebotError(
                f"The index was built with embedder '{built_with}' ({dim} dimensions) but '{self.embedder.id}' "
                f"({self.embedder.dimension} dimensions) is configured: rebuild it with `bot index rebuild`."
            )
        return col

    def names(self, prefix: str) -> list[str]:
        """Every segment whose name starts with `prefix`."""
        return sorted(c.name for c in self.client.list_collections() if c.name.startswith(prefix))

    def drop(self, name: str) -> None:
        """Delete a segment (missing ones are fine: pruning must be repeatable after a crash)."""
        try:
            self.client.delete_collection(name)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors for `ids` in a segment (those it has), so unchanged text is never embedded twice."""
        found: dict[str, np.ndarray] = {}
        try:
            col = self.open(name)
        except Exception:  # noqa: BLE001 - a damaged or foreign leftover is simply not reused
            return found
        for i in range(0, len(ids), 2000):
            got = col.get(ids=list(ids[i : i + 2000]), include=["embeddings"])  # type: ignore[list-item]
            embs = got.get("embeddings")
            if embs is None:
                continue
            found.update({cid: np.asarray(v, dtype=np.float32) for cid, v in zip(got["ids"], embs, strict=True)})
        return found
